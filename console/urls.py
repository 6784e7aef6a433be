from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic.base import RedirectView

from console.api.views import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("console.api.urls")),
    path("metrics", metrics, name="metrics"),
    # Browsers ask for it on every page the console does not render itself (the admin's, say).
    path("favicon.ico", RedirectView.as_view(url=static("console/favicon.svg"), permanent=True)),
    path("", include("console.web.urls")),
]
