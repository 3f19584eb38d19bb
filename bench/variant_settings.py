"""Settings variants for A/B benchmarks, without touching chatsite/settings.py:

    DJANGO_SETTINGS_MODULE=bench.variant_settings BENCH_CONN_HEALTH_CHECKS=false ...

(stream_sweep.py --variant KEY=VALUE sets both for the server processes).
"""

import os

from chatsite.settings import *  # noqa: F403
from chatsite.settings import DATABASES

if os.environ.get("BENCH_CONN_HEALTH_CHECKS", "").lower() == "false":
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
