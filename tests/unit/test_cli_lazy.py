"""`pgwarden agent` must not load the client commands' modules: they would stay resident in the agent."""

from __future__ import annotations

import subprocess
import sys

import click

from pgwarden.cli.main import LAZY_COMMANDS, main
from pgwarden.cli.manage import MANAGE_COMMANDS
from pgwarden.cli.view import VIEW_COMMANDS


def test_every_lazy_entry_names_its_command() -> None:
    ctx = click.Context(main)
    for name in LAZY_COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name


def test_every_client_command_is_listed() -> None:
    listed = set(main.list_commands(click.Context(main)))
    assert {c.name for c in (*VIEW_COMMANDS, *MANAGE_COMMANDS)} <= listed
    assert {"agent", "demo", "validate-config", "drill", "edit-config", "route", "haproxy-config"} <= listed


def test_importing_the_cli_loads_no_client_module() -> None:
    code = ("import sys, pgwarden.cli.main; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'rich' or m in "
            "('pgwarden.cli.view', 'pgwarden.cli.manage', 'pgwarden.cli.session', 'pgwarden.drill')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == ""
