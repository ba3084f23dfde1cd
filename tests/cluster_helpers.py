"""A cluster for tests: a real etcd, a real nats-server and eventgate nodes as subprocesses, each
started with the command and args of the Kubernetes manifest (`deploy/kubernetes/eventgate.yaml`)
with the in-cluster endpoints swapped for the loopback servers, so that what the tests run is
what the cluster runs.
"""

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.etcd_server import EtcdServer, TcpProxy
from tests.nats_server import NatsServer
from tests.processes import ROOT, STARTUP_TIMEOUT, EventgateProcess, wait_until

MANIFEST = ROOT / "deploy" / "kubernetes" / "eventgate.yaml"
IN_CLUSTER_STORE = "etcd://etcd:2379"
IN_CLUSTER_BUS = "nats://nats:4222"


def manifest_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_container() -> dict[str, Any]:
    """The eventgate container of the manifest's Deployment."""
    [deployment] = [d for d in manifest_documents(MANIFEST) if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def node_command(store: str, bus: str, data_dir: Path) -> list[str]:
    """The manifest's command and args for a node on this machine: the store and bus URLs point
    at the test's servers, the data dir at the test's directory, the host at loopback."""
    container = manifest_container()
    swaps = {
        f"--store={IN_CLUSTER_STORE}": f"--store={store}",
        f"--bus={IN_CLUSTER_BUS}": f"--bus={bus}",
        "--host=0.0.0.0": "--host=127.0.0.1",
    }
    args = []
    for arg in container["args"]:
        if arg.startswith("--data-dir="):
            arg = f"--data-dir={data_dir}"
        args.append(swaps.get(arg, arg))
    [program] = container["command"]
    assert program == "eventgate", container["command"]
    return [sys.executable, "-m", "eventgate", *args]


class ClusterNode(EventgateProcess):
    """`eventgate serve` with the manifest's args; its ports come from the environment."""

    def __init__(self, data_dir: Path, store: str, bus: str, **env: str) -> None:
        super().__init__(data_dir, env)
        self.store = store
        self.bus = bus
        self.name = data_dir.name

    def start(self) -> "ClusterNode":
        env = {
            **os.environ,
            "EVENTGATE_EVENTS_PORT": str(self.events_port),
            "EVENTGATE_CONFIG_PORT": str(self.config_port),
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            node_command(self.store, self.bus, self.data_dir), env=env, stdout=log, stderr=log
        )
        wait_until(self._ready, STARTUP_TIMEOUT * 3, f"{self.name} to serve (log: {self.log_path})")
        return self

    def config(self, space: str = "default") -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"{self.config_url}/v1/spaces/{space}", timeout=10)

    def events(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.events_url, timeout=10)


class ProxyThread:
    """A `TcpProxy` running on its own event loop in a thread, so that a test (sync or async)
    can sever and restore a node's connection to etcd."""

    def __init__(self, target_port: int) -> None:
        self.proxy = TcpProxy(target_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self.proxy.listen())

    @property
    def url(self) -> str:
        return f"etcd://{self.proxy.endpoint}"

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def sever(self) -> None:
        self._call(self.proxy.sever())

    def restore(self) -> None:
        self._call(self.proxy.listen())

    def close(self) -> None:
        self._call(self.proxy.sever())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Cluster:
    """etcd, nats-server and `size` nodes; `nodes[i]` may go through a proxy to etcd."""

    def __init__(self, directory: Path, etcd: EtcdServer, nats: NatsServer) -> None:
        self.directory = directory
        self.etcd = etcd
        self.nats = nats
        self.bus_name = f"t{uuid.uuid4().hex[:12]}"
        self.prefix = f"/eventgate-cluster/{uuid.uuid4().hex}/"
        self.nodes: list[ClusterNode] = []
        self.proxies: list[ProxyThread] = []

    def start_nodes(self, count: int, *, via_proxy: tuple[int, ...] = ()) -> None:
        """Start `count` nodes at once (node i reaches etcd through a proxy if i is listed)."""
        nodes = [self.add_node(via_proxy=index in via_proxy) for index in range(count)]
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(ClusterNode.start, nodes))

    def start_node(self, *, via_proxy: bool = False, **env: str) -> ClusterNode:
        return self.add_node(via_proxy=via_proxy, **env).start()

    def add_node(self, *, via_proxy: bool = False, **env: str) -> ClusterNode:
        store = self.etcd.url
        if via_proxy:
            proxy = ProxyThread(self.etcd.client_port)
            self.proxies.append(proxy)
            store = proxy.url
        env = {
            "EVENTGATE_STORE_PREFIX": self.prefix,
            "EVENTGATE_BUS_NAME": self.bus_name,
            "EVENTGATE_DELIVERY_LEASE": "1",
            **env,
        }
        index = len(self.nodes)
        node = ClusterNode(self.directory / f"node-{index}", store, self.nats.url, **env)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for proxy in self.proxies:
            proxy.close()

    def logs(self) -> Iterator[str]:
        for node in self.nodes:
            if node.log_path.exists():
                yield f"--- {node.name}\n{node.log_path.read_text()[-4000:]}"
