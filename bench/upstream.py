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
from conversations.testing.fake_openai import pacing  # noqa: E402

TOKEN = re.compile(rb'(?<=[" ])tok(?=\d)')
STAMP = re.compile(r"(\d+\.\d+):tok(\d+)")


class _StampedEvents(list):
    """The pacer slices the due events right before writing them: stamp them then."""

    def __getitem__(self, key):
        items = super().__getitem__(key)
        if isinstance(key, slice):
            stamp = b"%.6f:tok" % time.time()
            return [TOKEN.sub(stamp, event) for event in items]
        return items


_original_send = pacing.Pacer.send


def _stamped_send(self, transport, events, *args, **kwargs):
    return _original_send(self, transport, _StampedEvents(events), *args, **kwargs)


def stamps(text: str) -> list[tuple[float, int]]:
    """(emitted at, token index) for each stamped token in `text`."""
    return [(float(t), int(i)) for t, i in STAMP.findall(text)]


if __name__ == "__main__":
    pacing.Pacer.send = _stamped_send
    fake_main.main()
