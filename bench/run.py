"""Run the benchmark scenarios and print each figure beside a reference measured in the same run.

    python bench/run.py [--seconds 5] [--connections 64] [--json results.json] [scenario ...]

Scenarios: `proxy` and `eventgateway` (wrk -> eventgate -> nginx backend, beside wrk -> nginx
proxy_pass -> backend and wrk -> backend directly), `workers` (the same with `--workers N`
beside nginx with N workers), `routing` (10, 1,000 and 10,000 subscriptions), `memory`, `bodies`
(1 KiB to 1 MiB, both ways) and `instructions` (per request, under callgrind): see `gateway.py`,
`routes.py`, `memory.py`, `bodies.py`, `instructions.py` and `README.md`. And `async`
(CloudEvents accepted durably and delivered to the nginx backend, beside SQLite's own
one-row-per-fsynced-commit rate; see `async_delivery.py`), `functions` (python functions: cold
starts and call overhead beside `python -c pass`, throughput through the events port; see
`functions.py`), and `cluster` (three nodes on etcd and NATS: config propagation beside etcd's
own watch, async throughput on the NATS bus beside the embedded queue; see `cluster.py`).
"""

import argparse
import json
from pathlib import Path

from async_delivery import async_scenario, report
from cluster import cluster_scenario
from cluster import report as cluster_report
from dataplane import DATAPLANE
from functions import functions_scenario
from functions import report as functions_report
from harness import require_tools
from table import print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=[*DATAPLANE, "async", "functions", "cluster"],
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="for the `workers` scenario")
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
        if scenario == "cluster":
            result = cluster_scenario(args.seconds, args.connections)
            results.append(result)
            cluster_report(result, args.seconds, args.connections)
            continue
        if scenario == "functions":
            result = functions_scenario(args.seconds, args.connections)
            results.append(result)
            functions_report(result)
            continue
        result = DATAPLANE[scenario](args)
        results.append(result)
        print_table([result])
    print(f"\nAll figures ({args.connections} connections, {args.seconds}s per wrk run):")
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
