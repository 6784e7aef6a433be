from django.contrib import admin
from django.urls import include, path

from console.accounts.throttle import AdminLoginForm

admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("console.api.urls")),
    path("", include("console.web.urls")),
]
