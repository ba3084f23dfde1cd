"""The retry policy of async deliveries: which answers are retried, and how long to wait.

Defaults for a subscription's `delivery` (each field may be set on its own):

| field | default | meaning |
|---|---|---|
| `retry` | 10 | retries after the first attempt (11 attempts in all) |
| `backoffPolicy` | `exponential` | retry n waits `delay * 2**(n-1)`; `linear`: `delay * n` |
| `backoffDelay` | `PT1S` | the first retry's wait (`delay` above) |
| `maxBackoff` | `PT5M` | no wait is longer, `Retry-After` included |
| `timeout` | the function's | one attempt's limit (provider `timeout`, else 5 s) |
| `concurrency` | 16 | deliveries of the subscription in flight at once |

With the defaults a delivery is retried for about 17 minutes before it becomes a dead letter.

Verdicts follow the Knative data-plane contract: 2xx is delivered; connection errors, timeouts,
404, 408, 409, 429 and 5xx are retried (a `Retry-After` in seconds or as an HTTP date replaces
the computed wait, up to `maxBackoff`); every other status (other 4xx, 1xx, 3xx) goes straight
to the dead letters.
"""

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum

from eventgate.model import DeliverySpec, parse_duration

DEFAULT_RETRY = 10
DEFAULT_BACKOFF_POLICY = "exponential"
DEFAULT_BACKOFF_DELAY = 1.0
DEFAULT_MAX_BACKOFF = 300.0
DEFAULT_CONCURRENCY = 16
RETRYABLE_4XX = frozenset((404, 408, 409, 429))


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAIL = "fail"


def verdict(status: int | None) -> Verdict:
    """What an answer means; None is no answer at all (connection error, timeout)."""
    if status is None or status >= 500 or status in RETRYABLE_4XX:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    return Verdict.FAIL


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A subscription's `delivery` with the defaults filled in; durations in seconds."""

    retry: int = DEFAULT_RETRY
    backoff_policy: str = DEFAULT_BACKOFF_POLICY
    backoff_delay: float = DEFAULT_BACKOFF_DELAY
    max_backoff: float = DEFAULT_MAX_BACKOFF
    timeout: float | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def of(cls, spec: DeliverySpec | None) -> "RetryPolicy":
        if spec is None:
            return DEFAULT_POLICY
        default = DEFAULT_POLICY
        return cls(
            retry=default.retry if spec.retry is None else spec.retry,
            backoff_policy=spec.backoff_policy or default.backoff_policy,
            backoff_delay=_seconds(spec.backoff_delay, default.backoff_delay),
            max_backoff=_seconds(spec.max_backoff, default.max_backoff),
            timeout=_seconds(spec.timeout, None),
            concurrency=spec.concurrency or default.concurrency,
        )

    def retries_left(self, attempts_made: int) -> bool:
        """Whether another attempt is allowed after `attempts_made` attempts."""
        return attempts_made <= self.retry

    def backoff(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1 for the first retry)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_backoff))
        if self.backoff_policy == "linear":
            delay = self.backoff_delay * retry_number
        else:
            delay = self.backoff_delay * 2 ** min(retry_number - 1, 62)
        return min(delay, self.max_backoff)


DEFAULT_POLICY = RetryPolicy()


def _seconds(text: str | None, default: float | None) -> float | None:
    return parse_duration(text) if text else default


def parse_retry_after(value: bytes | None, now: float | None = None) -> float | None:
    """A `Retry-After` header in seconds from now: delay-seconds or an HTTP date."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
