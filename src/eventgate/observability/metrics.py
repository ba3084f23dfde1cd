"""Prometheus metrics for both ports, in one registry that `/v1/metrics` serves.

Names keep the Event Gateway's `eventgateway_` prefix where it had the same metric, so its
Grafana dashboards keep working; eventgate's own additions use `eventgate_`.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = tuple(0.0005 * 2**n for n in range(16))


class Metrics:
    """Every metric a node exports. One instance per node, passed to the parts that record."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_received = Counter(
            "eventgateway_events_received_total",
            "Events received on the events port.",
            ["space", "type"],
            registry=self.registry,
        )
        self.data_requests = Counter(
            "eventgate_events_requests_total",
            "Requests answered on the events port, by outcome.",
            ["method", "route", "function", "status"],
            registry=self.registry,
        )
        self.data_latency = Histogram(
            "eventgate_events_request_duration_seconds",
            "Time from a request's arrival on the events port to its response.",
            ["route", "function"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
