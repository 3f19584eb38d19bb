from django.apps import AppConfig


class ChatsiteConfig(AppConfig):
    """The project itself as an app, only to register its system checks."""

    name = "chatsite"
    verbose_name = "chatsite"

    def ready(self) -> None:
        from chatsite import checks  # noqa: F401  (registers them)
