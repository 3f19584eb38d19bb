"""Random frames thrown at the consumer: every one is answered or ignored, none crashes
it, and the socket keeps serving."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conversations.protocol import CLIENT_TYPES

pytestmark = pytest.mark.django_db(transaction=True)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
frames = st.one_of(
    st.text(min_size=1, max_size=50),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                sorted(
                    CLIENT_TYPES
                    - {
                        "message.send",
                        "message.edit",
                        "image.generate",
                        "reply.regenerate",
                    }
                )
            )
        },
        optional={"dialogue": json_values, "before": json_values, "seq": json_values},
    ).map(json.dumps),
)


@hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(frames, min_size=1, max_size=8))
async def test_random_frames_never_crash_the_consumer(user_for_fuzz, batch):
    from conversations.tests.conftest import open_socket

    async with open_socket(user_for_fuzz) as ws:
        for text in batch:
            await ws.send_text(text)
        await ws.send({"type": "ping"})
        while True:
            frame = await ws.recv(timeout=5)
            assert frame["type"] in {
                "error",
                "pong",
                "dialogue.state",
                "dialogue.history",
            }
            if frame["type"] == "error":
                assert frame["code"] in {"bad_request", "not_found"}, frame
            if frame["type"] == "pong":
                break


@pytest.fixture
def user_for_fuzz(user):
    return user
