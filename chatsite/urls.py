from django.contrib import admin
from django.urls import include, path

from chatsite.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("conversations.account_urls")),
    path("images/", include("imaging.urls")),
    path("api/", include("conversations.api_urls")),
    path("", include("conversations.urls")),
]
