from django.urls import path

from console.schedules import views

app_name = "schedules"
urlpatterns = [
    path("schedules/", views.schedule_list, name="list"),
    path("schedules/new/", views.schedule_create, name="create"),
    path("schedules/preview/", views.schedule_preview, name="preview"),
    path("schedules/<int:pk>/", views.schedule_edit, name="edit"),
    path("schedules/<int:pk>/toggle/", views.schedule_toggle, name="toggle"),
    path("schedules/<int:pk>/delete/", views.schedule_delete, name="delete"),
    path("instances/<slug:name>/watchdog/clear/", views.watchdog_clear, name="watchdog-clear"),
]
