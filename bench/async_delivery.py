"""The `async` scenario: CloudEvents accepted durably through the events port, then delivered.

wrk POSTs structured CloudEvents (unique ids) to eventgate, which has one async subscription to
an nginx backend (`cloudevents` mode). Every 202 is sent only after the event is fsynced (group
commit), while the dispatcher delivers at the same time. Figures:
- accepted events/s and p50/p99 time to 202, as wrk measured them;
- end-to-end delivery rate: events delivered / time from wrk's start to the last delivery, and
  the drain rate once wrk has stopped (delivery alone, without ingress sharing the core);
- then the same in batched mode, ten events per request: the queue's durable rate once the
  per-request HTTP work is shared;
- the reference, measured in the same run on the same disk: SQLite committing one row per
  fsynced transaction (WAL, synchronous=FULL), and its p50/p99 commit time.
"""

import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import Processes, post_json, run_wrk
from queue_append import reference

LUA = """
math.randomseed(os.time())
local prefix = tostring(math.random(1, 1000000000))
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/cloudevents+json"
request = function()
  counter = counter + 1
  local body = string.format(
    '{"specversion":"1.0","id":"%s-%d","source":"/bench","type":"bench.created",' ..
    '"data":{"n":%d,"pad":"0123456789abcdef0123456789abcdef"}}', prefix, counter, counter)
  return wrk.format(nil, "/", nil, body)
end
"""
BATCH = 10
LUA_BATCH = """
math.randomseed(os.time() + 1)
local prefix = "b" .. tostring(math.random(1, 1000000000))
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/cloudevents-batch+json"
request = function()
  local events = {}
  for i = 1, BATCH do
    counter = counter + 1
    events[i] = string.format(
      '{"specversion":"1.0","id":"%s-%d","source":"/bench","type":"bench.created",' ..
      '"data":{"n":%d,"pad":"0123456789abcdef0123456789abcdef"}}', prefix, counter, counter)
  end
  return wrk.format(nil, "/", nil, "[" .. table.concat(events, ",") .. "]")
end
""".replace("BATCH", str(BATCH))


def sqlite_reference(directory: Path, seconds: float) -> dict[str, float]:
    """SQLite alone on the same disk: one INSERT per fsynced transaction, for `seconds`."""
    rate, latencies = reference(directory, seconds, b"x" * 160)
    cuts = statistics.quantiles(latencies, n=100)
    return {"commits_per_second": rate, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


def metric_total(config_port: int, name: str) -> float:
    """The sum of a counter's samples on `/v1/metrics`."""
    url = f"http://127.0.0.1:{config_port}/v1/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def subscribe_sink(config: int, backend: int) -> None:
    """Register the nginx backend as `sink`, subscribed async to `bench.created`."""
    base = f"http://127.0.0.1:{config}/v1/spaces/default"
    post_json(
        f"{base}/functions",
        {"functionId": "sink", "type": "http",
         "provider": {"url": f"http://127.0.0.1:{backend}/", "mode": "cloudevents"}},
    )  # fmt: skip
    post_json(
        f"{base}/subscriptions",
        {"type": "async", "eventType": "bench.created", "functionId": "sink",
         "delivery": {"concurrency": 64}},
    )  # fmt: skip


def async_scenario(seconds: int, connections: int) -> dict[str, object]:
    processes = Processes()
    try:
        backend = processes.backend()
        events, config = processes.eventgate()
        subscribe_sink(config, backend)
        with tempfile.TemporaryDirectory(dir=processes.scratch) as name:
            reference = sqlite_reference(Path(name), seconds)
        script = processes.scratch / "cloudevents.lua"
        script.write_text(LUA)
        started = time.monotonic()
        accepted = run_wrk(
            f"http://127.0.0.1:{events}/", connections=connections, seconds=seconds, script=script
        )
        wrk_done = time.monotonic()
        at_wrk_end = metric_total(config, "eventgate_deliveries_delivered_total")
        deadline = time.monotonic() + 300
        while True:  # requests wrk left in flight may still be committing: re-read both
            total = metric_total(config, "eventgate_events_accepted_total")
            delivered = metric_total(config, "eventgate_deliveries_delivered_total")
            if delivered >= total or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # each look costs the node ~3 ms of its loop: not too often
        finished = time.monotonic()
        elapsed = finished - started
        drain_rate = (delivered - at_wrk_end) / max(finished - wrk_done, 1e-3)
        script.write_text(LUA_BATCH)  # the same, ten events per request (batched mode)
        batched = run_wrk(
            f"http://127.0.0.1:{events}/", connections=connections, seconds=seconds, script=script
        )
    finally:
        processes.close()
    return {
        "scenario": "async",
        "reference_sqlite": reference,
        "accepted": {
            "events_per_second": accepted.requests_per_second,
            "p50_ms": accepted.p50_ms,
            "p99_ms": accepted.p99_ms,
            "errors": accepted.errors,
            "events": total,
        },
        "accepted_batched": {
            "events_per_second": batched.requests_per_second * BATCH,
            "p50_ms": batched.p50_ms,
            "p99_ms": batched.p99_ms,
            "errors": batched.errors,
        },
        "delivered": {
            "events": delivered,
            "events_per_second": delivered / elapsed,
            "drain_events_per_second": drain_rate,
            "during_wrk": at_wrk_end,
        },
        "accepted_vs_reference": accepted.requests_per_second / reference["commits_per_second"],
        "delivered_vs_reference": delivered / elapsed / reference["commits_per_second"],
        "batched_vs_reference": batched.requests_per_second
        * BATCH
        / reference["commits_per_second"],
    }


def report(result: dict[str, object], seconds: int, connections: int) -> None:
    reference: dict[str, float] = result["reference_sqlite"]  # type: ignore[assignment]
    accepted: dict[str, float] = result["accepted"]  # type: ignore[assignment]
    delivered: dict[str, float] = result["delivered"]  # type: ignore[assignment]
    print(f"async (CloudEvents, {connections} connections, {seconds}s, fsync per 202):")
    print(
        f"  reference  {reference['commits_per_second']:>10,.0f} commits/s"
        f"  p50 {reference['p50_ms']:7.3f} ms   p99 {reference['p99_ms']:7.3f} ms"
        "   (SQLite, one row per fsynced transaction)"
    )
    print(
        f"  accepted   {accepted['events_per_second']:>10,.0f} events/s "
        f"  p50 {accepted['p50_ms']:7.3f} ms   p99 {accepted['p99_ms']:7.3f} ms"
        f"   (time to 202; errors {accepted['errors']:.0f})"
    )
    print(
        f"  delivered  {delivered['events_per_second']:>10,.0f} events/s "
        f"  {delivered['events']:,.0f} of {accepted['events']:,.0f} accepted, to nginx"
        f" ({delivered['during_wrk']:,.0f} while wrk ran)"
    )
    print(
        f"  draining   {delivered['drain_events_per_second']:>10,.0f} events/s "
        "  the backlog after wrk stopped (delivery alone)"
    )
    batched: dict[str, float] = result["accepted_batched"]  # type: ignore[assignment]
    print(
        f"  batched    {batched['events_per_second']:>10,.0f} events/s "
        f"  p50 {batched['p50_ms']:7.3f} ms   p99 {batched['p99_ms']:7.3f} ms"
        f"   ({BATCH} events per request, time to 202; errors {batched['errors']:.0f})"
    )
    print(
        f"  accepted/reference {result['accepted_vs_reference']:.2f}x;"
        f" delivered/reference {result['delivered_vs_reference']:.2f}x;"
        f" batched/reference {result['batched_vs_reference']:.2f}x"
    )
