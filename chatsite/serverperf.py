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
"""

from __future__ import annotations

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
