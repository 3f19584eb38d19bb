"""The fake OpenAI server, driven through the real openai SDK over real HTTP."""

import asyncio
import base64
import functools
import io
import json
import subprocess
import sys
import time

import httpx2
import openai
import pytest
from django.conf import settings as django_settings
from openai import AsyncOpenAI, OpenAI
from PIL import Image

from conftest import BASE_DIR, fake_openai_env, free_port, wait_for_port
from conversations.testing.fake_openai import FakeOpenAI, parse_directive

USER = [{"role": "user", "content": "Hello there, fake model"}]


def sync_client(fake, **kwargs) -> OpenAI:
    if kwargs:
        return OpenAI(
            base_url=fake.base_url, api_key="test-key", max_retries=0, **kwargs
        )
    return _shared_client(fake.base_url)


@functools.cache
def _shared_client(base_url: str) -> OpenAI:
    # building a client loads TLS certificates (~0.1 s): share the plain one
    return OpenAI(base_url=base_url, api_key="test-key", max_retries=0)


http = httpx2.Client()


def async_client(fake, **kwargs) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=fake.base_url, api_key="test-key", max_retries=0, **kwargs
    )


def stream_text(client: OpenAI, messages=USER, **kwargs) -> tuple[str, list]:
    chunks = list(
        client.chat.completions.create(
            model="fake-model", messages=messages, stream=True, **kwargs
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_fixture_points_settings_at_the_fake(fake_openai):
    assert fake_openai.base_url == django_settings.OPENAI_BASE_URL
    assert django_settings.OPENAI_API_KEY == "test-key"
    assert django_settings.CHAT_MODELS == "fake-model:8192,fake-small:2048"
    assert django_settings.DEFAULT_CHAT_MODEL == "fake-model"
    assert django_settings.IMAGE_MODEL == "fake-image"
    assert fake_openai_env(fake_openai)["OPENAI_BASE_URL"] == fake_openai.base_url


def test_stream_sends_one_chunk_per_token_then_usage(fake_openai):
    # given
    fake_openai.configure(tokens=4)

    # when
    text, chunks = stream_text(
        sync_client(fake_openai), stream_options={"include_usage": True}
    )

    # then
    assert text == "tok0 tok1 tok2 tok3"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:5]] == [
        "tok0",
        " tok1",
        " tok2",
        " tok3",
    ]
    assert chunks[5].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].usage.prompt_tokens > 0
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 4
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    [request] = fake_openai.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["messages"] == USER
    assert fake_openai.chat_requests == [request["body"]]


def test_stream_without_include_usage_has_no_usage_chunk(fake_openai):
    fake_openai.configure(tokens=2)

    _, chunks = stream_text(sync_client(fake_openai))

    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_stream_is_paced_by_tokens_per_second(fake_openai):
    # given 11 tokens at 100 per second: the last is due 100 ms after the first
    fake_openai.configure(tokens=11, tps=100)
    client = async_client(fake_openai)

    # when
    arrivals = []
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="fake-model", messages=USER, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())

    # then the schedule is absolute: a late first token lets the rest catch up
    assert len(arrivals) == 11
    assert arrivals[-1] - started >= 0.1
    assert arrivals[-1] - arrivals[0] >= 0.05
    assert fake_openai.lateness.writes >= 1


async def test_first_token_delay_holds_the_first_chunk(fake_openai):
    fake_openai.configure(tokens=2, first_token_delay=0.3)
    client = async_client(fake_openai)

    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="fake-model", messages=USER, stream=True
    )
    async for _ in stream:
        break

    assert time.monotonic() - started >= 0.29


def test_non_streamed_completion_has_the_whole_text_and_usage(fake_openai):
    fake_openai.configure(text="Hello from the fake.")

    completion = sync_client(fake_openai).chat.completions.create(
        model="fake-small", messages=USER
    )

    assert completion.object == "chat.completion"
    assert completion.model == "fake-small"
    assert completion.choices[0].message.content == "Hello from the fake."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 4


def test_max_tokens_cuts_the_reply_with_finish_reason_length(fake_openai):
    fake_openai.configure(tokens=10)

    completion = sync_client(fake_openai).chat.completions.create(
        model="fake-model", messages=USER, max_tokens=3
    )

    assert completion.choices[0].message.content == "tok0 tok1 tok2"
    assert completion.choices[0].finish_reason == "length"


