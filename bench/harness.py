"""Benchmark plumbing: nginx and eventgate processes on loopback, wrk runs, and their figures.

Every process started here is stopped when the harness closes; every wrk run is bounded in time.
"""

import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BACKEND_BODY = "Hello from the benchmark backend\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.05)


def require_tools() -> None:
    """Make sure wrk and nginx exist: install them with apt-get if we can, else say how."""
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool)]
    if not missing:
        return
    packages = {"wrk": "wrk", "nginx": "nginx-light"}
    if shutil.which("apt-get"):
        print(f"installing {', '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *(packages[t] for t in missing)], check=False
        )
    still = [tool for tool in missing if not shutil.which(tool)]
    if still:
        raise SystemExit(
            f"the benchmarks need {', '.join(still)}: install them with your package manager "
            f"(Debian/Ubuntu: apt-get install {' '.join(packages[t] for t in still)})"
        )


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str,
    *,
    connections: int = 64,
    seconds: int = 5,
    script: Path | None = None,
    timeout: int | None = None,
) -> WrkResult:
    """One bounded wrk run (one thread, since the machine has two cores to share); `timeout`:
    seconds before wrk counts a response as an error (its default is 2)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    if timeout is not None:
        command[1:1] = ["--timeout", f"{timeout}s"]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = _to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output)) + sum(
        int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output)
    )
    return WrkResult(rps, p50, p99, errors)


def interleaved(
    urls: dict[str, str], *, rounds: int = 3, connections: int = 64, seconds: int = 5
) -> dict[str, WrkResult]:
    """wrk against each URL in turn, `rounds` times over; for each, the median of its runs (each
    figure apart): neighbours' load comes and goes on a shared machine, and a single run can
    land on a bad moment for one of the parties."""
    runs: dict[str, list[WrkResult]] = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            runs[name].append(run_wrk(url, connections=connections, seconds=seconds))
    return {
        name: WrkResult(
            statistics.median(r.requests_per_second for r in results),
            statistics.median(r.p50_ms for r in results),
            statistics.median(r.p99_ms for r in results),
            sum(r.errors for r in results),
        )
        for name, results in runs.items()
    }


class Processes:
    """Starts nginx and eventgate instances in a scratch directory and stops them all on close."""

    def __init__(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="eventgate-bench-"))
        self._running: list[subprocess.Popen[bytes]] = []

    @property
    def last(self) -> "subprocess.Popen[bytes]":
        """The process started last (its pid, for resident sizes)."""
        return self._running[-1]

    def nginx(self, server_block: str, *, workers: int = 1) -> int:
        """Start nginx with one `server` block (`{port}` is filled in); return its port."""
        port = free_port()
        prefix = self.scratch / f"nginx-{port}"
        (prefix / "logs").mkdir(parents=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"worker_processes {workers};\n"
            "daemon off;\n"
            f"pid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/logs/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "  access_log off;\n"
            f"  client_body_temp_path {prefix}/body;\n"
            f"  proxy_temp_path {prefix}/proxy;\n"
            + server_block.replace("{port}", str(port))
            + "\n}\n"
        )
        self._start(["nginx", "-p", str(prefix), "-c", str(conf)])
        wait_for_port(port)
        return port

    def backend(self, body: str = BACKEND_BODY) -> int:
        """nginx answering every request with a small fixed body."""
        escaped = body.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return self.nginx(
            "server { listen 127.0.0.1:{port}; keepalive_requests 100000;\n"
            f'  location / {{ default_type text/plain; return 200 "{escaped}"; }} }}'
        )

    def files(self, files: dict[str, bytes]) -> int:
        """nginx serving `files` (name: content) as they are: bodies of a known size."""
        root = self.scratch / f"files-{len(self._running)}"
        root.mkdir(mode=0o755)
        self.scratch.chmod(0o711)  # nginx's workers (`nobody` under root) reach in, not list
        for name, content in files.items():
            (root / name).write_bytes(content)
            (root / name).chmod(0o644)
        return self.nginx(
            "server { listen 127.0.0.1:{port}; keepalive_requests 100000;\n"
            f"  client_max_body_size 64m; location / {{ root {root}; }}\n"
            "  error_page 405 =200 $uri; }"  # a POST to a static file is answered as a GET
        )

    def nginx_proxy(self, backend_port: int, *, workers: int = 1, extra: str = "") -> int:
        """nginx `proxy_pass` in front of the backend, with pooled upstream connections
        (`extra`: more directives for its server block)."""
        return self.nginx(
            f"upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 128; }}\n"
            "server { listen 127.0.0.1:{port}; keepalive_requests 100000;\n"
            + extra
            + "  location / { proxy_pass http://backend; proxy_http_version 1.1;\n"
            '    proxy_set_header Connection ""; } }',
            workers=workers,
        )

    def bare_proxy(self, backend_port: int) -> int:
        """`bare_proxy.py` (the least a Python proxy does) in front of the backend."""
        port = free_port()
        script = Path(__file__).with_name("bare_proxy.py")
        self._start([sys.executable, str(script), str(port), str(backend_port)])
        wait_for_port(port)
        return port

    def eventgate(self, *extra_args: str, data_dir: Path | None = None) -> tuple[int, int]:
        """Start `eventgate serve` with a fresh data dir (or `data_dir`); return (events port,
        config port)."""
        events_port, config_port = free_port(), free_port()
        data_dir = data_dir or self.scratch / f"eventgate-{events_port}"
        log = (self.scratch / f"eventgate-{events_port}.log").open("ab")
        self._start(
            [
                sys.executable, "-m", "eventgate", "serve",
                "--events-port", str(events_port), "--config-port", str(config_port),
                "--data-dir", str(data_dir), "--log-level", "warning", *extra_args,
            ],
            log=log,
        )  # fmt: skip
        wait_for_port(config_port)
        wait_for_port(events_port)
        return events_port, config_port

    def _start(self, command: list[str], log: object = subprocess.DEVNULL) -> None:
        self._running.append(subprocess.Popen(command, stdout=log, stderr=log))

    def close(self) -> None:
        for process in self._running:
            process.terminate()
        for process in self._running:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)


def rss_kib(pid: int) -> int:
    """A process's resident set size in KiB (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def post_json(url: str, payload: object) -> dict[str, object]:
    """POST JSON to the config API and return the decoded answer."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")
