"""Settings variants for A/B benchmarks, without touching chatsite/settings.py:

    DJANGO_SETTINGS_MODULE=bench.variant_settings BENCH_CONN_HEALTH_CHECKS=false ...

(stream_sweep.py --variant KEY=VALUE sets both for the server processes).
"""

import os

from chatsite.settings import *  # noqa: F403
from chatsite.settings import DATABASES

if os.environ.get("BENCH_CONN_HEALTH_CHECKS", "").lower() == "false":
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False

if os.environ.get("BENCH_DB_THREADS"):
    # Run database_sync_to_async calls on a pool of threads (each with its own
    # connection) instead of asgiref's single thread-sensitive one.
    from concurrent.futures import ThreadPoolExecutor

    import channels.db

    _pool = ThreadPoolExecutor(
        max_workers=int(os.environ["BENCH_DB_THREADS"]), thread_name_prefix="db"
    )

    class _PooledDatabaseSyncToAsync(channels.db.DatabaseSyncToAsync):
        def __init__(self, func, thread_sensitive=True, executor=None):
            super().__init__(func, thread_sensitive=False, executor=_pool)

    def _pooled(func=None, *, thread_sensitive=True, executor=None):
        if func is None:
            return lambda f: _PooledDatabaseSyncToAsync(f)
        return _PooledDatabaseSyncToAsync(func)

    channels.db.database_sync_to_async = _pooled

if os.environ.get("BENCH_AIOHTTP", "").lower() == "true":
    # The SDK's aiohttp transport instead of its default httpx2 one.
    import openai

    openai.DefaultAsyncHttpxClient = openai.DefaultAioHttpClient

if os.environ.get("BENCH_GC_THRESHOLD"):
    import gc

    gc.set_threshold(*(int(x) for x in os.environ["BENCH_GC_THRESHOLD"].split(",")))

if os.environ.get("BENCH_SWITCH_INTERVAL"):
    import sys

    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

if os.environ.get("BENCH_YAPPI"):
    # CPU profile of every thread for a window of the run (pip install yappi).
    import threading
    import time as _time

    def _yappi() -> None:
        import yappi

        # Starts when the file <BENCH_YAPPI>.go appears; runs BENCH_YAPPI_SECONDS.
        seconds = float(os.environ.get("BENCH_YAPPI_SECONDS", "4"))
        while not os.path.exists(os.environ["BENCH_YAPPI"] + ".go"):
            _time.sleep(0.1)
        yappi.set_clock_type("cpu")
        yappi.start(builtins=False)
        _time.sleep(seconds)
        yappi.stop()
        with open(os.environ["BENCH_YAPPI"], "w") as out:
            yappi.get_func_stats().sort("tsub").print_all(
                out=out,
                columns={
                    0: ("name", 90),
                    1: ("ncall", 10),
                    2: ("tsub", 8),
                    3: ("ttot", 8),
                    4: ("tavg", 8),
                },
            )

    threading.Thread(target=_yappi, daemon=True).start()

if os.environ.get("BENCH_GC_STATS"):
    # Time spent in the cyclic garbage collector, per generation, written every 2 s.
    import gc
    import json
    import threading
    import time as _time

    _gc = {"start": 0.0, "seconds": [0.0, 0.0, 0.0], "count": [0, 0, 0], "max": 0.0}

    def _gc_callback(phase: str, info: dict) -> None:
        if phase == "start":
            _gc["start"] = _time.perf_counter()
        else:
            spent = _time.perf_counter() - _gc["start"]
            _gc["seconds"][info["generation"]] += spent
            _gc["count"][info["generation"]] += 1
            _gc["max"] = max(_gc["max"], spent)

    gc.callbacks.append(_gc_callback)

    def _gc_write() -> None:
        while True:
            _time.sleep(2)
            _gc["objects"] = [len(gc.get_objects(g)) for g in range(3)]
            _gc["frozen"] = gc.get_freeze_count()
            with open(os.environ["BENCH_GC_STATS"], "w") as out:
                json.dump(_gc, out)

    threading.Thread(target=_gc_write, daemon=True).start()

if os.environ.get("BENCH_GC_FREEZE"):
    import gc
    import threading
    import time as _time

    def _freeze() -> None:
        _time.sleep(float(os.environ["BENCH_GC_FREEZE"]))
        gc.collect()
        gc.freeze()

    threading.Thread(target=_freeze, daemon=True).start()
