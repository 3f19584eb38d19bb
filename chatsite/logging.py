"""A one-line JSON log formatter for LOG_FORMAT=json (structured logs), and the filter
that keeps one client from flooding the log with the same record."""

import json
import logging
import time
from collections.abc import Callable


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


class RepeatFilter(logging.Filter):
    """At most `burst` records of one logger and message template per `period`
    seconds; the first one let through after that says how many were dropped.

    A client that makes the same thing fail on every frame then costs a few lines a
    minute, not a traceback per frame.
    """

    MAX_KEYS = 2000

    def __init__(
        self,
        burst: int = 5,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst, self.period, self.clock = burst, period, clock
        # (logger, template) -> [window start, records let through, records dropped]
        self.seen: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:300])
        now = self.clock()
        state = self.seen.get(key)
        if state is None or now - state[0] >= self.period:
            dropped = int(state[2]) if state else 0
            if len(self.seen) >= self.MAX_KEYS:
                self.seen.clear()
            self.seen[key] = [now, 1, 0]
            if dropped:
                # No "%" in the note: the record's own args still format the message.
                record.msg = f"{record.msg} [{dropped} more like this dropped]"
            return True
        if state[1] < self.burst:
            state[1] += 1
            return True
        state[2] += 1
        return False
