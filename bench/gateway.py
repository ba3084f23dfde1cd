"""The `proxy`, `eventgateway` and `workers` scenarios: the hop eventgate adds, against nginx.

wrk calls the backend (nginx returning a small fixed body) directly, through nginx `proxy_pass`
and through eventgate (and, in `proxy`, through `bare_proxy.py`), in the same run: three
interleaved rounds, each figure the median of its three runs. Figures: throughput as a ratio to
nginx's, and the latency each adds over the direct call (p50, p99), eventgate's as a ratio to
nginx's. `workers` does the same with `eventgate serve --workers N` against nginx with N
workers.
"""

import time
import urllib.request
from dataclasses import asdict
from typing import Any

from harness import Processes, WrkResult, interleaved, post_json
from table import row

ENVELOPE_REPLY = '{"statusCode":200,"headers":{"Content-Type":"text/plain"},"body":"Hello"}'
"""The backend's body in `eventgateway` mode: the function reply the seed's contract expects."""


def register(config_port: int, backend_port: int, mode: str, path: str = "/") -> None:
    """One http function in `mode` calling the backend, subscribed to GET `path`."""
    config = f"http://127.0.0.1:{config_port}/v1/spaces/default"
    post_json(
        f"{config}/functions",
        {
            "functionId": "bench",
            "type": "http",
            "provider": {"url": f"http://127.0.0.1:{backend_port}", "mode": mode},
        },
    )
    post_json(
        f"{config}/subscriptions",
        {"type": "sync", "eventType": "http.request", "functionId": "bench",
         "method": "GET", "path": path},
    )  # fmt: skip


def compare(
    name: str, direct: WrkResult, nginx: WrkResult, gate: WrkResult, aims: dict[str, str]
) -> list[dict[str, Any]]:
    """Throughput against nginx's, and the latency added over the direct call against what
    nginx adds."""
    rows = [
        row(name, "throughput", gate.requests_per_second, nginx.requests_per_second,
            "nginx proxy_pass", unit="req/s", aim=aims.get("throughput", "")),
    ]  # fmt: skip
    for quantile in ("p50", "p99"):
        added = getattr(gate, f"{quantile}_ms") - getattr(direct, f"{quantile}_ms")
        reference = max(getattr(nginx, f"{quantile}_ms") - getattr(direct, f"{quantile}_ms"), 1e-3)
        rows.append(
            row(name, f"added latency {quantile}", added, reference, "added by nginx",
                unit="ms", aim=aims.get("latency", ""))
        )  # fmt: skip
    return rows


def gateway_scenario(mode: str, seconds: int, connections: int) -> dict[str, Any]:
    """wrk against the backend directly, through nginx, and through eventgate in `mode`."""
    processes = Processes()
    try:
        backend = (
            processes.backend(ENVELOPE_REPLY) if mode == "eventgateway" else processes.backend()
        )
        nginx = processes.nginx_proxy(backend)
        bare = processes.bare_proxy(backend) if mode == "proxy" else None
        events, config = processes.eventgate()
        register(config, backend, mode)
        urls = {"direct": backend, "nginx": nginx, "bare": bare, "eventgate": events}
        results = interleaved(
            {name: f"http://127.0.0.1:{port}/" for name, port in urls.items() if port},
            connections=connections,
            seconds=seconds,
        )
    finally:
        processes.close()
    direct, via_nginx, via_gate = results["direct"], results["nginx"], results["eventgate"]
    via_bare = results.get("bare")
    aims = {"throughput": ">= 1.0", "latency": "<= 1.5"} if mode == "proxy" else {}
    if mode == "eventgateway":
        aims["throughput"] = ">= 0.6"
    rows = compare(mode, direct, via_nginx, via_gate, aims)
    if via_bare is not None:  # the floor of a Python proxy (bare_proxy.py), and its own ratio
        rows.append(
            row(mode, "throughput vs a bare Python proxy", via_gate.requests_per_second,
                via_bare.requests_per_second, "bare_proxy.py", unit="req/s")
        )  # fmt: skip
        rows.append(
            row("bare proxy", "throughput", via_bare.requests_per_second,
                via_nginx.requests_per_second, "nginx proxy_pass", unit="req/s")
        )  # fmt: skip
    return {
        "scenario": mode,
        "direct": asdict(direct),
        "nginx": asdict(via_nginx),
        "eventgate": asdict(via_gate),
        "bare": asdict(via_bare) if via_bare is not None else None,
        "rows": rows,
    }


def workers_scenario(workers: int, seconds: int, connections: int) -> dict[str, Any]:
    """`proxy` mode with `eventgate serve --workers N` against nginx with N workers."""
    processes = Processes()
    try:
        backend = processes.backend()
        nginx = processes.nginx_proxy(backend, workers=workers)
        events, config = processes.eventgate("--workers", str(workers))
        register(config, backend, "proxy")
        wait_for_workers(events, workers)
        urls = {"direct": backend, "nginx": nginx, "eventgate": events}
        results = interleaved(
            {name: f"http://127.0.0.1:{port}/" for name, port in urls.items()},
            connections=connections,
            seconds=seconds,
        )
    finally:
        processes.close()
    direct, via_nginx, via_gate = results["direct"], results["nginx"], results["eventgate"]
    name = f"workers {workers}"
    return {
        "scenario": name,
        "workers": workers,
        "direct": asdict(direct),
        "nginx": asdict(via_nginx),
        "eventgate": asdict(via_gate),
        "rows": compare(name, direct, via_nginx, via_gate, {}),
    }


def wait_for_workers(port: int, workers: int, timeout: float = 30.0) -> None:
    """Wait until `workers` processes listen on `port` and fresh connections (spread across
    them by the kernel) all find the route."""
    deadline = time.monotonic() + timeout
    while listeners(port) < workers or not all(answers(port) for _ in range(4 * workers)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not all serve port {port} in {timeout}s")
        time.sleep(0.05)


def listeners(port: int) -> int:
    """Listening sockets on `port` (Linux; each SO_REUSEPORT worker has its own)."""
    try:
        with open("/proc/net/tcp") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return 1 << 30  # cannot tell: rely on the answers
    return sum(
        1
        for line in lines
        if (fields := line.split())[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port
    )


def answers(port: int) -> bool:
    """One GET on a new connection gets a 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
