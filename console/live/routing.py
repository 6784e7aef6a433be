from django.urls import path

from console.live import consumers

websocket_urlpatterns = [
    path("ws/dashboard/", consumers.DashboardConsumer.as_asgi()),
    path("ws/instances/<slug:name>/", consumers.InstanceConsumer.as_asgi()),
]
