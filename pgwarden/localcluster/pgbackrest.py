"""A pgBackRest repository on the local file system, for the tests and benchmarks of backups.

Everything pgBackRest writes (the repository, its logs, locks and spool) lives under one directory, and
its configuration file is passed with `--config`, so that several repositories can be used at once on
one machine and nothing is left behind. pgBackRest runs as the PostgreSQL OS user, as the archive
and restore commands PostgreSQL runs do.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pgwarden.localcluster.postgres import PG_USER, give_to_pg_user

PGBACKREST_BIN = "/usr/bin/pgbackrest"


@dataclass(frozen=True)
class PgBackRest:
    """One repository (`workdir/repo`) with one stanza for one PostgreSQL instance."""

    workdir: Path
    stanza: str

    @property
    def config_path(self) -> Path:
        return self.workdir / "pgbackrest.conf"

    def write_config(self, pg_path: Path, pg_port: int, socket_dir: Path) -> None:
        """The configuration file: the repository and pgBackRest's own files under `workdir`; the stanza's
        PostgreSQL (the primary backups are taken from) at `pg_path`, reached through `socket_dir`."""
        for sub in ("repo", "log", "lock", "spool"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join([
            "[global]",
            f"repo1-path={self.workdir / 'repo'}",
            f"log-path={self.workdir / 'log'}",
            f"lock-path={self.workdir / 'lock'}",
            f"spool-path={self.workdir / 'spool'}",
            "log-level-console=warn",
            "log-level-file=info",
            "start-fast=y",
            "compress-type=none",
            "",
            f"[{self.stanza}]",
            f"pg1-path={pg_path}",
            f"pg1-port={pg_port}",
            f"pg1-socket-path={socket_dir}",
            f"pg1-user={PG_USER}",
            "",
        ]))
        give_to_pg_user(self.workdir)
        os.chmod(self.workdir, 0o755)  # the agents' PostgreSQL reads the configuration file too

    def command(self, *args: str) -> list[str]:
        """A pgbackrest command line for this repository and stanza."""
        return [PGBACKREST_BIN, f"--config={self.config_path}", f"--stanza={self.stanza}", *args]

    def shell(self, *args: str) -> str:
        """The same, as one line (archive_command, restore_command, a method's `command`)."""
        return shlex.join(self.command(*args))

    @property
    def archive_command(self) -> str:
        return self.shell("archive-push") + " %p"

    @property
    def restore_command(self) -> str:
        return self.shell("archive-get") + ' %f "%p"'

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run pgbackrest as the PostgreSQL OS user; raises CalledProcessError with its output on failure."""
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, check=False,
                              cwd=str(self.workdir), **kwargs)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        return done  # type: ignore[no-any-return]

    def create_stanza(self) -> None:
        self.run("stanza-create")

    def full_backup(self) -> None:
        self.run("--type=full", "backup", timeout=600)
