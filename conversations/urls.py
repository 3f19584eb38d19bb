from django.urls import path

from . import review_views, share_views, views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("d/<int:dialogue_id>/", views.chat_dialogue, name="chat-dialogue"),
    path("s/<str:token>/", share_views.shared_dialogue, name="share"),
    path(
        "s/<str:token>/images/<int:image_id>/",
        share_views.shared_image,
        name="share-image",
    ),
    path(
        "s/<str:token>/files/<int:attachment_id>/",
        share_views.shared_file,
        name="share-file",
    ),
    path(
        "api/messages/<int:message_id>/report/",
        review_views.message_report_view,
        name="message-report",
    ),
]
