"""The agent's logging, configured from Patroni's `log` section (`config.schema.LogConfig`).

Each key, as pgwarden reads it:

- `level` (default INFO): the root logger's level, so every logger without a level of its own.
- `loggers` ({name: level}): per-logger levels, e.g. `{pgwarden.dcs: DEBUG, aiohttp: WARNING}`.
  pgwarden's heartbeat and decision lines come from the `pgwarden` logger, its adapters from
  `pgwarden.<module>`. `aiohttp.access` (one line per health check) is at WARNING unless named here.
- `traceback_level` (default ERROR): the traceback of a record logged with exception info is
  printed only if that record's logger is enabled for `traceback_level`. With the defaults
  (INFO, ERROR) tracebacks are shown; with `traceback_level: DEBUG` they are shown only while the
  logger runs at DEBUG. The message line itself is always written.
- `format` (default Patroni's `%(asctime)s %(levelname)s: %(message)s`): a `logging` %-style format.
  For `type: json` it names the fields of each object: a format string (its `%(field)s` names) or a
  list whose items are a field name or a one-key `{field: name_in_the_json}` mapping
  (`[{asctime: '@timestamp'}, levelname, message]`). A list given to `type: plain` is read as the
  fields joined by spaces.
- `dateformat`: the `time.strftime` format of `asctime` (default: logging's `2024-01-31 12:00:00,123`).
- `type` (plain | json): json writes one JSON object per line: the fields of `format` in order
  (`message` is the formatted message, `asctime` the formatted time, any other name a `LogRecord`
  attribute: `name`, `process`, `funcName`, ...; an unknown one is null), then `static_fields`
  (a field of `format` wins over a static field of the same name), then `exc_info` with the
  traceback when there is one to show (see `traceback_level`) and `stack_info` when asked for.
- `static_fields` ({name: value}): constant fields added to every JSON object (json only).
- `dir`: write to the rotating file `<dir>/patroni.log` (Patroni's name, so collectors keep their
  paths) instead of stderr; the directory is created if it does not exist.
  `file_size` (bytes, default 25000000) rotates it, keeping `file_num` (default 4) older files
  `patroni.log.1` ... `patroni.log.<file_num>`.
- `mode`: the log files' permissions (e.g. 0640), set on every file the agent opens, whatever the
  umask; unset: the umask decides.
- `deduplicate_heartbeat_logs` (default false): a heartbeat line ("no action. I am ...", with or
  without the "PAUSE: " prefix) identical to the previous heartbeat line is not written; any
  other line is always written.
- `max_queue_size`: accepted and ignored. Patroni logs through a queue drained by a thread;
  pgwarden writes each record synchronously, so no record is ever dropped for a full queue.

`configure_logging` is called at start and again when a reload brings a different `log` section; it
replaces only the handler it installed itself, and fails (`LogSetupError`) without changing
anything if the new file cannot be opened. The agent stays lean: stdlib only, and `logging.handlers`
only when `dir` is set.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgwarden.config.schema import LogConfig

DEFAULT_FORMAT = "%(asctime)s %(levelname)s: %(message)s"
LOG_FILE_NAME = "patroni.log"
DEFAULT_LOGGER_LEVELS: Mapping[str, int] = {"aiohttp.access": logging.WARNING}
HEARTBEAT_LOGGER = "pgwarden"

_FIELD = re.compile(r"%\((\w+)\)")
_HEARTBEAT = re.compile(r"(?:PAUSE: )?no action\. I am ")


class LogSetupError(Exception):
    """The `log` section cannot be applied (an unknown level, a log file that cannot be opened)."""


def parse_level(level: str | int) -> int:
    """'info' / 'INFO' / 20 -> 20; anything else raises LogSetupError."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    value = logging.getLevelName(str(level).strip().upper())
    if isinstance(value, int):
        return value
    raise LogSetupError(f"unknown log level {level!r}")


def json_fields(fmt: Any) -> list[tuple[str, str]]:
    """(record attribute, JSON key) pairs named by a format string or a list of fields."""
    if isinstance(fmt, str):
        fields = [(name, name) for name in _FIELD.findall(fmt)]
    elif isinstance(fmt, Sequence):
        fields = []
        for item in fmt:
            if isinstance(item, str):
                fields.append((item, item))
            elif isinstance(item, Mapping):
                fields.extend((str(key), str(name)) for key, name in item.items())
            else:
                raise LogSetupError(f"log.format: expected a field name or {{field: name}}, found {item!r}")
    else:
        fields = []
    return fields or json_fields(DEFAULT_FORMAT)


def plain_format(fmt: Any) -> str:
    """The %-style format string of a plain log: `format` as is, a list of fields joined by spaces."""
    if fmt is None or fmt == "" or fmt == []:
        return DEFAULT_FORMAT
    if isinstance(fmt, str):
        return fmt
    return " ".join(f"%({name})s" for name, _ in json_fields(fmt))


