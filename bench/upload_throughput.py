"""Upload throughput and the server's memory while it receives a large attachment.

    .venv/bin/python bench/upload_throughput.py [--mb 50] [--runs 3] [--methods PUT,POST] [--kind text|pdf]

Starts one daphne process (deploy/cluster.py, PostgreSQL `chatsite_bench`, Redis db 6,
media in a temporary folder), logs a user in, and POSTs a `--mb` MB document to
/attachments/ as the page does (multipart PUT, CSRF header; POST for comparison),
streaming the body from disk. Meanwhile it samples the server's RSS every 10 ms. Reports per run: seconds,
MB/s, the server's RSS before, at its peak and after, and what the server kept
(the stored file's size). Results: bench/results/upload_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    django_setup,
    make_clients,
    markdown_table,
    rss_kb,
    server,
    write_results,
)

CHUNK = 256 * 1024


def make_document(path: Path, megabytes: int) -> None:
    line = b"The quarterly report lists revenue, costs and the outlook per region.\n"
    with path.open("wb") as out:
        total = megabytes * 1024 * 1024
        while out.tell() < total:
            out.write(line * 1000)


def upload(
    port: int, session_key: str, path: Path, name: str, method: str
) -> tuple[int, bytes]:
    """Send `path` as multipart field `file`, streamed from disk in CHUNK pieces."""
    boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size
    token = secrets.token_hex(16)  # 32 chars: a valid unmasked CSRF secret
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.putrequest(method, "/attachments/")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.putheader("Cookie", f"sessionid={session_key}; csrftoken={token}")
    conn.putheader("X-CSRFToken", token)
    conn.putheader("Accept", "application/json")
    conn.endheaders()
    conn.send(head)
    with path.open("rb") as body:
        while chunk := body.read(CHUNK):
            conn.send(chunk)
    conn.send(tail)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.01)


def measure(
    backend, session_key: str, document: Path, method: str, media: Path
) -> dict:
    size = document.stat().st_size
    time.sleep(1.0)
    before = rss_kb(backend.pid)
    sampler = Sampler(backend.pid)
    sampler.start()
    start = time.perf_counter()
    status, body = upload(backend.port, session_key, document, "report.txt", method)
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    time.sleep(1.0)
    after = rss_kb(backend.pid)
    if status != 201:
        raise SystemExit(f"upload failed: HTTP {status} {body[:300]!r}")
    stored = sum(f.stat().st_size for f in media.rglob("*") if f.is_file())
    return {
        "mb": round(size / 1024**2, 1),
        "seconds": round(seconds, 2),
        "mb_per_s": round(size / 1024**2 / seconds, 1),
        "rss_before_mb": round(before / 1024, 1),
        "rss_peak_mb": round(sampler.peak / 1024, 1),
        "rss_growth_mb": round((sampler.peak - before) / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "stored_mb_total": round(stored / 1024**2, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--methods", default="PUT,POST")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    media = Path(tempfile.mkdtemp(prefix="chatsite-bench-media-"))
    document = media.parent / f"chatsite-bench-upload-{os.getpid()}.txt"
    make_document(document, args.mb)
    size = document.stat().st_size
    limit = str(size + 1024 * 1024)
    env = {
        "MEDIA_ROOT": str(media),
        "ATTACHMENT_MAX_FILE_BYTES": limit,
        "ATTACHMENT_MAX_MESSAGE_BYTES": limit,
        "ATTACHMENT_DAILY_BYTES": "0",
    }
    rows, runs = [], []
    # The servers must validate the sessions made here: one key for both.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    django_setup(database_url, redis_url)
    # A fresh server per method: memory an earlier upload left to the allocator
    # would otherwise hide the next one's growth.
    for method in args.methods.split(","):
        with server(
            procs=1,
            through_nginx=False,
            base_url="http://127.0.0.1:9/v1",
            database_url=database_url,
            redis_url=redis_url,
            extra_env=env,
        ) as (cluster, _ws, _http):
            ((session_key, _dialogue),) = make_clients(1, prefix="bench-upload")
            backend = cluster.backends[0]
            for run in range(1, args.runs + 1):
                result = measure(backend, session_key, document, method, media)
                result = {"method": method, "run": run, **result}
                runs.append(result)
                rows.append(list(result.values()))
                print(result, flush=True)
    document.unlink(missing_ok=True)
    headers = list(runs[0])
    table = markdown_table(headers, rows)
    for method in args.methods.split(","):
        mine = [r for r in runs if r["method"] == method]
        table += (
            f"\n{method}: median {statistics.median(r['mb_per_s'] for r in mine)} MB/s, "
            f"largest RSS growth during an upload {max(r['rss_growth_mb'] for r in mine)} MB."
        )
    table += (
        "\n\nCommand: `.venv/bin/python bench/upload_throughput.py "
        f"--mb {args.mb} --runs {args.runs} --methods {args.methods}`\n"
    )
    path = write_results("upload_throughput", {"runs": runs, "mb": args.mb}, table)
    print(table)
    print(f"written {path}")


if __name__ == "__main__":
    main()
