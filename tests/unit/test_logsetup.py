"""pgwarden.agent.logsetup: Patroni's `log` section (plain/json, files, levels, tracebacks, env)."""

from __future__ import annotations

import io
import json
import logging
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.agent.logsetup import (
    LOG_FILE_NAME,
    LogSetupError,
    configure_logging,
    plain_format,
    reset_logging,
)
from pgwarden.config import ConfigError, load_local
from pgwarden.config.schema import LogConfig

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    reset_logging()
    root.setLevel(level)


def setup(stream: io.StringIO | None = None, **keys: Any) -> io.StringIO:
    out = stream if stream is not None else io.StringIO()
    configure_logging(LogConfig(**keys), stream=out)
    return out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def boom() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("pgwarden").exception("it failed")


def test_the_default_line_is_patronis() -> None:
    out = setup()
    logging.getLogger("pgwarden").info("no action. I am (n1), the leader with the lock")
    logging.getLogger("pgwarden").debug("not shown at INFO")
    assert len(lines(out)) == 1
    assert re.fullmatch(rf"{TIME} INFO: no action\. I am \(n1\), the leader with the lock", lines(out)[0])


def test_format_and_dateformat() -> None:
    out = setup(format="%(asctime)s [%(name)s] %(levelname)s %(message)s", dateformat="%Y-%m-%dT%H:%M:%S")
    logging.getLogger("pgwarden.dcs.etcd3").warning("etcd is slow")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \[pgwarden\.dcs\.etcd3\] WARNING etcd is slow", lines(out)[0])


def test_a_list_format_for_a_plain_log_joins_its_fields() -> None:
    assert plain_format(["levelname", {"message": "msg"}]) == "%(levelname)s %(message)s"
    assert plain_format(None) == "%(asctime)s %(levelname)s: %(message)s"


def test_levels_are_case_insensitive() -> None:
    out = setup(level="debug")
    logging.getLogger("pgwarden").debug("shown")
    assert lines(out)[0].endswith("DEBUG: shown")


def test_json_lines_carry_the_format_fields_and_the_static_fields() -> None:
    out = setup(type="json", static_fields={"app": "patroni", "cluster": "c1", "message": "never wins"})
    logging.getLogger("pgwarden").info("line one\nline two %s", "arg")
    [line] = lines(out)
    record = json.loads(line)
    assert list(record) == ["asctime", "levelname", "message", "app", "cluster"]
    assert record["levelname"] == "INFO" and record["message"] == "line one\nline two arg"
    assert re.fullmatch(TIME, record["asctime"])
    assert (record["app"], record["cluster"]) == ("patroni", "c1")


