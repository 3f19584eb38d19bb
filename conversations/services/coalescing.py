"""When a reply's text goes out: model texts in, `reply.delta` frames out.

`Coalescer` is pure: it is told the time (`now`, any monotonic clock in seconds) and
never reads a clock or sleeps, so its tests use a fake clock and the reply runner
(services/streaming.py) does the waiting.

The rules: at most one frame per window on average (a credit that refills at one
frame per window and banks at most `CREDIT_CAP` frames), the first text at once, and
a waiting text sent as soon as credit allows, except when texts arrive faster than
the hold time: then a lone text waits (up to `HOLD` of the window) for the next, so
at 50 tokens/s and a 40 ms window every frame carries two tokens, sent the moment the
second arrives, rather than one late each time.
"""

from __future__ import annotations

HOLD = 0.75  # of the window: how long a lone text may wait for the next one
CREDIT_CAP = 1.5  # frames of credit a stream can bank: a late frame is caught up
EPSILON = 1e-9  # float slack when a deadline computed here comes back as `now`


class Coalescer:
    __slots__ = (
        "rate",
        "hold",
        "credit",
        "credit_at",
        "parts",
        "pieces",
        "oldest",
        "last",
        "gap",
    )

    def __init__(self, *, window: float, now: float) -> None:
        self.rate = 1 / window
        self.hold = HOLD * window
        self.credit, self.credit_at = 1.0, now  # the first text goes out at once
        self.parts: list[str] = []
        self.pieces = 0  # model texts waiting in `parts`
        self.oldest = 0.0  # when the first waiting text arrived
        self.last: float | None = None  # when the last text arrived
        self.gap: float | None = None  # moving average of the gap between texts

    def feed(self, now: float, text: str, pieces: int = 1) -> list[str]:
        """`text` (made of `pieces` model texts that arrived together) at `now`;
        returns the frames to send now."""
        if not text:
            return self.tick(now)
        if not self.parts:
            self.oldest = now
        if self.last is not None:
            gap = (now - self.last) / pieces
            self.gap = gap if self.gap is None else 0.8 * self.gap + 0.2 * gap
        self.last = now
        self.parts.append(text)
        self.pieces += pieces
        return self.tick(now)

    def tick(self, now: float) -> list[str]:
        """The frames due at `now` without new text (call it at `deadline()`)."""
        if not self.parts:
            return []
        have = self._credit(now)
        if have < 1 - EPSILON or (self._pairing() and now - self.oldest < self.hold):
            return []
        return [self._take(now, have)]

    def deadline(self) -> float | None:
        """When `tick` gives the waiting text out; None when nothing waits."""
        if not self.parts:
            return None
        ready = self.ready_at()
        return max(ready, self.oldest + self.hold) if self._pairing() else ready

    def ready_at(self) -> float:
        """When the credit allows the next frame. Before then a new text changes
        nothing (the caller need not wake for one)."""
        return self.credit_at + max(0.0, 1 - self.credit) / self.rate

    def flush(self, now: float, *, wait: bool = True) -> tuple[float, str] | None:
        """The reply ended: the text still waiting and when it goes (when credit
        allows, so the cap holds to the end; at `now` with `wait` False)."""
        if not self.parts:
            return None
        at = max(now, self.ready_at()) if wait else now
        return at, self._take(at, max(1.0, self._credit(at)))

    def _pairing(self) -> bool:
        """A lone text waits for a companion when texts come faster than `hold`."""
        return self.pieces < 2 and self.gap is not None and self.gap < self.hold

    def _credit(self, now: float) -> float:
        return min(CREDIT_CAP, self.credit + (now - self.credit_at) * self.rate)

    def _take(self, now: float, have: float) -> str:
        self.credit, self.credit_at = have - 1, now
        delta = "".join(self.parts)
        self.parts, self.pieces = [], 0
        return delta
