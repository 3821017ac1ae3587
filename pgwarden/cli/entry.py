"""The `pgwarden` command's entry point: the agent without the CLI's libraries, everything else by click.

`pgwarden agent CONFIG` is the long-lived process on every database host; importing click (and what
the CLI commands import) for it would keep them resident for its whole life, so the plain form goes
straight to `pgwarden.agent.run`. Any other form, `pgwarden agent --help` included, is the click
group in `pgwarden.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["agent"] and len(args) <= 2 and not any(arg.startswith("-") for arg in args[1:]):
        from pgwarden.agent.run import main as agent_main

        sys.exit(agent_main(args[1:]))
    from pgwarden.cli.main import main as cli

    cli()


if __name__ == "__main__":
    main()
