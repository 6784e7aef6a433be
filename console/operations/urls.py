from django.urls import path

from console.operations import views

app_name = "operations"
urlpatterns = [
    path("operations/<int:pk>/", views.operation_detail, name="detail"),
    path("rollouts/", views.rollout_create, name="rollout-create"),
    path("rollouts/<int:pk>/", views.rollout_detail, name="rollout"),
]
