"""Run the benchmark scenarios and print each figure beside a reference measured in the same run.

    python bench/run.py [--seconds 5] [--connections 64] [--json results.json] [scenario ...]

Scenarios: `proxy` and `eventgateway` (wrk -> eventgate -> nginx backend, beside wrk -> nginx
proxy_pass -> backend and wrk -> backend directly), and `async` (CloudEvents accepted durably and
delivered to the nginx backend, beside SQLite's own one-row-per-fsynced-commit rate; see
`async_delivery.py`).
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from async_delivery import async_scenario, report
from harness import Processes, WrkResult, post_json, require_tools, run_wrk

ENVELOPE_REPLY = '{"statusCode":200,"headers":{"Content-Type":"text/plain"},"body":"Hello"}'


def register(config_port: int, backend_port: int, mode: str) -> None:
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
         "method": "GET", "path": "/"},
    )  # fmt: skip


def gateway_scenario(mode: str, seconds: int, connections: int) -> dict[str, object]:
    """wrk against the backend directly, through nginx, and through eventgate in `mode`."""
    processes = Processes()
    try:
        backend = (
            processes.backend(ENVELOPE_REPLY) if mode == "eventgateway" else processes.backend()
        )
        nginx = processes.nginx_proxy(backend)
        events, config = processes.eventgate()
        register(config, backend, mode)
        direct = run_wrk(f"http://127.0.0.1:{backend}/", connections=connections, seconds=seconds)
        via_nginx = run_wrk(f"http://127.0.0.1:{nginx}/", connections=connections, seconds=seconds)
        via_gate = run_wrk(f"http://127.0.0.1:{events}/", connections=connections, seconds=seconds)
    finally:
        processes.close()
    added_nginx = (
        max(via_nginx.p50_ms - direct.p50_ms, 1e-3),
        max(via_nginx.p99_ms - direct.p99_ms, 1e-3),
    )
    return {
        "scenario": mode,
        "direct": asdict(direct),
        "nginx": asdict(via_nginx),
        "eventgate": asdict(via_gate),
        "throughput_vs_nginx": via_gate.requests_per_second / via_nginx.requests_per_second,
        "added_p50_vs_nginx": (via_gate.p50_ms - direct.p50_ms) / added_nginx[0],
        "added_p99_vs_nginx": (via_gate.p99_ms - direct.p99_ms) / added_nginx[1],
    }


def format_row(name: str, result: WrkResult) -> str:
    return (
        f"  {name:<10} {result.requests_per_second:>10,.0f} req/s   p50 {result.p50_ms:7.3f} ms"
        f"   p99 {result.p99_ms:7.3f} ms   errors {result.errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["proxy", "eventgateway", "async"])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    require_tools()
    results = []
    for scenario in args.scenarios:
        if scenario == "async":
            result = async_scenario(args.seconds, args.connections)
            results.append(result)
            report(result, args.seconds, args.connections)
            continue
        result = gateway_scenario(scenario, args.seconds, args.connections)
        results.append(result)
        print(f"{scenario} mode ({args.connections} connections, {args.seconds}s each):")
        for name in ("direct", "nginx", "eventgate"):
            print(format_row(name, WrkResult(**result[name])))
        print(
            f"  eventgate/nginx throughput {result['throughput_vs_nginx']:.2f}x;"
            f" added latency vs nginx's: p50 {result['added_p50_vs_nginx']:.2f}x,"
            f" p99 {result['added_p99_vs_nginx']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
