"""Image downloads cannot be turned inward (issue 15, item 3): only http(s), every hop
resolved and refused on a non-public address, the connection made to the address
that was checked, an optional host allow-list, size and time caps, one error."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

import pytest
from aiohttp import web

from conftest import free_port
from imaging.download import DownloadPolicy, DownloadRefused, address_allowed, download
from imaging.exceptions import ImageGenerationError
from imaging.generators import get_image_generator

from .conftest import png_bytes

LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.1/32"),)
PNG = png_bytes()


class Site:
    """A small HTTP server on one loopback address, counting what it was asked."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = free_port()
        self.hits: list[str] = []
        self.redirect_to = ""

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path_qs)
        if request.path == "/redirect":
            raise web.HTTPFound(self.redirect_to)
        if request.path == "/slow":
            await asyncio.sleep(5)
        if request.path == "/missing":
            raise web.HTTPNotFound()
        return web.Response(body=PNG, content_type="image/png")


@contextlib.asynccontextmanager
async def serve(host: str):
    site = Site(host)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", site.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, site.port).start()
    try:
        yield site
    finally:
        await runner.cleanup()


def policy(**overrides) -> DownloadPolicy:
    values = {"max_bytes": 1 << 20, "timeout": 2.0, "allowed_networks": LOOPBACK_ONLY}
    return DownloadPolicy(**{**values, **overrides})


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "240.0.0.1",  # reserved
        "224.0.0.1",  # multicast
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_inward_addresses_are_not_allowed(address):
    assert not address_allowed(address)


def test_public_addresses_are_allowed():
    assert address_allowed("93.184.216.34") and address_allowed("2606:4700::1111")


async def test_a_public_hop_is_downloaded():
    async with serve("127.0.0.1") as site:
        data = await download(site.url("/pic.png"), policy=policy())

    assert data == PNG and site.hits == ["/pic.png"]


async def test_a_redirect_to_an_inward_address_is_refused_before_connecting():
    async with serve("127.0.0.1") as front, serve("127.0.0.2") as inner:
        front.redirect_to = inner.url("/admin")

        with pytest.raises(DownloadRefused, match="non-public"):
            await download(front.url("/redirect"), policy=policy())

    assert front.hits == ["/redirect"] and inner.hits == []


async def test_loopback_decimal_and_ipv6_spellings_are_refused_without_a_request():
    async with serve("127.0.0.1") as site:
        for url in (
            site.url("/x"),
            f"http://2130706433:{site.port}/x",  # 127.0.0.1 as one decimal number
            f"http://0x7f000001:{site.port}/x",
            f"http://[::ffff:127.0.0.1]:{site.port}/x",
            f"http://localhost:{site.port}/x",
        ):
            with pytest.raises(DownloadRefused):
                await download(url, policy=policy(allowed_networks=()))

    assert site.hits == []


async def test_dns_rebinding_is_useless_the_checked_address_is_the_one_used():
    answers = [["127.0.0.1"], ["127.0.0.2"]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    async with serve("127.0.0.1") as good, serve("127.0.0.2") as inner:
        url = f"http://images.test:{good.port}/pic.png"
        inner.port = good.port  # would be the rebinding's target
        data = await download(url, policy=policy(resolver=rebinding))

    assert data == PNG and asked == ["images.test"]
    assert good.hits == ["/pic.png"] and inner.hits == []


async def test_a_name_resolving_to_any_inward_address_is_refused():
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]

    with pytest.raises(DownloadRefused, match="non-public"):
        await download("https://images.test/p.png", policy=policy(resolver=mixed))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:6379/_INFO",
        "http://user:pw@127.0.0.1/x",
        "//127.0.0.1/x",
    ],
)
async def test_other_schemes_and_credentials_are_refused(url):
    with pytest.raises(DownloadRefused):
        await download(url, policy=policy())


async def test_the_host_allow_list_is_checked_on_every_hop():
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    allowed = policy(hosts=["img.example.com", "*.cdn.example.com"], resolver=resolve)
    async with serve("127.0.0.1") as site:
        site.redirect_to = f"http://elsewhere.test:{site.port}/pic.png"
        ok = await download(f"http://a.cdn.example.com:{site.port}/p", policy=allowed)
        with pytest.raises(DownloadRefused, match="IMAGE_DOWNLOAD_HOSTS"):
            await download(
                f"http://img.example.com:{site.port}/redirect", policy=allowed
            )
        with pytest.raises(DownloadRefused, match="IMAGE_DOWNLOAD_HOSTS"):
            await download(f"http://example.com.evil:{site.port}/p", policy=allowed)

    assert ok == PNG and site.hits == ["/p", "/redirect"]


async def test_size_and_time_are_capped():
    async with serve("127.0.0.1") as site:
        with pytest.raises(DownloadRefused, match="bytes"):
            await download(site.url("/pic.png"), policy=policy(max_bytes=len(PNG) - 1))
        with pytest.raises(DownloadRefused, match="within"):
            await download(site.url("/slow"), policy=policy(timeout=0.5))


async def test_redirect_chains_are_bounded():
    async with serve("127.0.0.1") as site:
        site.redirect_to = site.url("/redirect")
        with pytest.raises(DownloadRefused, match="redirects"):
            await download(site.url("/redirect"), policy=policy())

    assert len(site.hits) == 4


async def test_every_refusal_reads_the_same_to_the_user(fake_openai, settings):
    """A closed port, a 404, loopback, a bad scheme: one error, no port oracle."""
    async with serve("127.0.0.1") as site:
        urls = [
            f"http://127.0.0.1:{free_port()}/closed",
            site.url("/missing"),
            "http://169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
        ]
        generator = get_image_generator()
        generator.download_policy = policy(timeout=2.0)
        errors = []
        for url in urls:
            with pytest.raises(ImageGenerationError) as caught:
                await generator._download(url)
            errors.append((caught.value.code, caught.value.message))

    assert len(set(errors)) == 1
    assert errors[0][0] == "upstream_error"


async def test_the_provider_on_loopback_is_refused_unless_its_network_is_allowed(
    fake_openai, settings
):
    fake_openai.configure(image_mode="url")

    with pytest.raises(ImageGenerationError) as caught:
        await get_image_generator().generate(
            prompt="a boat", size="1024x1024", model="gpt-image-1"
        )
    settings.IMAGE_DOWNLOAD_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    picture = await get_image_generator().generate(
        prompt="a boat", size="1024x1024", model="gpt-image-1"
    )

    assert caught.value.code == "upstream_error"
    assert (picture.width, picture.height) == (256, 256)
