from django.urls import path

from console.audit import views

app_name = "audit"
urlpatterns = [
    path("audit/", views.audit_list, name="list"),
    path("audit.csv", views.audit_csv, name="csv"),
]
