"""The secret key must be the operator's own: a key published with the code lets anyone
sign sessions and password-reset links for any account.

With `DEBUG` off and no `DJANGO_SECRET_KEY` (or one of the placeholders shipped in
this repository) the ASGI application refuses to load, so the server does not start,
and `check --deploy` reports `chatsite.E001`. `python -m chatsite.secretkey` writes
a generated key to `.env` for `make run`.
"""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

# Development fallback (DEBUG only) and the placeholders shipped as examples: public.
DEV_SECRET_KEY = "insecure-dev-key-set-DJANGO_SECRET_KEY-in-production"
PUBLIC_KEYS = frozenset(
    {
        DEV_SECRET_KEY,
        "change-me-to-a-long-random-string",  # .env.example before it shipped empty
        "change-me-to-50-or-more-random-characters",  # deploy/chatsite.env.example
    }
)

REFUSAL = (
    "chatsite: DJANGO_SECRET_KEY is not set (or is a placeholder) and DEBUG is off: "
    "refusing to start on a public key; set DJANGO_SECRET_KEY to a long random string "
    "(`make run` writes one to .env)."
)


def is_public(key: str) -> bool:
    return not key or key in PUBLIC_KEYS


def refusal(*, key: str, debug: bool) -> str | None:
    """The one-line reason not to serve with these settings, or None."""
    return REFUSAL if is_public(key) and not debug else None


def ensure_env_file(path: Path) -> bool:
    """Give `path` (a .env file) a generated DJANGO_SECRET_KEY when it has no usable
    one. Returns whether it wrote one."""
    text = path.read_text() if path.exists() else ""
    match = re.search(r"^DJANGO_SECRET_KEY=(.*)$", text, flags=re.MULTILINE)
    if match and not is_public(match.group(1).strip().strip("'\"")):
        return False
    line = f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}"
    if match:
        text = text[: match.start()] + line + text[match.end() :]
    else:
        text = f"{text.rstrip(chr(10))}\n{line}\n" if text else f"{line}\n"
    path.write_text(text)
    path.chmod(0o600)
    return True


if __name__ == "__main__":
    import os

    env_file = Path(__file__).resolve().parent.parent / ".env"
    if not is_public(os.environ.get("DJANGO_SECRET_KEY", "")):
        sys.exit(0)  # the environment's key wins over .env
    if ensure_env_file(env_file):
        print(f"wrote a generated DJANGO_SECRET_KEY to {env_file}")
