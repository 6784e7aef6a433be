from django.urls import path

from console.instances import views

app_name = "instances"
urlpatterns = [
    path("", views.instance_list, name="list"),
    path("instances/<slug:name>/", views.instance_detail, name="detail"),
    path("instances/<slug:name>/operations/", views.operate, name="operate"),
]
