"""Prometheus metrics for both ports, in one registry that `/v1/metrics` serves.

Names keep the Event Gateway's `eventgateway_` prefix where it had the same metric, so its
Grafana dashboards keep working; eventgate's own additions use `eventgate_`.
"""

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from eventgate.observability.request_metrics import RequestCollector, RequestStats

LATENCY_BUCKETS = tuple(0.0005 * 2**n for n in range(16))
# Accepted to delivered can take minutes when retries are involved: 1 ms to ~70 min.
DELIVERY_BUCKETS = tuple(0.001 * 4**n for n in range(12))


class Metrics:
    """Every metric a node exports. One instance per node, passed to the parts that record."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.view: Any = self.registry
        """What `render` collects: the registry, or with several workers a view that adds the
        other workers' metrics (`eventgate.workers.WorkersView`)."""
        self.requests = RequestStats(LATENCY_BUCKETS)
        """Events-port requests, latencies and `http.request` events received (see
        `request_metrics.py`: counted without prometheus_client's locks, exported on scrape)."""
        self.registry.register(RequestCollector(self.requests))
        self.function_errors = Counter(
            "eventgate_function_errors_total",
            "Failed function calls, by reason (unreachable, timeout, malformed).",
            ["space", "function", "reason"],
            registry=self.registry,
        )
        self.config_requests = Counter(
            "eventgateway_config_requests_total",
            "Requests to the config API.",
            ["space", "resource", "operation", "status"],
            registry=self.registry,
        )
        self.config_latency = Histogram(
            "eventgateway_config_request_duration_seconds",
            "Time to answer a config API request.",
            ["resource", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.routing_resources = Gauge(
            "eventgate_routing_resources",
            "Resources in this node's routing snapshot (the real store counts).",
            ["kind"],
            registry=self.registry,
        )

        self._delivery_metrics()

    def _delivery_metrics(self) -> None:
        """Async delivery: events accepted (durably), refused and deduplicated at the door;
        deliveries delivered, retried and dead-lettered; the queue's depth; latencies."""
        registry = self.registry
        self.events_accepted = Counter(
            "eventgate_events_accepted_total",
            "Events accepted durably (committed to disk before the 202).",
            ["space"],
            registry=registry,
        )
        self.events_duplicates = Counter(
            "eventgate_events_duplicates_total",
            "Events received again within the dedupe window (answered 202, not delivered again).",
            ["space"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "eventgate_events_rejected_total",
            "Events refused: invalid, schema, denied, unauthenticated, authorizer (unavailable).",
            ["space", "reason"],
            registry=registry,
        )
        self.deliveries_delivered = Counter(
            "eventgate_deliveries_delivered_total",
            "Deliveries a function accepted (2xx).",
            ["space", "function"],
            registry=registry,
        )
        self.deliveries_retried = Counter(
            "eventgate_deliveries_retried_total",
            "Failed delivery attempts that will be retried.",
            ["space", "function"],
            registry=registry,
        )
        self.deliveries_dead_lettered = Counter(
            "eventgate_deliveries_dead_lettered_total",
            "Deliveries that became dead letters.",
            ["space", "function"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "eventgate_delivery_queue_depth",
            "Pending deliveries (due, leased or waiting to be retried) per subscription.",
            ["space", "subscription"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "eventgate_delivery_latency_seconds",
            "Time from an event's acceptance to its delivery, retries included.",
            ["space", "function"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.attempt_duration = Histogram(
            "eventgate_delivery_attempt_duration_seconds",
            "Time one delivery attempt took (the function's call).",
            ["space", "function"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker, see `view`)."""
        return generate_latest(self.view)  # type: ignore[arg-type]
