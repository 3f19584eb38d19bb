"""The fake OpenAI upstream with emission timestamps, as its own process.

    .venv/bin/python bench/upstream.py --port 9100 --tokens 200 --tps 50

Runs `conversations.testing.fake_openai` unchanged except that every generated token
`tokN` leaves the fake as `<unix time>:tokN`, stamped when it is written to the
socket. A client that sees the token computes the delay added after the upstream
emitted it (same machine, same clock). Its own process, so its CPU is not counted
as the server's.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conversations.testing.fake_openai import __main__ as fake_main  # noqa: E402
from conversations.testing.fake_openai import server  # noqa: E402

TOKEN = re.compile(rb'(?<=[" ])tok(?=\d)')
STAMP = re.compile(r"(\d+\.\d+):tok(\d+)")

_original_emit = server._emit


class _Stamping:
    def __init__(self, response) -> None:
        self.response = response

    async def write(self, chunk: bytes) -> None:
        stamp = b"%.6f:tok" % time.time()
        await self.response.write(TOKEN.sub(stamp, chunk))


async def _stamped_emit(response, *args, **kwargs):
    return await _original_emit(_Stamping(response), *args, **kwargs)


def stamps(text: str) -> list[tuple[float, int]]:
    """(emitted at, token index) for each stamped token in `text`."""
    return [(float(t), int(i)) for t, i in STAMP.findall(text)]


if __name__ == "__main__":
    server._emit = _stamped_emit
    fake_main.main()
