"""The CLI's error convention, shared by every command module: a user error (any ValueError, an OS error)
prints one line `error: ...` and exits 2; Ctrl-C prints `interrupted` and exits 130; anything else prints one
`error: internal ...` line and exits 1. EVOR_EDGE_DEBUG=1 re-raises (the traceback)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Error classes whose message is meant for the user (all ValueError subclasses) plus OS errors."""
    return (ValueError, OSError)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except _user_error_types() as exc:
            if os.environ.get("EVOR_EDGE_DEBUG"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except Exception as exc:  # noqa: BLE001 - the CLI must never print a bare traceback
            if os.environ.get("EVOR_EDGE_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            click.echo(f"error: internal {type(exc).__name__}: {first} (EVOR_EDGE_DEBUG=1 shows the traceback)",
                       err=True)
            sys.exit(1)

    return wrapper
