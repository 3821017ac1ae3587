"""Questions to the operator (rich prompts), with one rule: no answer (stdin closed) is an error that
says how to run the command without questions, never a silent default."""

from __future__ import annotations

from collections.abc import Sequence

from rich.prompt import Confirm, Prompt

from pgwarden.cli.session import CtlError, console

NO_ANSWER = "no answer on stdin; give the values as options, or --force to skip the questions"


def ask(question: str, *, default: str | None = None, choices: Sequence[str] | None = None) -> str:
    """A free or multiple-choice answer; `default` is taken on a bare Enter."""
    try:
        if default is None:
            return Prompt.ask(question, console=console, choices=list(choices) if choices else None)
        return Prompt.ask(question, console=console, choices=list(choices) if choices else None, default=default,
                          show_choices=bool(choices))
    except EOFError:
        raise CtlError(NO_ANSWER) from None


def confirm(question: str) -> bool:
    """Yes or no, defaulting to no."""
    try:
        return Confirm.ask(question, console=console, default=False)
    except EOFError:
        raise CtlError(NO_ANSWER) from None


def confirm_or_abort(question: str, force: bool, what: str) -> None:
    """Ask unless `force`; a "no" aborts the command with exit code 1."""
    if not force and not confirm(question):
        raise CtlError(f"aborted: no {what} was requested")


def typed_confirmation(prompt: str, expected: str) -> None:
    """The operator must type `expected` exactly (for destructive commands such as `remove`)."""
    answer = ask(prompt)
    if answer != expected:
        raise CtlError(f"you typed {answer!r}, not {expected!r}; nothing was changed")
