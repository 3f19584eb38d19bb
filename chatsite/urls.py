from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("conversations.account_urls")),
    path("images/", include("imaging.urls")),
    path("", include("conversations.urls")),
]
