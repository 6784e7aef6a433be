from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from console.accounts.throttle import AdminLoginForm, LoginForm
from console.accounts.views import set_language
from console.api import token_views

admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/tokens/", token_views.tokens, name="api-tokens"),
    path("accounts/tokens/<int:pk>/revoke/", token_views.revoke, name="api-token-revoke"),
    path("admin/", admin.site.urls),
    path("api/", include("console.api.urls")),
    path("accounts/language/", set_language, name="set-language"),
    path("", include("console.operations.urls")),
    path("", include("console.telemetry.urls")),
    path("", include("console.schedules.urls")),
    path("", include("console.audit.urls")),
    path("", include("console.instances.urls")),
]
