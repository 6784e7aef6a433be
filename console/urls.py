from django.contrib import admin
from django.urls import include, path

from console.accounts.throttle import AdminLoginForm
from console.api.views import metrics

admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("console.api.urls")),
    path("metrics", metrics, name="metrics"),
    path("", include("console.web.urls")),
]
