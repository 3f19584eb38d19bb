"""A fake OpenAI-compatible server for tests and benchmarks.

    with FakeOpenAI(tokens=20, tps=50) as fake:
        client = AsyncOpenAI(base_url=fake.base_url, api_key="test-key")

or `python -m conversations.testing.fake_openai --port 9100 --tokens 200 --tps 50`.
Behaviour keys and the `[[fake ...]]` directive are described in `behaviour`.
"""

from .behaviour import DEFAULTS, parse_directive
from .server import FakeOpenAI, async_wait_for, wait_for

__all__ = ["DEFAULTS", "FakeOpenAI", "async_wait_for", "parse_directive", "wait_for"]
