"""`python -m conversations.testing.fake_openai --port 9100 [--tokens N --tps 50]`"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

from .server import FakeOpenAI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Serve a fake OpenAI-compatible API (chat completions, images)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, help="reply length in tokens (30)")
    parser.add_argument("--tps", type=float, help="tokens per second (0 = no pacing)")
    parser.add_argument("--first-token-delay", type=float, help="seconds")
    parser.add_argument("--text", help="explicit reply text")
    parser.add_argument("--style", choices=["tok", "lorem"])
    parser.add_argument("--fault", help="http_429, http_500, drop_after:K, ...")
    parser.add_argument("--fault-times", type=int)
    parser.add_argument("--image-mode", choices=["b64_json", "url"])
    parser.add_argument("--models", help="comma-separated model names")
    parser.add_argument(
        "--config", help="JSON object of further behaviour keys", default="{}"
    )
    parser.add_argument(
        "--record", action="store_true", help="keep every request body in memory"
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop when it is installed"
    )
    args = parser.parse_args(argv)

    behaviour = json.loads(args.config)
    for key in (
        "tokens",
        "tps",
        "first_token_delay",
        "text",
        "style",
        "fault",
        "fault_times",
        "image_mode",
    ):
        value = getattr(args, key)
        if value is not None:
            behaviour[key] = value
    if args.models:
        behaviour["models"] = args.models.split(",")
    fake = FakeOpenAI(args.host, args.port, record=args.record, **behaviour)

    async def run() -> None:
        serving = asyncio.current_task()
        assert serving is not None
        # SIGTERM and SIGINT end the server cleanly (a backgrounded process may
        # ignore SIGINT, so handle both explicitly).
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, serving.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await fake.serve(
                lambda: print(f"fake openai listening on {fake.base_url}", flush=True)
            )

    if args.uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
