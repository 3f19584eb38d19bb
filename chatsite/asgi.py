"""ASGI entry point: HTTP through Django, websockets at /ws/chat/ through Channels.

Served by daphne: `daphne chatsite.asgi:application`.
"""

import gc
import os
import threading

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from django.conf import settings  # noqa: E402

from chatsite.secretkey import refusal  # noqa: E402

# No serving on a key published with the code (one line, no traceback).
if reason := refusal(key=settings.SECRET_KEY, debug=settings.DEBUG):
    raise SystemExit(reason)
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chatsite import lifecycle  # noqa: E402
from chatsite.dbguard import DatabaseOutageGuard  # noqa: E402
from chatsite.origins import SiteOriginValidator  # noqa: E402
from conversations.routing import websocket_urlpatterns  # noqa: E402
from conversations.tokens import warm_up  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Scheme, host and port of the Origin must be the site's (chatsite/origins.py).
        # A database outage at the handshake answers `unavailable` (chatsite/dbguard.py).
        "websocket": SiteOriginValidator(
            DatabaseOutageGuard(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)


def _warm_up() -> None:
    warm_up()
    # What the process keeps for its lifetime (Django, the tokenizer tables) leaves
    # the cyclic collector's reach: a full collection would otherwise walk it all,
    # pausing every stream of the process (bench/results/profile-summary.md).
    gc.collect()
    gc.freeze()


# Load the tokenizer tables off the request path, before the first reply.
threading.Thread(target=_warm_up, name="tokenizer-warm-up", daemon=True).start()
# Graceful shutdown on SIGTERM under daphne (chatsite/lifecycle.py).
application = lifecycle.install(application)
