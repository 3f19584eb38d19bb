from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "conversations"

    def ready(self) -> None:
        from .socket_sessions import connect_signals

        # Log-out, password change and deactivation close the user's sockets.
        connect_signals()
