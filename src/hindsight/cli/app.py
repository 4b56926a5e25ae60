"""The ``hindsight`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import sys

import typer

from hindsight.errors import HindsightError

app = typer.Typer(
    name="hindsight",
    help="Inference-time alignment and probabilistic inference with language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(help="Evaluations on the public datasets (reads shared/data or --data DIR).",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _register() -> None:
    from hindsight.cli import generate, rain, reverse_apps, reverse_eval, reverse_train, scoring, serve, smc

    for module in (generate, smc, scoring, reverse_train, reverse_eval, reverse_apps, rain, serve):
        module.register(app, eval_app)


_register()


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except HindsightError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: results written so far are kept; rerun the same command to resume.", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted.", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
