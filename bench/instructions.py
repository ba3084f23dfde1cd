"""The `instructions` scenario: CPU instructions per request, counted by valgrind's callgrind.

Throughput on a shared machine moves with whatever else runs; instructions per request do not.
eventgate (proxy and eventgateway modes), nginx `proxy_pass` (one process) and `bare_proxy.py`
(the least a Python proxy does) run under callgrind, instrumented only while wrk (8
connections) loads them; eventgate's idle rate (its store poll, timers), measured just before,
is taken off. User-space instructions only: the kernel's share of each request (the same four
socket calls for all) is not in these figures. Skipped when valgrind is not installed.
"""

import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import ENVELOPE_REPLY, register
from harness import Processes, free_port, wait_for_port
from table import row

STARTUP_TIMEOUT = 120.0


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True)


def _dumped(out: Path) -> int:
    """The instructions of every dump since the last one (the files are removed)."""
    total = 0
    for name in glob.glob(f"{out}.*"):
        text = Path(name).read_text(errors="replace")
        match = re.search(r"^totals:\s+(\d+)", text, re.M)
        total += int(match.group(1)) if match else 0
        os.unlink(name)
    return total


def _wrk(url: str, seconds: int, script: Path | None) -> list[str]:
    return ["wrk", "-t1", "-c8", f"-d{seconds}s", *(["-s", str(script)] if script else []), url]


def _wrk_count(url: str, seconds: int, script: Path | None) -> int:
    output = subprocess.run(
        _wrk(url, seconds, script),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    return int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]


def per_request(
    pid: int, out: Path, url: str, seconds: int, script: Path | None = None, idle: float = 3.0
) -> float:
    """Instructions per request of the callgrind process `pid` under wrk (with `script`), net of
    its idle rate."""
    subprocess.run(_wrk(url, 2, script), capture_output=True, timeout=60)
    _control(pid, "--dump")
    _dumped(out)
    _control(pid, "--instr=on")
    started = time.monotonic()
    time.sleep(idle)
    _control(pid, "--instr=off")
    _control(pid, "--dump")
    idle_rate = _dumped(out) / (time.monotonic() - started)
    _control(pid, "--instr=on")
    started = time.monotonic()
    requests = _wrk_count(url, seconds, script)
    _control(pid, "--instr=off")
    elapsed = time.monotonic() - started
    _control(pid, "--dump")
    return (_dumped(out) - idle_rate * elapsed) / max(requests, 1)


def _callgrind(out: Path, command: list[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            *command]  # fmt: skip


def available() -> bool:
    """Whether valgrind's callgrind can be used here."""
    return bool(shutil.which("valgrind") and shutil.which("callgrind_control"))


def eventgate_per_request(
    processes: Processes,
    data_dir: Path,
    seconds: int,
    *,
    register_on: Callable[[int], None] | None = None,
    script: Path | None = None,
    warm: list[str] | None = None,
) -> float:
    """Start `eventgate serve` on `data_dir` under callgrind, (register its route with
    `register_on(config_port)`, GET each of the `warm` paths once,) and count its instructions
    per request."""
    events, config = free_port(), free_port()
    out = data_dir.with_suffix(".callgrind")
    processes._start(
        _callgrind(out, [
            sys.executable, "-m", "eventgate", "serve", "--events-port", str(events),
            "--config-port", str(config), "--log-level", "warning", "--data-dir", str(data_dir),
        ])
    )  # fmt: skip
    wait_for_port(config, STARTUP_TIMEOUT)
    wait_for_port(events, STARTUP_TIMEOUT)
    if register_on is not None:
        register_on(config)
    visit(events, warm or [])
    return per_request(processes.last.pid, out, f"http://127.0.0.1:{events}/", seconds, script)


def visit(port: int, paths: list[str]) -> None:
    """GET each path once on one kept-alive connection (before counting: a node remembers
    what it worked out for a request it has seen, so a count would otherwise be of the first
    sight of each)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP_TIMEOUT)
    try:
        for path in paths:
            connection.request("GET", path)
            connection.getresponse().read()
    finally:
        connection.close()


def instructions_scenario(seconds: int) -> dict[str, Any]:
    if not available():
        print("instructions: skipped (install valgrind to count instructions per request)")
        return {"scenario": "instructions", "skipped": "valgrind is not installed", "rows": []}
    figures: dict[str, float] = {}
    processes = Processes()
    try:
        backend = processes.backend()
        envelope_backend = processes.backend(ENVELOPE_REPLY)
        port = free_port()
        prefix = processes.scratch / "nginx-callgrind"
        (prefix / "logs").mkdir(parents=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"worker_processes 1; daemon off; master_process off; pid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/logs/error.log warn; events {{ worker_connections 1024; }}\n"
            f"http {{ access_log off; client_body_temp_path {prefix}/body;\n"
            f"  proxy_temp_path {prefix}/proxy;\n"
            f"  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}\n"
            f"  server {{ listen 127.0.0.1:{port}; keepalive_requests 100000;\n"
            "    location / { proxy_pass http://backend; proxy_http_version 1.1;\n"
            '      proxy_set_header Connection ""; } } }\n'
        )
        out = processes.scratch / "nginx.callgrind"
        processes._start(_callgrind(out, ["nginx", "-p", str(prefix), "-c", str(conf)]))
        wait_for_port(port, STARTUP_TIMEOUT)
        url = f"http://127.0.0.1:{port}/"
        figures["nginx"] = per_request(processes.last.pid, out, url, seconds)
        port = free_port()
        out = processes.scratch / "bare.callgrind"
        script = Path(__file__).with_name("bare_proxy.py")
        processes._start(_callgrind(out, [sys.executable, str(script), str(port), str(backend)]))
        wait_for_port(port, STARTUP_TIMEOUT)
        figures["bare"] = per_request(processes.last.pid, out, f"http://127.0.0.1:{port}/", seconds)
        for mode, target in (("proxy", backend), ("eventgateway", envelope_backend)):
            figures[mode] = eventgate_per_request(
                processes,
                processes.scratch / f"callgrind-{mode}",
                seconds,
                register_on=lambda config, target=target, mode=mode: register(config, target, mode),
            )
    finally:
        processes.close()
    rows = [
        row("instructions", f"{mode} mode, per request", figures[mode], figures["nginx"],
            "nginx proxy_pass")
        for mode in ("proxy", "eventgateway")
    ]  # fmt: skip
    rows.append(
        row("instructions", "proxy mode vs a bare Python proxy", figures["proxy"],
            figures["bare"], "bare_proxy.py")
    )  # fmt: skip
    return {"scenario": "instructions", "per_request": figures, "rows": rows}
