from django.urls import path

from console.telemetry import views

app_name = "telemetry"
urlpatterns = [
    path("instances/<slug:name>/series/", views.instance_series, name="series"),
    path("instances/<slug:name>/diagnose/", views.instance_diagnose, name="diagnose"),
    path("instances/<slug:name>/logs/download/", views.log_download, name="log-download"),
]
