"""Back-pressure for sockets whose client does not read (issue 14).

Under daphne every frame of a dialogue is written to the socket's TCP transport at
once (conversations.fanout); a client that stops reading would make that transport's
buffer, and the process, grow without bound. Twisted tells a registered streaming
producer when the transport's write buffer is full (`pauseProducing`) and when it
has drained (`resumeProducing`): the guard below counts what is written meanwhile
and, past the bound, drops the connection, which frees its buffer. The client
reconnects and resumes exactly from `dialogue.open` (protocol guarantee 2).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class SlowConsumerGuard:
    def __init__(self, protocol: Any, limit: int) -> None:
        self.protocol, self.limit = protocol, limit
        self.paused = False
        self.pending = 0  # bytes written while the transport's buffer was full
        self.dropped = False

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's interface)
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused, self.pending = False, 0

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = False

    def admit(self, size: int) -> bool:
        """Whether a frame of `size` bytes may still be written; False once the
        connection has been dropped as a slow consumer."""
        if self.dropped:
            return False
        if self.paused:
            self.pending += size
            if self.pending > self.limit:
                self.dropped = True
                self.protocol.dropConnection(abort=True)
                return False
        return True


def guard(protocol: Any, limit: int) -> SlowConsumerGuard | None:
    """Register a guard on the socket's transport. After the upgrade the transport's
    producer is still daphne's HTTP channel, which no longer uses it: the guard
    takes its place. None if the transport takes no producer."""
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "registerProducer"):
        return None
    slow = SlowConsumerGuard(protocol, limit)
    try:
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(slow, True)
    except RuntimeError:
        return None
    return slow
