"""The `bodies` scenario: request and response bodies of 1 KiB, 64 KiB and 1 MiB.

The backend (nginx) serves files of each size; eventgate proxies `/*path` to it (proxy mode,
bodies streamed both ways) beside nginx `proxy_pass`. Responses: wrk GETs the file of each
size. Requests: wrk POSTs a body of each size (the backend answers a 2-byte file). Figures:
throughput against nginx's for each. Memory: eventgate's peak resident growth over its idle
size with 1 MiB bodies (beside what holding every connection's body whole would take), and with
8 MiB bodies against that with 1 MiB: about 1x says the bodies stream and the memory per
connection is bounded (a few reads of at most 256 KiB, uvloop's read size) whatever the size.
"""

from pathlib import Path
from typing import Any

from harness import Processes, WrkResult, post_json, rss_kib, run_wrk
from memory import PeakRss, warm_up
from table import row

SIZES = {"1k": 1024, "64k": 64 * 1024, "1m": 1024 * 1024}
STREAMED, STREAMED_SIZE = "8m", 8 * 1024 * 1024
"""Through eventgate only: its memory should not grow with the body (it streams)."""
POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", SIZE)
"""


def register_proxy(config_port: int, backend_port: int) -> None:
    """A proxy-mode function for every path, GET and POST."""
    config = f"http://127.0.0.1:{config_port}/v1/spaces/default"
    post_json(
        f"{config}/functions",
        {"functionId": "files", "type": "http",
         "provider": {"url": f"http://127.0.0.1:{backend_port}", "mode": "proxy"}},
    )  # fmt: skip
    for method in ("GET", "POST"):
        post_json(
            f"{config}/subscriptions",
            {"functionId": "files", "method": method, "path": "/*path"},
        )


def bodies_scenario(seconds: int, connections: int) -> dict[str, Any]:
    processes = Processes()
    figures: dict[str, dict[str, float]] = {}
    rows = []
    try:
        files = {name: b"x" * size for name, size in {**SIZES, STREAMED: STREAMED_SIZE}.items()}
        backend = processes.files({**files, "ok": b"ok"})
        nginx = processes.nginx_proxy(backend, extra="  client_max_body_size 64m;\n")
        events, config = processes.eventgate()
        node = processes.last.pid
        register_proxy(config, backend)
        warm_up(f"http://127.0.0.1:{events}/1k")
        idle = rss_kib(node)
        for direction in ("response", "request"):
            for name, size in {**SIZES, STREAMED: STREAMED_SIZE}.items():
                load = Load(processes, direction, name, size, seconds, connections)
                figure = figures[f"{direction} {name}"] = {}
                if name != STREAMED:
                    figure["nginx"] = load(nginx).requests_per_second
                with PeakRss(node) as peak:
                    figure["eventgate"] = load(events).requests_per_second
                figure["rss_growth_mib"] = max(peak.peak - idle, 0) / 1024
            rows += [
                row("bodies", f"{direction} {name}", figures[f"{direction} {name}"]["eventgate"],
                    figures[f"{direction} {name}"]["nginx"], "nginx proxy_pass", unit="req/s")
                for name in SIZES
            ]  # fmt: skip
            large = figures[f"{direction} 1m"]["rss_growth_mib"]
            rows.append(
                row("bodies", f"{direction} 1m: RSS growth", large,
                    connections * SIZES["1m"] / 2**20, "connections x 1 MiB", unit="MiB")
            )  # fmt: skip
            rows.append(
                row("bodies", f"{direction} {STREAMED}: RSS growth",
                    figures[f"{direction} {STREAMED}"]["rss_growth_mib"], large,
                    "growth with 1 MiB", unit="MiB", aim="<= 1.5")
            )  # fmt: skip
    finally:
        processes.close()
    return {"scenario": "bodies", "idle_rss_kib": idle, "figures": figures, "rows": rows}


class Load:
    """One wrk run of a direction and size, against any port."""

    def __init__(
        self,
        processes: Processes,
        direction: str,
        name: str,
        size: int,
        seconds: int,
        connections: int,
    ) -> None:
        self.path = f"/{name}"
        self.script: Path | None = None
        if direction == "request":
            self.path = "/ok"
            self.script = processes.scratch / f"post-{name}.lua"
            self.script.write_text(POST_LUA.replace("SIZE", str(size)))
        self.seconds = seconds
        self.connections = connections

    def __call__(self, port: int) -> WrkResult:
        url = f"http://127.0.0.1:{port}{self.path}"
        result = run_wrk(  # large bodies through 64 connections take their time: no timeouts
            url, connections=self.connections, seconds=self.seconds, script=self.script, timeout=60
        )
        if result.errors:
            raise RuntimeError(f"{result.errors} errors from {url}")
        return result