class _TracebackGate:
    """Show a record's traceback only if its logger is enabled for `traceback_level`."""

    def __init__(self, traceback_level: int) -> None:
        self.traceback_level = traceback_level

    def strip(self, record: logging.LogRecord) -> logging.LogRecord:
        if not record.exc_info or logging.getLogger(record.name).isEnabledFor(self.traceback_level):
            return record
        clone = logging.makeLogRecord(record.__dict__)  # the record itself may reach other handlers
        clone.exc_info = None
        clone.exc_text = None
        return clone


class PlainFormatter(logging.Formatter):
    def __init__(self, fmt: str, datefmt: str | None, gate: _TracebackGate) -> None:
        super().__init__(fmt, datefmt)
        self._gate = gate

    def format(self, record: logging.LogRecord) -> str:
        return super().format(self._gate.strip(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json.dumps escapes every newline)."""

    def __init__(self, fields: list[tuple[str, str]], datefmt: str | None, static_fields: Mapping[str, Any],
                 gate: _TracebackGate) -> None:
        super().__init__(None, datefmt)
        self._fields = fields
        self._static = dict(static_fields)
        self._gate = gate

    def usesTime(self) -> bool:  # logging.Formatter's name
        return any(name == "asctime" for name, _ in self._fields)

    def format(self, record: logging.LogRecord) -> str:
        record = self._gate.strip(record)
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        out: dict[str, Any] = {key: getattr(record, name, None) for name, key in self._fields}
        for key, value in self._static.items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc_info"] = record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


class HeartbeatDeduplicator(logging.Filter):
    """Drops a heartbeat line ("no action. I am ...") identical to the previous heartbeat line."""

    def __init__(self) -> None:
        super().__init__()
        self._last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != HEARTBEAT_LOGGER:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it, never raise into the caller
            return True
        if not _HEARTBEAT.match(message):
            return True
        if message == self._last:
            return False
        self._last = message
        return True


def build_formatter(config: LogConfig) -> logging.Formatter:
    gate = _TracebackGate(parse_level(config.traceback_level))
    if config.type == "json":
        fields = json_fields(config.format if config.format not in (None, "", []) else DEFAULT_FORMAT)
        return JsonFormatter(fields, config.dateformat, config.static_fields, gate)
    return PlainFormatter(plain_format(config.format), config.dateformat, gate)


def log_file_path(config: LogConfig) -> str | None:
    return os.path.join(config.dir, LOG_FILE_NAME) if config.dir else None


def build_handler(config: LogConfig, stream: IO[str] | None = None) -> logging.Handler:
    """The handler the `log` section describes: a rotating `<dir>/patroni.log`, or `stream` (stderr)."""
    path = log_file_path(config)
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    else:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handler = _rotating_handler(path, config.file_size, config.file_num, config.mode)
        except OSError as exc:
            raise LogSetupError(f"cannot open the log file {path}: {exc}") from exc
    handler.setFormatter(build_formatter(config))
    if config.deduplicate_heartbeat_logs:
        handler.addFilter(HeartbeatDeduplicator())
    return handler


def _rotating_handler(path: str, size: int, count: int, permissions: int | None) -> logging.Handler:
    from logging.handlers import RotatingFileHandler  # only agents that log to a file load it

    class Handler(RotatingFileHandler):
        def _open(self) -> Any:
            stream = super()._open()
            if permissions is not None:
                os.fchmod(stream.fileno(), permissions)
            return stream

    return Handler(path, maxBytes=size, backupCount=count, encoding="utf-8")


class _Installed:
    """What `configure_logging` installed last: its handler and the loggers whose level it set."""

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None
        self.levels: dict[str, int] = {}


_INSTALLED = _Installed()


def configure_logging(config: LogConfig, stream: IO[str] | None = None) -> None:
    """Apply `config` to the root logger: its level, one handler (replacing the one installed
    before, if any) and the per-logger levels. Raises LogSetupError, changing nothing, when the
    levels do not parse or the log file cannot be opened."""
    root_level = parse_level(config.level)
    wanted = {**DEFAULT_LOGGER_LEVELS, **{str(name): parse_level(lvl) for name, lvl in config.loggers.items()}}
    parse_level(config.traceback_level)
    handler = build_handler(config, stream)
    root = logging.getLogger()
    previous = _INSTALLED.handler
    root.addHandler(handler)
    if previous is not None:
        root.removeHandler(previous)
        previous.close()
    _INSTALLED.handler = handler
    root.setLevel(root_level)
    for name in _INSTALLED.levels.keys() - wanted.keys():
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in wanted.items():
        logging.getLogger(name).setLevel(level)
    _INSTALLED.levels = wanted


def reset_logging() -> None:
    """Remove what `configure_logging` installed (for tests)."""
    root = logging.getLogger()
    if _INSTALLED.handler is not None:
        root.removeHandler(_INSTALLED.handler)
        _INSTALLED.handler.close()
        _INSTALLED.handler = None
    for name in _INSTALLED.levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    _INSTALLED.levels = {}
