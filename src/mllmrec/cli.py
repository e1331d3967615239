"""Run a stage's `main` with Typer: a UserError or a usage error (unknown option, bad argument or env value) becomes
one red line and exit code 2, never a traceback."""

import logging
import sys
from collections.abc import Callable

import typer
from rich.console import Console

from mllmrec.errors import UserError


def usage_error(e: Exception) -> str | None:
    """The one-line message of a click-style usage error, else None. Duck-typed on purpose: typer >= 0.29 raises
    its own copies of click's exception classes (typer._click), which `isinstance(e, click.ClickException)` misses."""
    if isinstance(getattr(e, "exit_code", None), int) and callable(getattr(e, "format_message", None)):
        return " ".join(e.format_message().split())
    return None


def configure_logging(console: Console) -> None:
    """Once per stage: the project's INFO records (engine loads, retries) through rich, other libraries' warnings."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING,
        format="%(name)s: %(message)s",
        force=True,
        handlers=[RichHandler(console=console, show_time=False, show_path=False)],
    )
    logging.getLogger("mllmrec").setLevel(logging.INFO)


def run(main: Callable) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(main)
    err = Console(stderr=True)
    configure_logging(err)
    try:
        app(standalone_mode=False)
    except UserError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        message = usage_error(e)
        if message is None:
            raise  # a bug, not a usage error: keep the traceback
        err.print(f"[bold red]usage error:[/] {message} (see --help)", highlight=False, soft_wrap=True)
        sys.exit(2)
