"""`pgwarden demo`: a local etcd and a pgwarden cluster on loopback, until Ctrl-C."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

from rich.console import Console

from pgwarden import aio
from pgwarden.cli.listing import render_table
from pgwarden.cli.session import make_console
from pgwarden.config import load_local
from pgwarden.dcs import open_dcs
from pgwarden.localcluster.cluster import LocalCluster


def run_demo(workdir: Path, nodes: int, keep: bool, dcs_kind: str = "etcd3") -> int:
    console = make_console()
    if workdir.exists() and not keep:
        shutil.rmtree(workdir)
    cluster = LocalCluster(workdir, size=nodes, dcs_kind=dcs_kind)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server = "ZooKeeper" if dcs_kind == "zookeeper" else "etcd"
        with console.status(f"starting {server} and the pgwarden agents..."):
            cluster.start()
        address = f"127.0.0.1:{cluster.etcd_ports[0]}"
        console.print(f"{server}: {address if dcs_kind == 'zookeeper' else 'http://' + address}   workdir: {workdir}")
        with console.status("bootstrapping: waiting for one primary and streaming replicas..."):
            _wait(cluster, stop)
        if stop.is_set():
            return 0
        _print_table(cluster, console)
        _print_tour(cluster, console)
        while not stop.wait(1.0):
            pass
        return 0
    finally:
        console.print("stopping the agents, PostgreSQL and etcd...")
        cluster.stop()
        if not keep:
            cluster.remove()
        console.print("stopped.")


def _wait(cluster: LocalCluster, stop: threading.Event) -> None:
    while not stop.is_set():
        if cluster.healthy():
            return
        stop.wait(0.5)


def _print_table(cluster: LocalCluster, console: Console) -> None:
    local = load_local(cluster.nodes[0].config_path, {})

    async def show() -> None:
        dcs = await open_dcs(local.dcs_kind, local.dcs.as_mapping(), namespace=local.namespace,
                             scope=local.scope, name=local.name, ttl=30, readonly=True)
        try:
            render_table(await dcs.get_cluster(), console)
        finally:
            await dcs.close()

    aio.run(show())


def _print_tour(cluster: LocalCluster, console: Console) -> None:
    config = cluster.nodes[0].config_path
    console.print("\nREST API:")
    for node in cluster.nodes:
        console.print(f"  {node.name}: {node.api_url}/patroni   (PostgreSQL on 127.0.0.1:{node.pg_port})")
    console.print("\nTry, in another shell:")
    console.print(f"  pgwarden list -c {config} -W")
    console.print(f"  curl -s {cluster.nodes[0].api_url}/cluster")
    console.print("  kill -9 the primary's agent and postmaster, and watch a replica take over;")
    console.print(f"  logs: {cluster.workdir}/node*/agent.log")
    console.print("\nCtrl-C stops everything.")