def test_remote_control_endpoints_configure_and_reset(fake_openai):
    root = fake_openai.base_url.removesuffix("/v1")
    http.post(f"{root}/_fake/configure", json={"text": "remote"})
    assert stream_text(sync_client(fake_openai))[0] == "remote"

    http.post(f"{root}/_fake/reset")

    assert fake_openai.requests == []
    assert stream_text(sync_client(fake_openai))[0].startswith("tok0 tok1")


def test_explicit_text_is_split_by_words_or_by_chunk_chars(fake_openai):
    client = sync_client(fake_openai)
    fake_openai.configure(text="Hi there, friend")

    _, by_words = stream_text(client)
    fake_openai.configure(chunk_chars=3)
    _, by_chars = stream_text(client)

    assert [c.choices[0].delta.content for c in by_words[1:-1]] == [
        "Hi",
        " there,",
        " friend",
    ]
    assert [c.choices[0].delta.content for c in by_chars[1:-1]] == [
        "Hi ",
        "the",
        "re,",
        " fr",
        "ien",
        "d",
    ]


def test_stream_tool_call_chunks_assemble_into_one_call(fake_openai):
    # given
    fake_openai.configure(
        tool_call={"name": "generate_image", "arguments": {"prompt": "a red fox"}}
    )

    # when
    _, chunks = stream_text(sync_client(fake_openai))

    # then
    deltas = [
        call
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
        for call in c.choices[0].delta.tool_calls
    ]
    assert len(deltas) == 3
    assert {d.index for d in deltas} == {0}
    assert deltas[0].id.startswith("call_")
    assert deltas[0].type == "function"
    assert deltas[0].function.name == "generate_image"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"prompt": "a red fox"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_result_in_the_request_gets_a_text_reply(fake_openai):
    # given the model asked for a tool and the tool answered
    fake_openai.configure(
        tool_call={"name": "generate_image", "arguments": {"prompt": "fox"}},
        tokens=3,
    )
    client = sync_client(fake_openai)
    first = client.chat.completions.create(model="fake-model", messages=USER)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *USER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "image 1 made"},
    ]

    # when
    text, chunks = stream_text(client, messages=messages)

    # then
    assert first.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"prompt": "fox"}
    assert text == "tok0 tok1 tok2"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_http_429_raises_rate_limit_error_with_retry_after_zero(fake_openai):
    fake_openai.configure(fault="http_429")

    with pytest.raises(openai.RateLimitError) as caught:
        stream_text(sync_client(fake_openai))

    assert caught.value.response.headers["retry-after"] == "0"
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.body["type"] == "requests"


def test_fault_times_fails_only_the_first_requests(fake_openai):
    # given
    fake_openai.configure(fault="http_500", fault_times=1, tokens=2)
    client = sync_client(fake_openai)

    # when / then
    with pytest.raises(openai.InternalServerError):
        stream_text(client)
    assert stream_text(client)[0] == "tok0 tok1"
    assert len(fake_openai.requests) == 2


def test_sdk_retry_sees_a_500_then_success(fake_openai):
    fake_openai.configure(fault="http_429", fault_times=1, tokens=2)
    client = OpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=1)

    text, _ = stream_text(client)

    assert text == "tok0 tok1"
    assert len(fake_openai.requests) == 2


