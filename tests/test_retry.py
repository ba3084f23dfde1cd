"""The retry policy: verdicts per status, backoff arithmetic, defaults, Retry-After."""

from email.utils import formatdate

import pytest

from eventgate.delivery.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    Verdict,
    parse_retry_after,
    verdict,
)
from eventgate.model import DeliverySpec


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (404, Verdict.RETRY),
        (408, Verdict.RETRY),
        (409, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (400, Verdict.FAIL),
        (401, Verdict.FAIL),
        (403, Verdict.FAIL),
        (410, Verdict.FAIL),
        (301, Verdict.FAIL),
    ],
)
def test_verdicts(status: int | None, expected: Verdict) -> None:
    assert verdict(status) is expected


def test_defaults() -> None:
    policy = RetryPolicy.of(None)
    assert policy is DEFAULT_POLICY
    assert (policy.retry, policy.backoff_policy, policy.concurrency) == (10, "exponential", 16)
    assert [policy.backoff(n) for n in (1, 2, 3, 9, 10)] == [1, 2, 4, 256, 300]
    assert policy.retries_left(10) and not policy.retries_left(11)


def test_a_spec_overrides_only_what_it_sets() -> None:
    spec = DeliverySpec.model_validate(
        {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.5S", "maxBackoff": "PT1.2S"}
    )
    policy = RetryPolicy.of(spec)
    assert [policy.backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 1.2]
    assert policy.concurrency == 16 and policy.timeout is None
    assert policy.retries_left(2) and not policy.retries_left(3)
    assert RetryPolicy.of(DeliverySpec.model_validate({"timeout": "PT3S"})).timeout == 3.0


def test_retry_after_replaces_the_backoff_up_to_the_maximum() -> None:
    policy = RetryPolicy.of(DeliverySpec.model_validate({"maxBackoff": "PT10S"}))
    assert policy.backoff(1, retry_after=7) == 7
    assert policy.backoff(1, retry_after=3600) == 10
    assert parse_retry_after(b"120") == 120
    assert parse_retry_after(formatdate(1_000_030, usegmt=True).encode(), now=1_000_000) == 30
    assert parse_retry_after(b"soon") is None and parse_retry_after(None) is None
