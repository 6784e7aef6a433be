from django.urls import path

from console.api import views

app_name = "api"
urlpatterns = [
    path("hosts/", views.hosts, name="hosts"),
    path("hosts/<slug:name>/", views.host, name="host"),
    path("hosts/<slug:name>/hold/", views.host_hold, name="host_hold"),
    path("instances/", views.instances, name="instances"),
    path("instances/<slug:name>/", views.instance, name="instance"),
    path("instances/<slug:name>/operations/", views.operate, name="operate"),
    path("instances/<slug:name>/hold/", views.hold, name="hold"),
    path("instances/<slug:name>/diagnosis/", views.diagnosis, name="diagnosis"),
    path("operations/<int:pk>/", views.operation, name="operation"),
    path("rollouts/", views.rollouts, name="rollouts"),
    path("rollouts/<int:pk>/", views.rollout, name="rollout"),
]