def test_error_after_raises_api_error_after_the_first_chunks(fake_openai):
    fake_openai.configure(fault="error_after:3")
    received = []

    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in sync_client(fake_openai).chat.completions.create(
            model="fake-model", messages=USER, stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "tok0 tok1 tok2"


def test_drop_after_cuts_the_connection_without_closing_the_stream(fake_openai):
    fake_openai.configure(fault="drop_after:2")
    received = []

    with pytest.raises(openai.APIConnectionError):
        for chunk in sync_client(fake_openai).chat.completions.create(
            model="fake-model", messages=USER, stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "tok0 tok1"
    assert fake_openai.closed_early == []


async def test_stall_times_out_on_the_client_and_is_seen_closed_early(fake_openai):
    # given
    fake_openai.configure(fault="stall_after:2")
    client = async_client(fake_openai, timeout=httpx2.Timeout(5, read=0.3))
    received = []

    # when
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        stream = await client.chat.completions.create(
            model="fake-model", messages=USER, stream=True
        )
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    await client.close()

    # then
    assert "".join(received) == "tok0 tok1"
    assert time.monotonic() - started < 2
    [(index, _)] = await fake_openai.async_wait_for(lambda: fake_openai.closed_early)
    assert index == 0
    assert fake_openai.open_streams == 0


def test_content_filter_fault_ends_with_that_finish_reason(fake_openai):
    fake_openai.configure(fault="content_filter", tokens=2)

    _, chunks = stream_text(sync_client(fake_openai))

    assert chunks[-1].choices[0].finish_reason == "content_filter"


async def test_closing_the_stream_midway_is_recorded_within_a_second(fake_openai):
    # given a slow stream
    fake_openai.configure(tokens=100, tps=20)
    client = async_client(fake_openai)
    stream = await client.chat.completions.create(
        model="fake-model", messages=USER, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content == " tok2":
            break
    assert fake_openai.open_streams == 1

    # when
    closed_at = time.monotonic()
    await stream.close()

    # then
    [(index, seen_at)] = await fake_openai.async_wait_for(
        lambda: fake_openai.closed_early, timeout=1
    )
    assert index == 0
    assert seen_at - closed_at < 1
    await fake_openai.async_wait_for(lambda: fake_openai.open_streams == 0, timeout=1)


def test_finished_streams_are_not_closed_early(fake_openai):
    fake_openai.configure(tokens=3)

    stream_text(sync_client(fake_openai))
    time.sleep(0.05)

    assert fake_openai.closed_early == []
    assert fake_openai.open_streams == 0


def test_directive_in_last_user_message_overrides_the_defaults(fake_openai):
    # given
    fake_openai.configure(tokens=30)
    messages = [
        {"role": "user", "content": "[[fake tokens=9]] an older message"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": 'Draw it [[fake text="A fox." tps=1000]]'},
    ]

    # when
    text, _ = stream_text(sync_client(fake_openai), messages=messages)

    # then
    assert text == "A fox."


def test_directive_asks_for_a_tool_call(fake_openai):
    messages = [
        {"role": "user", "content": '[[fake tool=generate_image prompt="a red fox"]]'}
    ]

    completion = sync_client(fake_openai).chat.completions.create(
        model="fake-model", messages=messages
    )

    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "generate_image"
    assert json.loads(call.function.arguments) == {"prompt": "a red fox"}


def test_directive_fault_times_counts_per_message(fake_openai):
    client = sync_client(fake_openai)
    messages = [{"role": "user", "content": "[[fake fault=http_500 fault_times=1]]"}]

    with pytest.raises(openai.InternalServerError):
        stream_text(client, messages=messages)
    stream_text(client, messages=messages)


def test_parse_directive_reads_every_key():
    assert parse_directive(
        "x [[fake tokens=20 tps=100 fault=drop_after:5 delay=0.5 echo]] y"
    ) == {
        "tokens": 20,
        "tps": 100.0,
        "fault": "drop_after:5",
        "first_token_delay": 0.5,
        "echo": True,
    }
    assert parse_directive("""[[fake tool=lookup args='{"q": "x"}']]""") == {
        "tool_call": {"name": "lookup", "arguments": {"q": "x"}}
    }
    assert parse_directive("no directive here") == {}
    with pytest.raises(ValueError):
        parse_directive("[[fake fault=explode]]")


def test_bad_directive_is_a_400(fake_openai):
    messages = [{"role": "user", "content": "[[fake colour=blue]]"}]

    with pytest.raises(openai.BadRequestError, match="colour"):
        stream_text(sync_client(fake_openai), messages=messages)


def test_echo_replies_with_the_user_message(fake_openai):
    messages = [{"role": "user", "content": "say this back [[fake echo]]"}]

    text, _ = stream_text(sync_client(fake_openai), messages=messages)

    assert text == "say this back"


def test_script_serves_entries_in_order_then_defaults(fake_openai):
    fake_openai.configure(tokens=1)
    fake_openai.script([{"text": "first"}, {"fault": "http_500"}])
    client = sync_client(fake_openai)

    assert stream_text(client)[0] == "first"
    with pytest.raises(openai.InternalServerError):
        stream_text(client)
    assert stream_text(client)[0] == "tok0"


def test_responder_decides_from_the_request_body(fake_openai):
    def responder(body):
        if "summar" in body["messages"][0]["content"]:
            return {"text": "Summary: they talked."}
        return None

    fake_openai.responder = responder
    client = sync_client(fake_openai)
    fake_openai.configure(tokens=2)

    summary = client.chat.completions.create(
        model="fake-small",
        messages=[{"role": "system", "content": "Write a summary."}, *USER],
    )
    reply, _ = stream_text(client)

    assert summary.choices[0].message.content == "Summary: they talked."
    assert reply == "tok0 tok1"


def test_reset_forgets_everything_and_cuts_open_streams(fake_openai):
    # given a stalled stream and some configuration
    fake_openai.configure(fault="stall_after:1", tokens=99)
    fake_openai.script([{"text": "unused"}, {"text": "unused"}])
    client = sync_client(fake_openai, timeout=5)
    stream = client.chat.completions.create(
        model="fake-model", messages=USER, stream=True
    )
    next(stream)
    fake_openai.wait_for(lambda: fake_openai.open_streams == 1)

    # when
    fake_openai.reset()

    # then
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    fake_openai.wait_for(lambda: fake_openai.open_streams == 0)
    assert fake_openai.requests == []
    assert fake_openai.closed_early == []
    assert stream_text(client)[0].startswith("tok0 tok1")


def test_images_b64_is_a_png_at_a_quarter_of_the_size(fake_openai):
    result = sync_client(fake_openai).images.generate(
        model="fake-image", prompt="a red fox", size="1536x1024"
    )

    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.format == "PNG"
    assert image.size == (384, 256)
    assert "a red fox" in result.data[0].revised_prompt
    assert fake_openai.requests[0]["path"] == "/v1/images/generations"
    assert fake_openai.requests[0]["body"]["size"] == "1536x1024"


def test_images_url_mode_serves_the_png(fake_openai):
    fake_openai.configure(image_mode="url")

    result = sync_client(fake_openai).images.generate(
        model="fake-image", prompt="a blue whale"
    )
    response = http.get(result.data[0].url)

    assert result.data[0].b64_json is None
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (256, 256)


def test_images_policy_prompt_is_refused_like_openai(fake_openai):
    with pytest.raises(openai.BadRequestError) as caught:
        sync_client(fake_openai).images.generate(
            model="fake-image", prompt="something [[policy]]"
        )

    assert caught.value.code == "content_policy_violation"
    assert caught.value.body["type"] == "invalid_request_error"
    assert "safety system" in caught.value.message


def test_images_500_prompt_fails(fake_openai):
    with pytest.raises(openai.InternalServerError):
        sync_client(fake_openai).images.generate(
            model="fake-image", prompt="[[500]] a cat"
        )


def test_models_lists_the_configured_names(fake_openai):
    fake_openai.configure(models=["a-model", "b-model"])

    models = sync_client(fake_openai).models.list()

    assert [m.id for m in models.data] == ["a-model", "b-model"]


def test_strict_models_refuses_unknown_models(fake_openai):
    fake_openai.configure(strict_models=True)

    with pytest.raises(openai.NotFoundError):
        sync_client(fake_openai).chat.completions.create(
            model="gpt-unknown", messages=USER
        )


def test_a_body_that_is_not_a_json_object_is_a_400(fake_openai):
    url = f"{fake_openai.base_url}/chat/completions"

    not_json = http.post(url, content=b"{nope")
    a_list = http.post(url, json=[1, 2])

    assert not_json.status_code == a_list.status_code == 400
    assert a_list.json()["error"]["type"] == "invalid_request_error"


def test_configure_rejects_unknown_keys(fake_openai):
    with pytest.raises(TypeError):
        fake_openai.configure(colour="blue")


async def test_hundred_concurrent_paced_streams_finish_on_time():
    # given 100 streams of 5 tokens at 50/s: each takes 80 ms upstream
    with FakeOpenAI(tokens=5, tps=50, record=False) as fake:
        client = async_client(fake)

        async def one() -> str:
            stream = await client.chat.completions.create(
                model="fake-model", messages=USER, stream=True
            )
            return "".join(
                [c.choices[0].delta.content or "" async for c in stream if c.choices]
            )

        # when
        started = time.monotonic()
        texts = await asyncio.gather(*(one() for _ in range(100)))
        elapsed = time.monotonic() - started

        # then
        assert set(texts) == {"tok0 tok1 tok2 tok3 tok4"}
        assert elapsed < 10  # the SDK client in this process dominates the time
        assert fake.request_count == 100
        assert fake.requests == []
        assert fake.open_streams == 0
        assert fake.lateness.writes > 0


def test_command_line_server_streams(tmp_path):
    # given
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conversations.testing.fake_openai",
            "--port",
            str(port),
            "--tokens",
            "3",
        ],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc=proc)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k")

        # when
        text, _ = stream_text(client)
        http.post(f"http://127.0.0.1:{port}/_fake/configure", json={"text": "remote"})
        remote, _ = stream_text(client)
        stats = http.get(f"http://127.0.0.1:{port}/_fake/stats").json()

        # then
        assert text == "tok0 tok1 tok2"
        assert remote == "remote"
        assert stats["requests"] == 2
    finally:
        proc.terminate()
        proc.wait(5)
