"""Events-port request metrics counted without locks and exported on scrape, and the view that
adds the other workers' metrics to the primary's `/v1/metrics`."""

import json
import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from eventgate.observability.metrics import LATENCY_BUCKETS, Metrics
from eventgate.workers import STALE_AFTER, WorkersView, snapshot


def test_requests_latencies_and_events_are_exported_as_prometheus_families() -> None:
    metrics = Metrics()
    record = metrics.requests.record
    record("GET", "/users/:id", "users", "default", 200, 0.0004)
    record("GET", "/users/:id", "users", "default", 200, 0.003)
    record("POST", "/users/:id", "users", "default", 502, 100.0)
    record("BREW", "", "", "", 404, 0.0001)  # an unknown method counts as OTHER
    value = metrics.registry.get_sample_value
    requests = "eventgate_events_requests_total"
    assert value(requests, {"method": "GET", "route": "/users/:id", "function": "users",
                            "status": "200"}) == 2  # fmt: skip
    assert value(requests, {"method": "OTHER", "route": "", "function": "", "status": "404"}) == 1
    latency = "eventgate_events_request_duration_seconds"
    labels = {"route": "/users/:id", "function": "users"}
    assert value(f"{latency}_count", labels) == 3
    assert value(f"{latency}_sum", labels) == 100.0034
    assert value(f"{latency}_bucket", {**labels, "le": "0.0005"}) == 1
    assert value(f"{latency}_bucket", {**labels, "le": "0.004"}) == 2
    assert value(f"{latency}_bucket", {**labels, "le": str(LATENCY_BUCKETS[-1])}) == 2
    assert value(f"{latency}_bucket", {**labels, "le": "+Inf"}) == 3
    received = "eventgateway_events_received_total"
    assert value(received, {"space": "default", "type": "http.request"}) == 3  # routed ones
    text = metrics.render().decode()
    assert "# TYPE eventgate_events_request_duration_seconds histogram" in text


def registry_with(requests: float, depth: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("calls", "Calls.", ["kind"], registry=registry).labels("a").inc(requests)
    Gauge("depth", "Queue depth.", registry=registry).set(depth)
    return registry


def test_the_primary_adds_the_other_workers_snapshots(tmp_path: Path) -> None:
    primary = registry_with(requests=2, depth=7)
    (tmp_path / "metrics-1.json").write_text(json.dumps(snapshot(registry_with(3, 5))))
    (tmp_path / "metrics-2.json").write_text(json.dumps(snapshot(registry_with(4, 9))))
    stale = tmp_path / "metrics-3.json"
    stale.write_text(json.dumps(snapshot(registry_with(1000, 1000))))
    old = time.time() - STALE_AFTER - 1
    os.utime(stale, (old, old))  # a worker that is gone
    view = {family.name: family for family in WorkersView(primary, tmp_path).collect()}
    calls = {sample.name: sample.value for sample in view["calls"].samples}
    assert calls["calls_total"] == 2 + 3 + 4  # counters add up
    (created,) = [
        sample.value
        for family in primary.collect()
        for sample in family.samples
        if sample.name == "calls_created"
    ]
    assert calls["calls_created"] == created  # the earliest: the primary's came first
    assert [sample.value for sample in view["depth"].samples] == [7]  # the primary's gauge


def test_the_metrics_endpoint_renders_through_the_view(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.requests.record("GET", "/", "fn", "default", 200, 0.001)
    other = Metrics()
    other.requests.record("GET", "/", "fn", "default", 200, 0.001)
    (tmp_path / "metrics-1.json").write_text(json.dumps(snapshot(other.registry)))
    metrics.view = WorkersView(metrics.registry, tmp_path)
    text = metrics.render().decode()
    line = next(line for line in text.splitlines() if line.startswith("eventgate_events_requests"))
    assert line.endswith(" 2.0")
