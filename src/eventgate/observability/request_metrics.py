"""Events-port request metrics: counted in plain Python per request, exported when scraped.

A prometheus_client child takes a lock on every `inc()` and `observe()`; on the events port that
costs more than the counting itself. `RequestStats.record` does one dict lookup and a few list
updates per request (the event loop is the only writer), and `RequestCollector` folds the series
into the usual families when the registry is collected:

- `eventgate_events_requests_total{method,route,function,status}`
- `eventgate_events_request_duration_seconds{route,function}` (a histogram)
- `eventgateway_events_received_total{space,type}` (requests routed to a function)

The label sets are bounded by the configuration: routes are subscription path patterns (never raw
paths), methods outside the known ones count as `OTHER`, and statuses are HTTP status codes.
"""

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from eventgate.model import HTTP_EVENT_TYPE, HTTP_METHODS

_METHODS = frozenset(HTTP_METHODS)
Key = tuple[str, str, str, str, int]
"""(method, route, function, space, status)"""


class RequestStats:
    """Per label set: [count, sum of seconds, one count per latency bucket (+Inf last)]."""

    __slots__ = ("_size", "bounds", "series")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self._size = len(buckets) + 3
        self.series: dict[Key, list[float]] = {}

    def record(
        self, method: str, route: str, function: str, space: str, status: int, seconds: float
    ) -> None:
        """Count one answered request that took `seconds`."""
        series = self.series.get((method, route, function, space, status))
        if series is None:
            series = self.series_of(method, route, function, space, status)
        series[0] += 1
        series[1] += seconds
        series[2 + bisect_left(self.bounds, seconds)] += 1

    def series_of(
        self, method: str, route: str, function: str, space: str, status: int
    ) -> list[float]:
        """The series of one label set, created if new (callers may keep it and `count`)."""
        if method not in _METHODS:
            method = "OTHER"
        key = (method, route, function, space, status)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0] * self._size
        return series

    def count(self, series: list[float], seconds: float) -> None:
        """Count one answered request that took `seconds` in a series from `series_of`."""
        series[0] += 1
        series[1] += seconds
        series[2 + bisect_left(self.bounds, seconds)] += 1


class RequestCollector(Collector):
    """Exports a `RequestStats` as Prometheus families."""

    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "eventgate_events_requests",
            "Requests answered on the events port, by outcome.",
            labels=["method", "route", "function", "status"],
        )
        latency = HistogramMetricFamily(
            "eventgate_events_request_duration_seconds",
            "Time from a request's arrival on the events port to its response.",
            labels=["route", "function"],
        )
        received = CounterMetricFamily(
            "eventgateway_events_received",
            "Events received on the events port.",
            labels=["space", "type"],
        )
        by_route: dict[tuple[str, str], list[float]] = {}
        by_space: dict[str, float] = {}
        for (method, route, function, space, status), series in list(self.stats.series.items()):
            requests.add_metric([method, route, function, str(status)], series[0])
            total = by_route.get((route, function))
            if total is None:
                by_route[route, function] = list(series)
            else:
                for index, value in enumerate(series):
                    total[index] += value
            if function:
                by_space[space] = by_space.get(space, 0) + series[0]
        bounds = [*map(floatToGoString, self.stats.bounds), "+Inf"]
        for (route, function), series in by_route.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip(bounds, series[2:], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([route, function], buckets, series[1])
        for space, count in by_space.items():
            received.add_metric([space, HTTP_EVENT_TYPE], count)
        yield requests
        yield latency
        yield received
