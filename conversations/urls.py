from django.urls import path

from . import review_views, views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("d/<int:dialogue_id>/", views.chat_dialogue, name="chat-dialogue"),
    path(
        "api/messages/<int:message_id>/report/",
        review_views.message_report_view,
        name="message-report",
    ),
]
