"""The `memory` scenario and the resident-size sampling the `bodies` scenario shares.

A node with one proxy-mode route is measured idle (after it served a few requests), at its peak
while wrk loads it, and after; nginx `proxy_pass` (master and worker) idle is the reference for
the first, the node's own idle size for the others.
"""

import subprocess
import threading
from pathlib import Path
from typing import Any

from gateway import register
from harness import Processes, rss_kib, run_wrk
from table import row


def family_rss_kib(pid: int) -> int:
    """Resident size of a process and its children (nginx's workers), in KiB."""
    total = rss_kib(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(family_rss_kib(int(child)) for child in children)


class PeakRss:
    """Samples a process's resident size every 50 ms, in a thread, while in a `with`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, family_rss_kib(self.pid))
            if self._done.wait(0.05):
                return


def warm_up(url: str) -> None:
    """A few requests, so that idle sizes include what the first ones allocate."""
    subprocess.run(["wrk", "-t1", "-c4", "-d1s", url], capture_output=True, check=True, timeout=30)


def memory_scenario(seconds: int, connections: int) -> dict[str, Any]:
    processes = Processes()
    try:
        backend = processes.backend()
        nginx = processes.nginx_proxy(backend)
        nginx_pid = processes.last.pid
        events, config = processes.eventgate()
        node = processes.last.pid
        register(config, backend, "proxy")
        warm_up(f"http://127.0.0.1:{nginx}/")
        warm_up(f"http://127.0.0.1:{events}/")
        nginx_idle = family_rss_kib(nginx_pid)
        idle = rss_kib(node)
        with PeakRss(node) as peak:
            result = run_wrk(
                f"http://127.0.0.1:{events}/", connections=connections, seconds=seconds
            )
        after = rss_kib(node)
    finally:
        processes.close()
    mib = 1024.0
    rows = [
        row("memory", "RSS idle", idle / mib, nginx_idle / mib, "nginx proxy idle", unit="MiB"),
        row("memory", f"RSS peak, {connections} connections", peak.peak / mib, idle / mib,
            "eventgate idle", unit="MiB"),
        row("memory", "RSS after the load", after / mib, idle / mib, "eventgate idle",
            unit="MiB"),
    ]  # fmt: skip
    return {
        "scenario": "memory",
        "rss_kib": {"idle": idle, "peak": peak.peak, "after": after, "nginx_idle": nginx_idle},
        "requests_per_second": result.requests_per_second,
        "rows": rows,
    }
