"""Run a stage's `main` with Typer and turn a UserError into one red line and exit code 2."""

import sys
from collections.abc import Callable

import typer
from rich.console import Console

from mllmrec.errors import UserError


def run(main: Callable) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(main)
    try:
        app(standalone_mode=False)
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors (bad option) keep their own message
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
