"""`python -m chatsite.portcheck HOST PORT`: exit 1 with one readable line when the
port is taken, before `make run` starts daphne (whose own message is a CRITICAL
traceback-like line)."""

from __future__ import annotations

import errno
import socket
import sys


def port_problem(host: str, port: int) -> str | None:
    """Why daphne could not listen on host:port, or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As twisted binds: a port in TIME_WAIT after a restart is free to use.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"Port {port} on {host} is already in use (is chatsite already "
                    f"running?): stop that server or start on another port with "
                    f"`make run PORT={port + 1}`."
                )
            return f"Cannot listen on {host}:{port}: {exc.strerror or exc}."
    return None


def main(argv: list[str]) -> int:
    host, port = argv[0], int(argv[1])
    problem = port_problem(host, port)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
