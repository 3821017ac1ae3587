"""`pgwarden agent [CONFIG]`: start the agent of this host.

The agent lives for months, so what its process loads stays resident that long. This entry point is
reached without the CLI's libraries (`pgwarden.cli.entry` routes `pgwarden agent CONFIG` here before
click is imported; `pgwarden agent --help` still goes through click), validates the configuration in
a child process (`config.checker`: no pydantic, no PyYAML here); the agent then gives back to the OS
the memory start-up left free (`agent.heap.trim_heap`).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path

from pgwarden import aio
from pgwarden.agent.logsetup import LogSetupError, configure_logging
from pgwarden.config import ConfigError, scrub_patroni_env

log = logging.getLogger("pgwarden")

USAGE = "usage: pgwarden agent [CONFIG]   (a Patroni YAML file or a directory of them; or PATRONI_* env)"


def main(argv: list[str]) -> int:
    """`pgwarden agent` with its arguments: at most one, the configuration path."""
    if len(argv) > 1 or any(arg.startswith("-") for arg in argv):
        print(USAGE, file=sys.stderr)
        return 2
    return run(Path(argv[0]) if argv else None)


def run(config: Path | None) -> int:
    """Validate the configuration, then run the agent until it stops; the process's exit status."""
    from pgwarden.config.checker import CheckerError, ConfigChecker

    checker = ConfigChecker()
    try:
        local, bootstrap_dcs, warnings = checker.load_local(config, os.environ)
    except ConfigError as exc:
        print(f"pgwarden: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except CheckerError as exc:
        print(f"pgwarden: {exc}", file=sys.stderr)
        return 2
    patroni_env = scrub_patroni_env(os.environ)  # passwords must not leak into PostgreSQL or scripts we start
    try:
        configure_logging(local.log)
    except LogSetupError as exc:
        print(f"pgwarden: cannot set up logging: {exc}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    _lean_imports()
    from pgwarden.agent.loop import Agent

    agent = Agent(local, config, checker=checker, bootstrap_dcs=(bootstrap_dcs, warnings), environ=patroni_env)
    return aio.run(agent.run())


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd's default soft limit is 1024): a
    burst of REST connections must not leave the agent unable to open a file or a socket. The
    REST server still keeps at most half of it for connections (api.listener). Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:  # e.g. above the kernel's nr_open
            log.warning("cannot raise the open files limit from %s to %s: %s", soft, wanted, exc)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        log.warning("the open files limit is only %d; consider LimitNOFILE=65536 (examples/systemd)", soft)
    return soft


def _lean_imports() -> None:
    """Before aiohttp loads: its `frozenlist` dependency's C extension is C++ and maps libstdc++
    (about 1 MB resident) for lists aiohttp freezes once at start-up; the pure-Python FrozenList
    (frozenlist's documented switch) does the same job. Not passed on to the processes we start."""
    had = "FROZENLIST_NO_EXTENSIONS" in os.environ
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    import frozenlist  # noqa: F401 - loaded now, with the switch in effect

    if not had:
        del os.environ["FROZENLIST_NO_EXTENSIONS"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