def test_json_fields_from_a_list_with_renames_and_from_a_format_string() -> None:
    out = setup(type="json", format=[{"asctime": "@timestamp"}, {"levelname": "level"}, "name", "message", "nope"],
                dateformat="%H:%M:%S")
    logging.getLogger("pgwarden.api").warning("hello")
    record = json.loads(lines(out)[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d", record.pop("@timestamp"))
    assert record == {"level": "WARNING", "name": "pgwarden.api", "message": "hello", "nope": None}

    out = setup(type="json", format="%(levelname)s %(process)d %(message)s")
    logging.getLogger("pgwarden").error("x")
    record = json.loads(lines(out)[0])
    assert list(record) == ["levelname", "process", "message"] and isinstance(record["process"], int)


def test_json_exceptions_are_one_line_with_their_traceback() -> None:
    out = setup(type="json")
    boom()
    [line] = lines(out)
    record = json.loads(line)
    assert record["message"] == "it failed"
    assert "Traceback" in record["exc_info"] and "ValueError: boom" in record["exc_info"]


def test_tracebacks_show_by_default() -> None:
    out = setup()
    boom()
    text = out.getvalue()
    assert "ERROR: it failed" in text and "ValueError: boom" in text


def test_traceback_level_hides_tracebacks_below_it() -> None:
    out = setup(traceback_level="DEBUG")  # tracebacks only while the logger runs at DEBUG
    boom()
    assert lines(out) == [lines(out)[0]] and lines(out)[0].endswith("ERROR: it failed")

    out = setup(type="json", traceback_level="DEBUG")
    boom()
    assert "exc_info" not in json.loads(lines(out)[0])

    out = setup(traceback_level="DEBUG", loggers={"pgwarden": "DEBUG"})  # this logger is at DEBUG: shown
    boom()
    assert "ValueError: boom" in out.getvalue()


def test_the_hidden_traceback_stays_available_to_other_handlers() -> None:
    other = io.StringIO()
    handler = logging.StreamHandler(other)
    logging.getLogger().addHandler(handler)
    try:
        setup(traceback_level="CRITICAL")
        boom()
    finally:
        logging.getLogger().removeHandler(handler)
    assert "ValueError: boom" in other.getvalue()


def test_loggers_set_per_logger_levels_and_a_reload_undoes_removed_ones() -> None:
    out = setup(level="INFO", loggers={"pgwarden.dcs": "DEBUG", "aiohttp": "WARNING"})
    logging.getLogger("pgwarden.dcs.etcd3").debug("dcs debug")
    logging.getLogger("pgwarden").debug("agent debug")
    logging.getLogger("aiohttp.client").info("aiohttp info")
    logging.getLogger("aiohttp.access").info("GET /health")
    assert [line.split(": ", 1)[1] for line in lines(out)] == ["dcs debug"]

    out = setup(level="INFO")
    assert logging.getLogger("pgwarden.dcs").level == logging.NOTSET
    assert logging.getLogger("aiohttp").level == logging.NOTSET
    assert logging.getLogger("aiohttp.access").level == logging.WARNING  # a health check is no news
    logging.getLogger("pgwarden.dcs.etcd3").debug("dcs debug")
    assert lines(out) == []


def test_reconfiguring_replaces_only_our_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    first = setup()
    second = setup(type="json")
    assert len(root.handlers) == len(before) + 1
    logging.getLogger("pgwarden").warning("w")
    assert lines(first) == [] and json.loads(lines(second)[0])["message"] == "w"


def test_heartbeat_deduplication() -> None:
    out = setup(deduplicate_heartbeat_logs=True, format="%(message)s")
    log = logging.getLogger("pgwarden")
    for message in ["no action. I am (n1), the leader with the lock"] * 3 + [
            "reload: local configuration re-read", "reload: local configuration re-read",
            "no action. I am (n1), the leader with the lock",
            "PAUSE: no action. I am (n1), the leader with the lock",
            "PAUSE: no action. I am (n1), the leader with the lock",
            "no action. I am (n1), the leader with the lock"]:
        log.info(message)
    assert lines(out) == [
        "no action. I am (n1), the leader with the lock",
        "reload: local configuration re-read", "reload: local configuration re-read",
        "PAUSE: no action. I am (n1), the leader with the lock",
        "no action. I am (n1), the leader with the lock"]

    out = setup(format="%(message)s")  # off by default
    log.info("no action. I am (n1)")
    log.info("no action. I am (n1)")
    assert len(lines(out)) == 2


def test_dir_writes_a_rotating_patroni_log_with_its_mode(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"  # created if missing
    setup(dir=str(logdir), file_size=300, file_num=2, mode=0o640)
    log = logging.getLogger("pgwarden")
    for i in range(40):
        log.info("line %02d of the rotation test", i)
    names = sorted(p.name for p in logdir.iterdir())
    assert names == [LOG_FILE_NAME, f"{LOG_FILE_NAME}.1", f"{LOG_FILE_NAME}.2"]
    for path in logdir.iterdir():
        assert path.stat().st_size <= 300
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (logdir / LOG_FILE_NAME).read_text().splitlines()[-1].endswith("INFO: line 39 of the rotation test")


def test_json_to_a_file(tmp_path: Path) -> None:
    setup(type="json", dir=str(tmp_path), static_fields={"node": "n1"})
    logging.getLogger("pgwarden").info("hello")
    reset_logging()
    [record] = [json.loads(line) for line in (tmp_path / LOG_FILE_NAME).read_text().splitlines()]
    assert (record["message"], record["node"]) == ("hello", "n1")


def test_a_log_file_that_cannot_be_opened_changes_nothing(tmp_path: Path) -> None:
    out = setup()
    (tmp_path / "file").write_text("")
    with pytest.raises(LogSetupError, match="cannot open the log file"):
        setup(dir=str(tmp_path / "file" / "logs"))
    with pytest.raises(LogSetupError, match="unknown log level"):
        setup(level="LOUD")
    logging.getLogger("pgwarden").warning("still here")
    assert lines(out)[0].endswith("WARNING: still here")


# -- configuration: YAML and PATRONI_LOG_* --------------------------------------------------------------

BASE: dict[str, Any] = {
    "scope": "s", "name": "n",
    "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
    "etcd3": {"host": "127.0.0.1:2379"},
    "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/tmp/pgdata",
                   "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "r"}}},
}


def load(tmp_path: Path, log: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> LogConfig:
    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump({**BASE, **({"log": log} if log is not None else {})}))
    return load_local(path, environ or {}).log


def test_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == LogConfig()
    assert (LogConfig().level, LogConfig().traceback_level, LogConfig().file_num, LogConfig().file_size) == (
        "INFO", "ERROR", 4, 25_000_000)


def test_yaml_log_section(tmp_path: Path) -> None:
    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump(BASE) + "log:\n  mode: 0640\n  level: debug\n"
                    "  format: [{asctime: '@timestamp'}, message]\n  loggers: {pgwarden.dcs: debug}\n")
    config = load_local(path, {}).log
    assert (config.mode, config.level, config.loggers) == (0o640, "DEBUG", {"pgwarden.dcs": "DEBUG"})
    assert config.format == [{"asctime": "@timestamp"}, "message"]
    assert load(tmp_path, {"mode": "0600"}).mode == 0o600


def test_every_patroni_log_variable_reaches_its_key(tmp_path: Path) -> None:
    environ = {
        "PATRONI_LOG_TYPE": "json", "PATRONI_LOG_LEVEL": "warning", "PATRONI_LOG_TRACEBACK_LEVEL": "DEBUG",
        "PATRONI_LOG_FORMAT": "['message', {'levelname': 'level'}]", "PATRONI_LOG_DATEFORMAT": "%H:%M",
        "PATRONI_LOG_STATIC_FIELDS": "{app: patroni, dc: 2}", "PATRONI_LOG_MAX_QUEUE_SIZE": "50",
        "PATRONI_LOG_DIR": "/var/log/pg", "PATRONI_LOG_MODE": "0640", "PATRONI_LOG_FILE_SIZE": "1000",
        "PATRONI_LOG_FILE_NUM": "7", "PATRONI_LOG_LOGGERS": "{pgwarden.dcs: DEBUG, aiohttp: WARNING}",
        "PATRONI_LOG_DEDUPLICATE_HEARTBEAT_LOGS": "true",
    }
    assert load(tmp_path, {"level": "INFO"}, environ) == LogConfig(
        type="json", level="WARNING", traceback_level="DEBUG", format=["message", {"levelname": "level"}],
        dateformat="%H:%M", static_fields={"app": "patroni", "dc": 2}, max_queue_size=50, dir="/var/log/pg",
        mode=0o640, file_size=1000, file_num=7, loggers={"pgwarden.dcs": "DEBUG", "aiohttp": "WARNING"},
        deduplicate_heartbeat_logs=True)


def test_legacy_log_variables(tmp_path: Path) -> None:
    environ = {"PATRONI_LOGLEVEL": "debug", "PATRONI_LOGFORMAT": "%(levelname)s %(message)s",
               "PATRONI_LOG_DATEFMT": "%s"}
    config = load(tmp_path, None, environ)
    assert (config.level, config.format, config.dateformat) == ("DEBUG", "%(levelname)s %(message)s", "%s")


@pytest.mark.parametrize(("log", "problem"), [
    ({"level": "LOUD"}, "log.level: expected a log level"),
    ({"traceback_level": 3.5}, "log.traceback_level: expected a log level"),
    ({"loggers": {"pgwarden": "chatty"}}, "log.loggers: expected a log level (.*) for logger 'pgwarden'"),
    ({"mode": "rw-r-----"}, "log.mode: expected file permissions in octal"),
    ({"mode": 644}, "log.mode: expected file permissions in octal"),  # decimal 644: `mode: 0644` was meant
    ({"format": [["message"]]}, "log.format: expected a format string, or a list"),
    ({"type": "xml"}, "log.type"),
    ({"file_size": 0}, "log.file_size"),
])
def test_bad_log_settings_are_reported_with_their_key(tmp_path: Path, log: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load(tmp_path, log)


def test_a_malformed_call_never_raises_into_the_agent() -> None:
    setup(deduplicate_heartbeat_logs=True, type="json")
    saved = logging.raiseExceptions
    logging.raiseExceptions = False  # Handler.handleError stays quiet
    try:
        logging.getLogger("pgwarden").info("no action. I am %s %s", "only one")  # handler reports, not raises
    finally:
        logging.raiseExceptions = saved
