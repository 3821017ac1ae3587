"""Replacing a data directory's contents safely (issue 11, issue 20 item 8): never the directory itself,
never one owned by another user, a symlink's target's contents, at most one `.failed` copy; the
bootstrap's undo removes only what it created; obviously wrong data_dir paths are refused by the
configuration; the error summary names PostgreSQL's cause; the bootstrap's steps are made lazily."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.config import validate_file
from pgwarden.config.paths import data_dir_problem
from pgwarden.postgres.datadir import (
    empty_data_dir,
    failed_copies,
    replace_problem,
    set_data_dir_aside,
    undo_created,
)
from pgwarden.postgres.process import error_summary


def _data(path: Path) -> Path:
    """A small fake data directory with a file and a subdirectory."""
    path.mkdir(mode=0o700)
    (path / "PG_VERSION").write_text("15\n")
    (path / "global").mkdir()
    (path / "global" / "pg_control").write_bytes(b"x" * 16)
    return path


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- moving aside: at most one copy ------------------------------------------------------------------


def test_set_aside_moves_the_contents_and_keeps_the_directory(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    before = os.stat(data)
    result = set_data_dir_aside(data, "20260101T000000")
    assert result.ok, result.message
    copy = tmp_path / "data.failed.20260101T000000"
    assert _names(copy) == ["PG_VERSION", "global"]
    assert data.is_dir() and _names(data) == []
    assert os.stat(data).st_ino == before.st_ino  # the same directory, not a new one
    assert failed_copies(data) == [copy]


def test_at_most_one_failed_copy_is_kept(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    assert set_data_dir_aside(data, "20260101T000000").ok
    for n in range(4):  # four more failures (or reinitializations) of the same data directory
        (data / "PG_VERSION").write_text(f"{n}\n")
        result = set_data_dir_aside(data, f"2026010{n + 2}T000000")
        assert result.ok, result.message
        assert "keeping only the earlier copy" in result.message
    assert [p.name for p in tmp_path.iterdir() if ".failed." in p.name] == ["data.failed.20260101T000000"]
    assert _names(data) == []
    assert (tmp_path / "data.failed.20260101T000000" / "PG_VERSION").read_text() == "15\n"  # the oldest


def test_a_symlinked_data_dir_keeps_its_link_and_the_copy_goes_next_to_the_target(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    target = _data(tmp_path / "disk" / "pgdata")
    link = tmp_path / "data"
    link.symlink_to(target)
    result = set_data_dir_aside(link, "20260101T000000")
    assert result.ok, result.message
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert _names(target) == []
    assert _names(tmp_path / "disk" / "pgdata.failed.20260101T000000") == ["PG_VERSION", "global"]
    assert not list(tmp_path.glob("data.failed.*"))  # nothing beside the link
    assert empty_data_dir(link).ok and link.is_symlink()


def test_a_missing_data_dir_is_fine(tmp_path: Path) -> None:
    assert set_data_dir_aside(tmp_path / "data", "x").ok
    assert empty_data_dir(tmp_path / "data").ok
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_directory_owned_by_another_user_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 65534, 65534)  # nobody
    # pgwarden runs as root here, so root is "us": another user's directory must not be touched.
    problem = replace_problem(data)
    assert problem is not None and "owned by" in problem and "uid 65534" in problem
    for result in (set_data_dir_aside(data, "x"), empty_data_dir(data), undo_created(data, existed=True),
                   undo_created(data, existed=False)):
        assert not result.ok and "refusing" in result.message
    assert data.is_dir() and not list(tmp_path.glob("data.failed.*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="as root every directory can be chowned to us")
def test_a_root_owned_directory_is_refused_for_a_normal_user() -> None:
    problem = replace_problem(Path("/tmp"))  # owned by root, not by us; two levels deep is not needed
    assert problem is not None


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    result = set_data_dir_aside(tmp_path / "data", "x")
    assert not result.ok and "not a directory" in result.message


def test_system_paths_are_refused_even_through_a_symlink(tmp_path: Path) -> None:
    link = tmp_path / "data"
    link.symlink_to("/etc")
    problem = replace_problem(link)
    assert problem is not None and "/etc" in problem
    assert not set_data_dir_aside(link, "x").ok
    assert Path("/etc/passwd").exists()


# -- the bootstrap's undo ----------------------------------------------------------------------------


def test_undo_removes_a_directory_the_bootstrap_created(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    result = undo_created(data, existed=False)
    assert result.ok, result.message
    assert not data.exists() and _names(tmp_path) == []


def test_undo_empties_a_directory_that_was_there_before(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    assert undo_created(data, existed=True).ok
    assert data.is_dir() and _names(data) == []


def test_undo_never_removes_a_symlink(tmp_path: Path) -> None:
    target = _data(tmp_path / "target")
    link = tmp_path / "data"
    link.symlink_to(target)
    assert undo_created(link, existed=False).ok
    assert link.is_symlink() and target.is_dir() and _names(target) == []


# -- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/etc", "/usr", "/bin", "/boot", "/dev", "/proc", "/sys", "/var", "/home",
                                  "/root", "/etc/postgresql/data", "/usr/lib/postgresql", "/var/lib", "//", ".",
                                  "..", "../data", ""])
def test_obviously_wrong_data_dirs_are_refused(path: str) -> None:
    assert data_dir_problem(path) is not None


@pytest.mark.parametrize("path", ["/var/lib/postgresql/15/main", "/srv/pg", "/data/pg", "/home/postgres/data",
                                  "/tmp/x", "data/postgresql0"])
def test_reasonable_data_dirs_are_accepted(path: str) -> None:
    assert data_dir_problem(path) is None


def _config(data_dir: str) -> dict[str, Any]:
    return {
        "scope": "s", "name": "n1", "etcd3": {"hosts": "127.0.0.1:2379"},
        "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
        "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": data_dir,
                       "authentication": {"superuser": {"username": "postgres", "password": "x"},
                                          "replication": {"username": "replicator", "password": "y"}}},
    }


@pytest.mark.parametrize("path", ["/", "/etc"])
def test_validate_config_refuses_a_system_data_dir(tmp_path: Path, path: str) -> None:
    file = tmp_path / "pgwarden.yml"
    file.write_text(yaml.safe_dump(_config(path)))
    problems = validate_file(file, {})
    assert any("postgresql.data_dir" in p and "refusing" in p for p in problems), problems
    file.write_text(yaml.safe_dump(_config("/var/lib/postgresql/15/main")))
    assert not [p for p in validate_file(file, {}) if "data_dir" in p]


# -- what the operator is told -----------------------------------------------------------------------


PG_CTL_FAILED = """pg_ctl start failed: waiting for server to start.... stopped waiting
pg_ctl: could not start server
Examine the log output.
2026-12-02 18:13:52.815 UTC [13017] LOG:  invalid value for parameter "shared_buffers": "1PB"
2026-12-02 18:13:52.815 UTC [13017] HINT:  Valid units for this parameter are "B", "kB", "MB", "GB", and "TB".
2026-12-02 18:13:52.815 UTC [13017] FATAL:  configuration file "/d/postgresql.conf" contains errors"""


def test_error_summary_names_the_parameter() -> None:
    assert error_summary(PG_CTL_FAILED) == (
        'invalid value for parameter "shared_buffers": "1PB"; FATAL: configuration file "/d/postgresql.conf" '
        "contains errors")


def test_error_summary_of_a_command_line_refusal_and_of_plain_output() -> None:
    assert error_summary('2026-12-02 10:00:00 UTC [1] FATAL:  unrecognized configuration parameter "foo_bar"') \
        == 'FATAL: unrecognized configuration parameter "foo_bar"'
    assert error_summary('pg_basebackup: error: connection to server at "127.0.0.1", port 5 failed: '
                         "Connection refused\n\tIs the server running on that host?").startswith(
        "pg_basebackup: error: connection to server")
    assert error_summary("") == ""
    assert len(error_summary("x" * 1000)) == 400


def test_error_summary_keeps_the_clients_words_around_a_quoted_server_error() -> None:
    text = ('pg_basebackup exited with 1: pg_basebackup: error: connection to server at "127.0.0.1", port 5432 '
            'failed: FATAL:  password authentication failed for user "replicator"')
    assert error_summary(text) == (
        'pg_basebackup exited with 1: pg_basebackup: error: connection to server at "127.0.0.1", port 5432 '
        'failed: FATAL: password authentication failed for user "replicator"')


# -- a failed clone removes what it created, and only that -------------------------------------------


def _fake_basebackup(tmp_path: Path) -> Path:
    """A pg_basebackup that writes part of a copy into -D, then dies (as when it is killed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_basebackup"
    script.write_text('#!/bin/sh\nwhile [ "$1" != "-D" ]; do shift; done\nmkdir -p "$2/base"\n'
                      'echo 15 > "$2/PG_VERSION"\necho "pg_basebackup: error: killed" >&2\nexit 1\n')
    script.chmod(0o755)
    return bin_dir


def _controller(tmp_path: Path, data_dir: Path) -> Any:
    from pgwarden.postgres.controller import PgController
    from pgwarden.postgres.settings import Credentials, PgSettings

    return PgController(PgSettings(data_dir=data_dir, name="n2", scope="s", superuser=Credentials("postgres", "x"),
                                   replication=Credentials("replicator", "y"), bin_dir=_fake_basebackup(tmp_path),
                                   pgpass=tmp_path / "pgpass"))


def test_a_failed_clone_removes_the_directory_it_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = asyncio.run(_controller(tmp_path, data).basebackup("127.0.0.1", 1))
    assert not result.ok and "pg_basebackup: error: killed" in result.message
    assert not data.exists()


def test_a_failed_clone_empties_the_empty_directory_it_was_given(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    result = asyncio.run(_controller(tmp_path, data).basebackup("127.0.0.1", 1))
    assert not result.ok
    assert data.is_dir() and _names(data) == []


def test_a_clone_never_touches_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    result = asyncio.run(_controller(tmp_path, data).basebackup("127.0.0.1", 1))
    assert not result.ok and "not empty" in result.message
    assert _names(data) == ["PG_VERSION", "global"]
