"""The fake OpenAI-compatible HTTP server (aiohttp) and its thread wrapper."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import chat
from .behaviour import (
    DEFAULTS,
    FAULT_KINDS,
    Fault,
    count_prompt_tokens,
    last_user_text,
    parse_directive,
    parse_fault,
    reply_pieces,
    tool_answered,
    validate,
)
from .images import render_png
from .pacing import Lateness, Pacer
from .vision import describe, received

Responder = Callable[[dict[str, Any]], dict[str, Any] | None]

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may "
    "contain text that is not allowed by our safety system."
)
_MAX_FILES = 500


def wait_for(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01
) -> Any:
    """Poll `predicate` until it returns something truthy; return that value.

    Raises TimeoutError when it stays falsy for `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], Any],
    timeout: float = 5.0,  # noqa: ASYNC109 - a polling helper, like wait_for
    interval: float = 0.01,
) -> Any:
    """`wait_for` for async tests: sleeps without blocking their event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@dataclass
class _Active:
    request: web.BaseRequest
    dropped: bool = False  # we cut the connection on purpose (drop_after)
    reset: bool = False  # reset()/stop() cut it: not the client's doing


def _json_error(status: int, **kwargs: Any) -> web.Response:
    headers = {"retry-after": "0"} if status == 429 else None
    return web.json_response(
        chat.error_body(status, **kwargs), status=status, headers=headers
    )


class FakeOpenAI:
    """An OpenAI-compatible server on a free local port, for tests and benchmarks.

    `with FakeOpenAI(tokens=10, tps=50) as fake: ...` runs it in a background thread
    with its own event loop; `fake.base_url` is what to hand the SDK. Keyword
    arguments are default behaviour (see `behaviour.DEFAULTS`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        record: bool = True,
        **behaviour: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.record = record
        self.open_streams = 0
        self.lateness = Lateness()
        self._pacer = Pacer()
        self._lock = threading.Lock()
        self._initial = {**DEFAULTS, **validate(behaviour)}
        self._defaults = dict(self._initial)
        self._generation = 0
        self._requests: list[dict[str, Any]] = []
        self._request_count = 0
        self._closed_early: list[tuple[int, float]] = []
        self._script: deque[dict[str, Any]] = deque()
        self._responder: Responder | None = None
        self._fault_counts: Counter[tuple[str, str]] = Counter()
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._active: dict[int, _Active] = {}
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- control

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received since the last reset: {"path", "body", "time"}
        (time is time.monotonic()); a snapshot."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests, in order."""
        return [r["body"] for r in self.requests if r["path"].endswith("/completions")]

    @property
    def received(self) -> list[dict[str, Any]]:
        """Per chat request, in order: the pictures and attachment blocks of its last
        user message (`vision.received`)."""
        return [
            r.get("received", {"pictures": [], "documents": []})
            for r in self.requests
            if r["path"].endswith("/completions")
        ]

    @property
    def request_count(self) -> int:
        return self._request_count

    @property
    def closed_early(self) -> list[tuple[int, float]]:
        """(request index, time.monotonic()) for each response the client abandoned
        before it ended."""
        with self._lock:
            return list(self._closed_early)

    def configure(self, **behaviour: Any) -> None:
        """Change the default behaviour (keys of `behaviour.DEFAULTS`)."""
        validate(behaviour)
        with self._lock:
            self._defaults = {**self._defaults, **behaviour}
            self._generation += 1

    def script(self, entries: list[dict[str, Any]]) -> None:
        """Use each entry, overlaid on the defaults, for the next chat requests."""
        for entry in entries:
            validate(entry)
        with self._lock:
            self._script.extend(entries)

    def set_responder(self, responder: Responder | None) -> None:
        """`responder(body)` returns behaviour overrides (or None) for each chat
        request not served by the script."""
        self._responder = responder

    responder = property(lambda self: self._responder, set_responder)

    def reset(self) -> None:
        """Forget requests, script, responder and configuration; cut any response
        still in flight (without counting it as closed early)."""
        self._call_in_loop(self._cut_active)
        with self._lock:
            self._requests.clear()
            self._request_count = 0
            self._closed_early.clear()
            self._script.clear()
            self._fault_counts.clear()
            self._files.clear()
            self._defaults = dict(self._initial)
            self._generation += 1
        self._responder = None
        self.lateness = Lateness()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        return wait_for(predicate, timeout)

    async def async_wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 5.0,  # noqa: ASYNC109 - a polling helper, like wait_for
    ) -> Any:
        return await async_wait_for(predicate, timeout)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.close()

        self._stopping = False
        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        self._stopping = True
        loop.call_soon_threadsafe(self._cut_active)
        if self._runner is not None:
            runner = self._runner
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Run in the current event loop until cancelled (the CLI); `ready` is
        called once it listens."""
        await self._start_site()
        if ready is not None:
            ready()
        try:
            await asyncio.Event().wait()
        finally:
            self._stopping = True
            if self._runner is not None:
                await self._runner.cleanup()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/images/generations", self._images)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/_fake/stats", self._stats)
        app.router.add_post("/_fake/configure", self._remote_configure)
        app.router.add_post("/_fake/script", self._remote_script)
        app.router.add_post("/_fake/reset", self._remote_reset)
        return app

    async def _start_site(self) -> None:
        # handler_cancellation: a client closing the connection cancels the handler
        # at once, even mid-sleep, which is how closed_early is observed.
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        self._pacer = Pacer()
        site = web.TCPSite(runner, self.host, self.port, backlog=2048)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        on_loop = threading.current_thread() is self._thread
        if loop is None or not loop.is_running() or on_loop:
            fn()
            return
        done = threading.Event()

        def call() -> None:
            try:
                fn()
            finally:
                done.set()

        loop.call_soon_threadsafe(call)
        done.wait(5)

    def _cut_active(self) -> None:
        for active in list(self._active.values()):
            active.reset = True
            if active.request.transport is not None:
                active.request.transport.abort()
        self._active.clear()

    # -------------------------------------------------------------- recording

    def _record(self, path: str, body: Any) -> int:
        with self._lock:
            index = self._request_count
            self._request_count += 1
            if self.record:
                self._requests.append(
                    {
                        "path": path,
                        "body": body,
                        "time": time.monotonic(),
                        "index": index,
                    }
                )
        return index

    def _note_received(self, index: int, found: dict[str, Any]) -> None:
        with self._lock:
            for request in reversed(self._requests):
                if request.get("index") == index:
                    request["received"] = found
                    return

    def _record_closed_early(self, index: int, active: _Active | None) -> None:
        if self._stopping or (active is not None and (active.dropped or active.reset)):
            return
        with self._lock:
            self._closed_early.append((index, time.monotonic()))

    def _behaviour_for(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The effective behaviour and a key naming where its fault came from
        (fault_times counts per source)."""
        with self._lock:
            behaviour = dict(self._defaults)
            source = f"config:{self._generation}"
            entry = self._script.popleft() if self._script else None
        if entry is not None:
            source = "script"
        elif self._responder is not None:
            entry = validate(self._responder(body) or {})
            source = "responder"
        behaviour.update(entry or {})
        text = last_user_text(body.get("messages") or [])
        directive = parse_directive(text)
        if directive:
            behaviour.update(directive)
            if "fault" in directive:
                source = f"directive:{text}"
        return behaviour, source

    def _fault_applies(self, source: str, behaviour: dict[str, Any]) -> bool:
        times = int(behaviour.get("fault_times") or 0)
        if times <= 0:
            return True
        key = (source, str(behaviour["fault"]))
        with self._lock:
            if self._fault_counts[key] >= times:
                return False
            self._fault_counts[key] += 1
            return True

    # ------------------------------------------------------------------- chat

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _json_error(400, message="The request body must be a JSON object.")
        index = self._record(request.path, body)
        try:
            behaviour, source = self._behaviour_for(body)
            fault = parse_fault(behaviour["fault"])
        except ValueError as exc:
            return _json_error(400, message=f"fake: {exc}")
        if fault is not None and not self._fault_applies(source, behaviour):
            fault = None
        model = str(body.get("model", ""))
        if behaviour["strict_models"] and model not in behaviour["models"]:
            return _json_error(
                404,
                message=f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        if fault is not None and fault.kind == "http":
            return _json_error(fault.status)
        if fault is not None and fault.kind == "context_length":
            prompt = count_prompt_tokens(body.get("messages") or [])
            if prompt > fault.after:
                return _json_error(
                    400,
                    message=f"This model's maximum context length is {fault.after} "
                    f"tokens. However, you requested {prompt} tokens.",
                    code="context_length_exceeded",
                )
            fault = None

        messages = body.get("messages") or []
        found = await received(messages)
        self._note_received(index, found)
        said = describe(found)
        if said is not None and behaviour["text"] is None and not behaviour["echo"]:
            behaviour["text"] = said
        tool = behaviour["tool_call"]
        if tool and tool_answered(messages):
            tool = None
        pieces = (
            []
            if tool and behaviour["text"] is None and not behaviour["echo"]
            else reply_pieces(behaviour, messages)
        )
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        truncated = bool(max_tokens) and len(pieces) > int(max_tokens)
        if truncated:
            pieces = pieces[: int(max_tokens)]
        reply = _Reply(
            completion_id=f"chatcmpl-fake{uuid.uuid4().hex[:20]}",
            model=model,
            created=int(time.time()),
            pieces=pieces,
            tool_call=(
                {
                    "id": f"call_fake{index}",
                    "type": "function",
                    "function": {
                        "name": tool["name"],
                        "arguments": chat.tool_arguments_text(
                            tool.get("arguments", {})
                        ),
                    },
                }
                if tool
                else None
            ),
            prompt_tokens=count_prompt_tokens(messages),
            fault=fault,
            behaviour=behaviour,
            truncated=truncated,
        )
        active = _Active(request)
        self._active[index] = active
        try:
            if body.get("stream"):
                options = body.get("stream_options") or {}
                return await self._stream(
                    request, reply, active, bool(options.get("include_usage"))
                )
            return await self._complete(request, reply, active)
        except asyncio.CancelledError:
            self._record_closed_early(index, active)
            raise
        except ConnectionResetError:
            self._record_closed_early(index, active)
            return web.Response(status=499)
        finally:
            self._active.pop(index, None)

    async def _complete(
        self, request: web.Request, reply: _Reply, active: _Active
    ) -> web.StreamResponse:
        b = reply.behaviour
        tps = float(b["tps"])
        count = len(reply.pieces) + (3 if reply.tool_call else 0)
        delay = float(b["first_token_delay"]) + (count / tps if tps > 0 else 0)
        if delay > 0:
            await asyncio.sleep(delay)
        fault = reply.fault
        if fault is not None and fault.kind == "drop_after":
            await self._drop(request, active)
        if fault is not None and fault.kind == "stall_after":
            await asyncio.sleep(float(b["stall_seconds"]))
        if fault is not None and fault.kind == "error_after":
            return _json_error(500)
        finish = reply.finish_reason
        completion_tokens = len(reply.pieces) + (2 if reply.tool_call else 0)
        return web.json_response(
            chat.completion(
                completion_id=reply.completion_id,
                model=reply.model,
                created=reply.created,
                text="".join(reply.pieces),
                tool_call=reply.tool_call,
                finish_reason=finish,
                usage=chat.usage_dict(reply.prompt_tokens, completion_tokens),
            )
        )

    async def _stream(
        self,
        request: web.Request,
        reply: _Reply,
        active: _Active,
        include_usage: bool,
    ) -> web.StreamResponse:
        enc = chat.ChunkEncoder(
            completion_id=reply.completion_id,
            model=reply.model,
            created=reply.created,
            usage=include_usage,
        )
        events: list[bytes] = [enc.content(p) for p in reply.pieces]
        if reply.tool_call is not None:
            function = reply.tool_call["function"]
            arguments = function["arguments"]
            half = len(arguments) // 2
            events.append(
                enc.tool_start(call_id=reply.tool_call["id"], name=function["name"])
            )
            events.append(enc.tool_arguments(arguments[:half]))
            events.append(enc.tool_arguments(arguments[half:]))
        first = enc.role(content=None if not reply.pieces else "")

        b = reply.behaviour
        fault = reply.fault
        tps = float(b["tps"])
        interval = 1.0 / tps if tps > 0 else 0.0
        response = web.StreamResponse(headers=_SSE_HEADERS)
        # the pacer writes chunks to the transport itself, framed as HTTP chunks
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.open_streams += 1
        try:
            loop = asyncio.get_running_loop()
            start = loop.time() + float(b["first_token_delay"])
            limit = len(events)
            if fault is not None and fault.kind in FAULT_KINDS:
                limit = min(fault.after, len(events))
            sent = await self._pacer.send(
                request.transport,
                events,
                0,
                limit,
                start=start,
                interval=interval,
                first=first,
                lateness=self.lateness,
            )
            if fault is not None and fault.kind == "error_after":
                await response.write(
                    chat.error_event("The fake upstream failed mid-stream.")
                )
                await response.write_eof()
                return response
            if fault is not None and fault.kind == "end_after":
                await response.write_eof()
                return response
            if fault is not None and fault.kind == "drop_after":
                await self._drop(request, active)
            if fault is not None and fault.kind == "ping_after":
                until = loop.time() + float(b["stall_seconds"])
                while loop.time() < until:
                    await response.write(b": ping\n\n")
                    await asyncio.sleep(min(0.05, max(until - loop.time(), 0)))
            if fault is not None and fault.kind in ("stall_after", "ping_after"):
                if fault.kind == "stall_after":
                    await asyncio.sleep(float(b["stall_seconds"]))
                start = loop.time() - sent * interval
                first = first if sent == 0 else b""
                sent = await self._pacer.send(
                    request.transport,
                    events,
                    sent,
                    len(events),
                    start=start,
                    interval=interval,
                    first=first,
                    lateness=self.lateness,
                )
            if not events:
                await response.write(first)
            tail = [enc.finish(reply.finish_reason)]
            if include_usage:
                content_chunks = len(reply.pieces) + (2 if reply.tool_call else 0)
                tail.append(
                    enc.usage(
                        prompt_tokens=reply.prompt_tokens,
                        completion_tokens=content_chunks,
                    )
                )
            tail.append(chat.DONE)
            await response.write(b"".join(tail))
            await response.write_eof()
            return response
        finally:
            self.open_streams -= 1

    async def _drop(self, request: web.Request, active: _Active) -> None:
        """Cut the TCP connection abruptly and wait for aiohttp to cancel us."""
        active.dropped = True
        if request.transport is not None:
            request.transport.abort()
        await asyncio.sleep(3600)

    # ----------------------------------------------------------------- images

    async def _images(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _json_error(400, message="The request body must be a JSON object.")
        self._record(request.path, body)
        defaults = self._defaults
        prompt = str(body.get("prompt", ""))
        fault = defaults["image_fault"]
        if "[[policy]]" in prompt or fault == "policy":
            return _json_error(
                400,
                message=_POLICY_MESSAGE,
                type_="invalid_request_error",
                code="content_policy_violation",
            )
        if "[[500]]" in prompt or fault == "http_500":
            return _json_error(500)
        delay = float(defaults["image_delay"]) + (5.0 if "[[slow]]" in prompt else 0)
        if delay > 0:
            await asyncio.sleep(delay)
        size = body.get("size") or "1024x1024"
        mode = body.get("response_format") or defaults["image_mode"]
        loop = asyncio.get_running_loop()
        data = []
        for _ in range(max(int(body.get("n") or 1), 1)):
            png = await loop.run_in_executor(None, render_png, prompt, size)
            item = {"revised_prompt": f"{prompt} (as imagined by the fake)"}
            if mode == "url":
                name = f"img-{uuid.uuid4().hex}.png"
                with self._lock:
                    self._files[name] = png
                    while len(self._files) > _MAX_FILES:
                        self._files.popitem(last=False)
                item["url"] = f"{request.scheme}://{request.host}/files/{name}"
            else:
                item["b64_json"] = base64.b64encode(png).decode()
            data.append(item)
        return web.json_response(
            {
                "created": int(time.time()),
                "data": data,
                "size": size,
                "output_format": "png",
            }
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        png = self._files.get(request.match_info["name"])
        if png is None:
            return _json_error(404)
        return web.Response(body=png, content_type="image/png")

    # ------------------------------------------------------------ other routes

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._record(request.path, None)
        models = [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "fake"}
            for name in self._defaults["models"]
        ]
        return web.json_response({"object": "list", "data": models})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "requests": self._request_count,
                "open_streams": self.open_streams,
                "closed_early": len(self._closed_early),
                "lateness": self.lateness.as_dict(),
                "recent": [
                    {"path": r["path"], "body": r["body"]} for r in self.requests[-20:]
                ],
            }
        )

    async def _remote_configure(self, request: web.Request) -> web.StreamResponse:
        try:
            self.configure(**(await request.json()))
        except (TypeError, ValueError) as exc:
            return _json_error(400, message=str(exc))
        return web.json_response({"ok": True})

    async def _remote_script(self, request: web.Request) -> web.StreamResponse:
        try:
            self.script(await request.json())
        except (TypeError, ValueError) as exc:
            return _json_error(400, message=str(exc))
        return web.json_response({"ok": True})

    async def _remote_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"ok": True})


@dataclass
class _Reply:
    completion_id: str
    model: str
    created: int
    pieces: list[str]
    tool_call: dict[str, Any] | None
    prompt_tokens: int
    fault: Fault | None
    behaviour: dict[str, Any]
    truncated: bool = False  # cut at max_tokens

    @property
    def finish_reason(self) -> str:
        if self.fault is not None and self.fault.kind == "content_filter":
            return "content_filter"
        if self.truncated and self.tool_call is None:
            return "length"
        return "tool_calls" if self.tool_call is not None else "stop"
