"""Running out of file descriptors (EMFILE/ENFILE) is transient: it never reads as "the data
directory is gone" or "PostgreSQL stopped", so a leader keeps its key and its primary (issue 20).
The real condition is produced in a child process with a lowered RLIMIT_NOFILE."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pgwarden.agent.run import raise_open_file_limit
from pgwarden.model import DataDirState, LocalPg
from pgwarden.postgres.datadir import directory_state
from pgwarden.postgres.probe import Prober
from pgwarden.postgres.settings import PgSettings

probe_module = sys.modules[Prober.__module__]  # `pgwarden.postgres.probe` the package attribute is a function

REPO = Path(__file__).resolve().parents[2]
HEALTHY = LocalPg(DataDirState.VALID, sysid="7", running=True, accepting=True, in_recovery=False, wal_lsn=100)

EXHAUST = textwrap.dedent("""
    import os, resource, sys, tempfile
    from pathlib import Path
    from pgwarden.postgres.datadir import can_open_files, directory_state
    data = Path(tempfile.mkdtemp())
    (data / "PG_VERSION").write_text("15")
    (data / "global").mkdir()
    (data / "global" / "pg_control").write_bytes(b"x")
    assert directory_state(data).value == "valid" and can_open_files()
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == 24, exc
    assert not can_open_files()
    try:
        state = directory_state(data)
    except OSError as exc:
        print("raised", exc.errno)
    else:
        print("state", state.value)
""")


def test_a_real_emfile_is_not_an_inaccessible_data_directory() -> None:
    done = subprocess.run([sys.executable, "-c", EXHAUST], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["raised", str(errno.EMFILE)]


def test_directory_state_still_reports_other_errors(tmp_path: Path) -> None:
    assert directory_state(tmp_path / "missing") is DataDirState.MISSING
    assert directory_state(tmp_path) is DataDirState.EMPTY


async def test_the_probe_keeps_its_last_observation_while_files_cannot_be_opened(
    monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    prober = Prober(keep_connection=False)
    observations = [HEALTHY]

    async def probe(settings: PgSettings) -> LocalPg:
        return observations.pop(0)

    monkeypatch.setattr(prober, "_probe", probe)
    settings = object()
    assert await prober.probe(settings) == HEALTHY  # type: ignore[arg-type]

    # 1. The data directory listing fails with EMFILE: the probe itself raises it.
    async def emfile(settings: PgSettings) -> LocalPg:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(prober, "_probe", emfile)
    for _ in range(3):
        assert await prober.probe(settings) == HEALTHY  # type: ignore[arg-type]
    # 2. EMFILE swallowed inside (postmaster.pid unreadable, pg_controldata could not start): the probe
    #    looks like a stopped or broken PostgreSQL, but files cannot be opened right now.
    for broken in (LocalPg(DataDirState.VALID, sysid="7"), LocalPg(DataDirState.INVALID),
                   LocalPg(DataDirState.INACCESSIBLE)):  # fmt: skip
        monkeypatch.setattr(prober, "_probe", lambda settings, broken=broken: _value(broken))
        monkeypatch.setattr(probe_module, "can_open_files", lambda: False)
        assert await prober.probe(settings) == HEALTHY  # type: ignore[arg-type]
        # ... and once files can be opened again, the same observation is believed
        monkeypatch.setattr(probe_module, "can_open_files", lambda: True)
        assert await prober.probe(settings) == broken  # type: ignore[arg-type]
        monkeypatch.setattr(prober, "_last", HEALTHY)
    lines = [r for r in caplog.records if "cannot open files" in r.getMessage()]
    assert len(lines) == 1  # rate-limited


async def _value(pg: LocalPg) -> LocalPg:
    return pg


RAISE_LIMIT = textwrap.dedent("""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    from pgwarden.agent.run import raise_open_file_limit
    print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
""")


def test_the_agent_raises_its_soft_descriptor_limit_to_the_hard_one() -> None:
    done = subprocess.run([sys.executable, "-c", RAISE_LIMIT], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    returned, soft, hard = done.stdout.split()
    if hard != str(resource.RLIM_INFINITY):
        assert returned == soft == hard
    assert raise_open_file_limit() >= 256


def test_the_systemd_unit_raises_the_limit() -> None:
    assert "LimitNOFILE=65536" in (REPO / "examples" / "systemd" / "pgwarden.service").read_text().splitlines()


def test_the_systemd_unit_does_not_restart_an_agent_that_gave_up() -> None:
    from pgwarden.agent.loop import EXIT_GAVE_UP

    lines = (REPO / "examples" / "systemd" / "pgwarden.service").read_text().splitlines()
    assert f"RestartPreventExitStatus=2 {EXIT_GAVE_UP}" in lines
