"""Download a picture from a provider's URL without letting the URL turn us inward.

A hostile or compromised provider chooses the URL, so it must not reach loopback,
the private network, link-local (cloud metadata) or reserved addresses, nor learn
which internal ports answer. Every hop, redirects included:

- only `http` and `https`, no credentials in the URL, a host on the optional
  allow-list (`IMAGE_DOWNLOAD_HOSTS`);
- the host is resolved here and every address it resolves to must be public (or in
  `IMAGE_DOWNLOAD_ALLOWED_NETWORKS`, for a provider on the operator's own network);
- the connection goes to the address that was checked (the URL's host replaced by
  it, `Host` and TLS server name kept), so a second, different DNS answer (DNS
  rebinding) is never used, and the peer address of the open connection is checked
  again before anything is read;
- a size cap and one deadline for the whole download.

Whatever goes wrong, the caller sees one `DownloadRefused`, logged with its reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx2

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to
Resolver = Callable[[str, int], Awaitable[list[str]]]


class DownloadRefused(Exception):
    """The URL was refused or the download failed; `reason` is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    )
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class DownloadPolicy:
    max_bytes: int
    timeout: float
    hosts: Sequence[str] = ()  # empty: any host with a public address
    allowed_networks: Sequence[Network] = ()
    resolver: Resolver = system_resolver
    max_redirects: int = MAX_REDIRECTS


def parse_networks(values: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


def address_allowed(address: str, allowed_networks: Sequence[Network] = ()) -> bool:
    """A public unicast address, or one the operator explicitly allowed."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed_networks):
        return True
    return ip.is_global and not ip.is_multicast


def host_allowed(host: str, hosts: Sequence[str]) -> bool:
    if not hosts:
        return True
    host = host.lower().rstrip(".")
    for pattern in hosts:
        pattern = pattern.lower().strip()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


async def _target(url: str, policy: DownloadPolicy) -> tuple[str, str, str]:
    """(URL to connect to, Host header, TLS server name) for one checked hop."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DownloadRefused(f"unparsable URL {url!r}") from exc
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        raise DownloadRefused(f"scheme or host refused in {url!r}")
    if parts.username or parts.password:
        raise DownloadRefused("credentials in the URL")
    if not host_allowed(host, policy.hosts):
        raise DownloadRefused(f"host {host!r} is not on IMAGE_DOWNLOAD_HOSTS")
    port = port or (443 if scheme == "https" else 80)
    try:
        addresses = await policy.resolver(host, port)
    except OSError as exc:
        raise DownloadRefused(f"cannot resolve {host!r}: {exc}") from exc
    if not addresses:
        raise DownloadRefused(f"{host!r} resolves to nothing")
    refused = [a for a in addresses if not address_allowed(a, policy.allowed_networks)]
    if refused:
        raise DownloadRefused(f"{host!r} resolves to a non-public address {refused[0]}")
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{port}"
    target = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = parts.netloc.rpartition("@")[2]
    return target, host_header, host


def _check_peer(response: httpx2.Response, policy: DownloadPolicy) -> None:
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer or not address_allowed(str(peer[0]), policy.allowed_networks):
        raise DownloadRefused(f"connected to a non-public address {peer!r}")


async def download(url: str, *, policy: DownloadPolicy) -> bytes:
    """The body of `url` (following at most `max_redirects` checked redirects)."""
    try:
        async with asyncio.timeout(policy.timeout):
            return await _download(url, policy)
    except TimeoutError as exc:
        raise DownloadRefused(f"no complete download within {policy.timeout}s") from exc
    except httpx2.HTTPError as exc:
        raise DownloadRefused(f"HTTP failure: {exc!r}") from exc
    except OSError as exc:
        raise DownloadRefused(f"network failure: {exc!r}") from exc


async def _download(url: str, policy: DownloadPolicy) -> bytes:
    async with httpx2.AsyncClient(
        timeout=policy.timeout, follow_redirects=False, trust_env=False
    ) as client:
        for _ in range(policy.max_redirects + 1):
            target, host_header, server_name = await _target(url, policy)
            request = client.build_request(
                "GET",
                target,
                headers={"Host": host_header},
                extensions={"sni_hostname": server_name},
            )
            response = await client.send(request, stream=True)
            try:
                _check_peer(response, policy)
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise DownloadRefused(f"HTTP {response.status_code}")
                return await _read(response, policy.max_bytes)
            finally:
                await response.aclose()
    raise DownloadRefused(f"more than {policy.max_redirects} redirects")


async def _read(response: httpx2.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DownloadRefused(f"declared {declared} bytes, over {max_bytes}")
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise DownloadRefused(f"over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
