"""A real agent with Patroni's `log: {type: json, dir: ...}` writes JSON lines to <dir>/patroni.log,
and a SIGHUP with a changed `log` section switches it to plain lines without a restart."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

HEARTBEAT = "no action. I am (node1), the leader with the lock"


def _log(node: Node) -> dict[str, Any]:
    return {"log": {"type": "json", "dir": str(node.dir / "log"), "static_fields": {"cluster": "itlog"},
                    "format": [{"asctime": "@timestamp"}, "levelname", "message"]}}


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def test_json_log_file_and_reload_to_plain() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-log-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, size=1, scope="itlog", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         extra_config=_log)
    try:
        local.start()
        node = local.nodes[0]
        logfile = node.dir / "log" / "patroni.log"  # the agent created the directory
        wait_until(lambda: any(HEARTBEAT in line for line in _lines(logfile)), 40, "a JSON heartbeat line")

        records = [json.loads(line) for line in _lines(logfile)]  # every line is one JSON object
        assert all(set(r) >= {"@timestamp", "levelname", "message", "cluster"} for r in records)
        assert all(r["cluster"] == "itlog" for r in records)
        assert any(r["message"] == HEARTBEAT and r["levelname"] == "INFO" for r in records)
        assert HEARTBEAT not in node.log_path.read_text()  # the file replaces stderr

        config = local.node_config(node)
        config["log"] = {"dir": str(node.dir / "log"), "level": "INFO"}
        node.config_path.write_text(yaml.safe_dump(config))
        assert node.agent is not None
        node.agent.send_signal(signal.SIGHUP)
        wait_until(lambda: any(line.endswith(f"INFO: {HEARTBEAT}") for line in _lines(logfile)), 20,
                   "a plain heartbeat line after the reload")
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)
