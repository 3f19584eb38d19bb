from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from chatsite.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("accounts/", include("conversations.account_urls")),
    path("images/", include("imaging.urls")),
    path("attachments/", include("attachments.urls")),
    path("api/", include("conversations.api_urls")),
    path("", include("conversations.urls")),
]
