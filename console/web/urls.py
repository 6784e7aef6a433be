"""Every page's URL. Names keep their areas (instances:detail, schedules:list, ...)."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from console.accounts.throttle import LoginForm
from console.web.views import accounts, audit, instances, operations, schedules, telemetry, tokens

instance_pages = [
    path("", instances.instance_list, name="list"),
    path("instances/<slug:name>/", instances.instance_detail, name="detail"),
    path("hosts/<slug:name>/", instances.host_detail, name="host"),
    path("hosts/<slug:name>/hold/", instances.host_hold, name="host_hold"),
    path("instances/<slug:name>/operations/", instances.operate, name="operate"),
    path("instances/<slug:name>/try/", instances.try_instance, name="try"),
    path("instances/<slug:name>/hold/", instances.hold, name="hold"),
    path("instances/<slug:name>/operations/latest/", instances.operation_card, name="operation-card"),
    path("instances/<slug:name>/operations/rows/", instances.operation_rows, name="operation-rows"),
]
telemetry_pages = [
    path("instances/<slug:name>/series/", telemetry.instance_series, name="series"),
    path("instances/<slug:name>/diagnose/", telemetry.instance_diagnose, name="diagnose"),
    path("instances/<slug:name>/logs/download/", telemetry.log_download, name="log-download"),
]
operation_pages = [
    path("operations/<int:pk>/", operations.operation_detail, name="detail"),
    path("operations/<int:pk>/effect/", operations.operation_effect, name="effect"),
    path("rollouts/", operations.rollout_create, name="rollout-create"),
    path("rollouts/<int:pk>/", operations.rollout_detail, name="rollout"),
]
schedule_pages = [
    path("schedules/", schedules.schedule_list, name="list"),
    path("schedules/new/", schedules.schedule_create, name="create"),
    path("schedules/preview/", schedules.schedule_preview, name="preview"),
    path("schedules/<int:pk>/", schedules.schedule_edit, name="edit"),
    path("schedules/<int:pk>/toggle/", schedules.schedule_toggle, name="toggle"),
    path("schedules/<int:pk>/delete/", schedules.schedule_delete, name="delete"),
    path("instances/<slug:name>/watchdog/clear/", schedules.watchdog_clear, name="watchdog-clear"),
]
audit_pages = [
    path("audit/", audit.audit_list, name="list"),
    path("audit.csv", audit.audit_csv, name="csv"),
]

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/tokens/", tokens.tokens, name="api-tokens"),
    path("accounts/tokens/<int:pk>/revoke/", tokens.revoke, name="api-token-revoke"),
    path("accounts/language/", accounts.set_language, name="set-language"),
    path("", include((operation_pages, "operations"))),
    path("", include((telemetry_pages, "telemetry"))),
    path("", include((schedule_pages, "schedules"))),
    path("", include((audit_pages, "audit"))),
    path("", include((instance_pages, "instances"))),
]
