from django.urls import path

from . import views

urlpatterns = [
    path("", views.attachment_collection, name="attachments"),
    path("<int:pk>/", views.attachment_item, name="attachment-file"),
]
