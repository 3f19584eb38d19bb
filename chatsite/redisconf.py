"""Connection options shared by the channel layer and the live store."""

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

# After a Redis restart every pooled connection is dead: a command on one fails once
# and is retried on a fresh connection (with `health_check_interval` pinging idle ones).
HEALTH_CHECK_INTERVAL = 5


def redis_retry() -> Retry:
    return Retry(
        ExponentialBackoff(cap=1.0, base=0.05), 4, (ConnectionError, TimeoutError)
    )
