"""Per-frame costs of daphne's websocket stack, taken off the hot path.

Every `reply.delta` frame goes out through autobahn and twisted. Measured with yappi
on the streaming benchmark (bench/README.md), two things there cost more CPU than
everything chatsite itself does with a frame:

* autobahn formats the arguments of a `log.debug` call on every frame it sends
  (`hltype`/`hlval`, which colour text through click when it is installed) even
  though debug logging is off: those helpers become plain `str`.
* twisted's TCP transport never writes at once: it buffers, registers the socket for
  writability (an epoll change), waits a loop turn, writes, and unregisters (another
  epoll change). When nothing is buffered, the fast path below sends at once and
  only hands twisted what the kernel did not take, so order and back-pressure stay
  twisted's.

`install()` is idempotent and does nothing when those packages are absent.

`freeze_heap()`, once the server has loaded what it keeps for its lifetime (Django,
the tokenizer tables), moves those ~200,000 objects out of the cyclic collector's
reach: otherwise each full collection walks them all, a 100-200 ms pause of every
stream in the process (measured with gc.callbacks on the streaming benchmark).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

_installed = False


def _plain(value: Any, *args: Any, **kwargs: Any) -> str:
    return ""


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from autobahn.websocket import protocol as ws_protocol
    except ImportError:
        pass
    else:
        ws_protocol.hltype = _plain  # type: ignore[assignment]
        ws_protocol.hlval = _plain  # type: ignore[assignment]
    try:
        from twisted.internet import tcp
    except ImportError:
        return
    buffered_write = tcp.Connection.write

    def write(self: Any, data: bytes) -> None:
        if (
            data
            and type(data) is bytes
            and self.connected
            and not self.TLS  # startTLS: bytes must go through the TLS layer
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset >= len(self.dataBuffer)
        ):
            try:
                sent = self.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # twisted's own write meets the error and closes properly
            if sent >= len(data):
                return
            data = data[sent:]
        buffered_write(self, data)

    tcp.Connection.write = write  # type: ignore[method-assign]


def freeze_heap() -> None:
    gc.collect()
    gc.freeze()
    log.debug("%d objects frozen out of the cyclic collector", gc.get_freeze_count())
