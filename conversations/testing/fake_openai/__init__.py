"""A fake OpenAI-compatible server for tests and benchmarks (aiohttp, real HTTP).

In tests, use the root conftest fixture `fake_openai` (one server per session,
reset() before and after each test, settings OPENAI_BASE_URL, OPENAI_API_KEY,
CHAT_MODELS, DEFAULT_CHAT_MODEL and IMAGE_MODEL pointed at it) and
`fake_openai_env(fake)` for daphne subprocesses. Standalone:

    with FakeOpenAI(tokens=20, tps=50) as fake:        # host, port=0, record=True
        client = AsyncOpenAI(base_url=fake.base_url, api_key="test-key")

    python -m conversations.testing.fake_openai --port 9100 --tokens 200 --tps 50
        [--first-token-delay S --text T --style lorem --fault F --fault-times N
         --image-mode url --models a,b --config '{"key": value}' --record]

Behaviour keys (`behaviour.DEFAULTS`; constructor kwargs, `configure(**kw)`,
`script([...])` entries, `responder(body)` return values, or the directive):
  tokens=30, tps=0 (0 = no pacing; absolute schedule), text=None, chunk_chars=0
  (0 = split text by words), style="tok" ("tok0 tok1 ...") | "lorem", echo=False,
  first_token_delay=0, fault=None, fault_times=0 (0 = every request),
  stall_seconds=3600, tool_call=None ({"name", "arguments": dict | str}),
  models=[...], strict_models=False, image_mode="b64_json" | "url",
  image_delay=0, image_fault=None | "policy" | "http_500".
Faults: http_429 (retry-after: 0), http_500, any http_NNN (before the first byte,
OpenAI-shaped JSON error), error_after:K (SSE error event after K chunks),
drop_after:K (TCP cut after K chunks), stall_after:K (silence after K chunks until
the client leaves or stall_seconds pass), content_filter.

Precedence per chat request: defaults < next script entry (else responder) <
directive. The directive is the last `[[fake ...]]` in the LAST user message:
  [[fake tokens=20 tps=100 fault=drop_after:5 fault_times=1 delay=0.5 echo]]
  [[fake text="Hello there" chunk_chars=3]]  [[fake style=lorem]]
  [[fake tool=generate_image prompt="a red fox"]]  [[fake tool=x args='{"q": 1}']]
A `tool` message after the last user message turns a tool_call into a text reply.
Image prompts: [[policy]] → 400 content_policy_violation, [[500]] → 500,
[[slow]] → 5 s. max_tokens / max_completion_tokens cut the reply (finish "length").

Inspection: fake.requests ([{"path", "body", "time" (monotonic)}]),
fake.chat_requests (bodies), fake.request_count, fake.open_streams,
fake.closed_early ([(request index, monotonic time)]), fake.lateness (its own
scheduling delay), fake.wait_for(pred, timeout) / await fake.async_wait_for(...),
fake.reset(). Over HTTP: GET /_fake/stats, POST /_fake/configure {...},
POST /_fake/script [...], POST /_fake/reset.
"""

from .behaviour import DEFAULTS, parse_directive
from .server import FakeOpenAI, async_wait_for, wait_for

__all__ = ["DEFAULTS", "FakeOpenAI", "async_wait_for", "parse_directive", "wait_for"]
