"""The `functions` scenario: python functions, each figure beside `python -c pass` measured in
the same run (the floor of any start that is not a fork).

Two parts:
- the runtime on its own (`runtime_coldstart.py`): deploy, cold call with a warm fork server,
  cold call after scale to zero, warm call and its overhead against the handler called
  in-process, warm throughput;
- a node (`eventgate serve`): the first call after `POST /functions` (through the config API;
  the execution's own `durationMs` and the client's round trip), the first call after the node
  scaled the function to zero (a node with short idle timeouts), and the throughput of a
  trivial function through the events port (wrk, sync subscription), beside an `http` function
  in proxy mode to the nginx backend on the same node in the same run.
"""

import argparse
import base64
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
import uvloop
from harness import Processes, run_wrk
from runtime_coldstart import HELLO, PAYLOAD, measure, percentiles

TRIVIAL = "def handle(ctx, payload):\n    return {'ok': True}\n"


def source(text: str, name: str = "hello.py") -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = text.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


class Node:
    """Config API calls on one node, on one keep-alive connection."""

    def __init__(self, config_port: int) -> None:
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{config_port}/v1/spaces/default", timeout=60
        )

    def image(self) -> None:
        self.api.post("/images", json={"name": "python3", "requirements": ""})
        while self.api.get("/images/python3").json()["status"] == "CREATING":
            time.sleep(0.05)

    def function(self, name: str, text: str = HELLO, **provider: object) -> None:
        body = {
            "functionId": name,
            "type": "python",
            "provider": {"image": "python3", "handler": "hello.handle", "source": source(text),
                         **provider},
        }  # fmt: skip
        answer = self.api.post("/functions", json=body)
        assert answer.status_code == 201 and answer.json()["status"] == "READY", answer.text

    def invoke(self, name: str) -> tuple[float, dict]:
        """The client's round trip (ms) and the execution."""
        started = time.perf_counter()
        answer = self.api.post(f"/functions/{name}/invocations", json=PAYLOAD)
        elapsed = (time.perf_counter() - started) * 1000
        assert answer.status_code == 200, answer.text
        return elapsed, answer.json()

    def server_running(self, name: str) -> bool:
        return bool(self.api.get(f"/functions/{name}").json()["instances"]["serverRunning"])


def node_cold_starts(processes: Processes, runs: int) -> dict[str, dict[str, float]]:
    """First call after create, and after scale to zero, through a node's config API."""
    _, config = processes.eventgate()
    node = Node(config)
    node.image()
    after_create: list[tuple[float, dict]] = []
    for n in range(runs):
        node.function(f"fresh-{n}")
        after_create.append(node.invoke(f"fresh-{n}"))
    _, config = processes.eventgate("--scale-to-zero-after", "0.1", "--worker-idle-timeout", "0.05")
    zero = Node(config)
    zero.image()
    zero.function("sleepy")
    after_zero: list[tuple[float, dict]] = []
    for _ in range(runs):
        while zero.server_running("sleepy"):
            time.sleep(0.01)
        after_zero.append(zero.invoke("sleepy"))
    figures = {}
    for label, samples in (("after create", after_create), ("after scale to zero", after_zero)):
        assert all(execution["context"]["coldStart"] for _, execution in samples)
        figures[f"node: first call {label}, execution"] = percentiles(
            [execution["context"]["durationMs"] for _, execution in samples]
        )
        figures[f"node: first call {label}, API round trip"] = percentiles(
            [elapsed for elapsed, _ in samples]
        )
    return figures


def events_port_throughput(
    processes: Processes, seconds: int, connections: int
) -> dict[str, dict[str, float]]:
    """wrk through a sync subscription to a trivial python function, and to nginx (proxy)."""
    backend = processes.backend()
    events, config = processes.eventgate()
    node = Node(config)
    node.image()
    node.function("trivial", TRIVIAL, concurrency=os.cpu_count() or 2)
    node.api.post(
        "/functions",
        json={"functionId": "proxied", "type": "http",
              "provider": {"url": f"http://127.0.0.1:{backend}", "mode": "proxy"}},
    )  # fmt: skip
    for name, path in (("trivial", "/python"), ("proxied", "/proxy")):
        node.api.post(
            "/subscriptions",
            json={"type": "sync", "eventType": "http.request", "functionId": name,
                  "method": "GET", "path": path},
        )  # fmt: skip
    figures = {}
    for label, path in (("python function", "/python"), ("http function, proxy", "/proxy")):
        result = run_wrk(
            f"http://127.0.0.1:{events}{path}", connections=connections, seconds=seconds
        )
        figures[f"events port: {label}"] = {
            "requests_per_s": round(result.requests_per_second),
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "errors": result.errors,
        }
    return figures


def functions_scenario(seconds: int, connections: int, runs: int = 30) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="eventgate-bench-") as workdir:
        options = argparse.Namespace(calls=500, cold=runs)
        figures: dict[str, dict[str, float]] = uvloop.run(measure(options, Path(workdir)))
    processes = Processes()
    try:
        figures.update(node_cold_starts(processes, runs))
        figures.update(events_port_throughput(processes, seconds, connections))
    finally:
        processes.close()
    reference = figures["interpreter start (python -I -c pass)"]["p50_ms"]
    ratios = {
        name: round(figure["p50_ms"] / reference, 3)
        for name, figure in figures.items()
        if "p50_ms" in figure and not name.startswith("events port")
    }
    python_rps = figures["events port: python function"]["requests_per_s"]
    proxy_rps = figures["events port: http function, proxy"]["requests_per_s"]
    return {
        "scenario": "functions",
        "reference_python_c_pass_p50_ms": reference,
        "figures": figures,
        "p50_vs_python_c_pass": ratios,
        "python_vs_proxy_throughput": round(python_rps / proxy_rps, 3),
        "median_of": runs,
    }


def report(result: dict[str, object]) -> None:
    figures: dict[str, dict[str, float]] = result["figures"]  # type: ignore[assignment]
    ratios: dict[str, float] = result["p50_vs_python_c_pass"]  # type: ignore[assignment]
    print(
        "functions (python runtime; p50 beside `python -I -c pass` = "
        f"{result['reference_python_c_pass_p50_ms']} ms, same run):"
    )
    width = max(len(name) for name in figures)
    for name, figure in figures.items():
        values = "  ".join(f"{key}={value}" for key, value in figure.items())
        ratio = f"  ({ratios[name]:.3f}x python -c pass)" if name in ratios else ""
        print(f"  {name:<{width}}  {values}{ratio}")
    print(
        "  python function / http proxy function throughput on the events port: "
        f"{result['python_vs_proxy_throughput']:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=30, help="cold starts of each kind")
    arguments = parser.parse_args()
    outcome = functions_scenario(arguments.seconds, arguments.connections, arguments.runs)
    report(outcome)
