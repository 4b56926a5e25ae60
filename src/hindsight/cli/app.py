"""The ``hindsight`` command. Each command group lives in its own module and registers itself here.

Exit codes: 0 done, 2 a mistake the user can fix (one ``error:`` line on stderr), 130 interrupted (Ctrl-C; every
result already written is kept). Start-up imports torch, which takes seconds: a Ctrl-C then is honoured too.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = "interrupted: results written so far are kept; rerun the same command to resume."


def _interrupted_during_startup(_signum, _frame) -> None:  # pragma: no cover - timing dependent
    sys.stderr.write(INTERRUPTED + "\n")
    sys.stderr.flush()
    os._exit(130)


# Until the commands are registered (imports of torch, transformers), Ctrl-C ends the process with one line.
_previous_sigint = signal.getsignal(signal.SIGINT)
if _previous_sigint is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_during_startup)

import typer  # noqa: E402

from hindsight import __version__  # noqa: E402
from hindsight.api.errors import InvalidRequest  # noqa: E402
from hindsight.errors import HindsightError  # noqa: E402

THREADS_HELP = (
    "Inference-time alignment and probabilistic inference with language models.\n\n"
    "Torch threads: OMP_NUM_THREADS is respected; otherwise hindsight uses no more threads than there are idle "
    "cores (set HINDSIGHT_THREADS=N to choose)."
)

app = typer.Typer(
    name="hindsight",
    help=THREADS_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(help="Evaluations on the public datasets (reads shared/data or --data DIR).",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _show_version(value: bool) -> None:
    if value:
        print(f"hindsight {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Inference-time alignment and probabilistic inference with language models."""


def _flags_without_metavar() -> None:
    """Flags take no value: do not show ``<bool>`` after them in --help (it invites ``--json true``)."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - other typer versions
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_hindsight", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._hindsight = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def _register() -> None:
    from hindsight.cli import data, generate, rain, reverse_apps, reverse_eval, reverse_train, scoring, serve, smc

    for module in (generate, smc, scoring, reverse_train, reverse_eval, reverse_apps, rain, data, serve):
        module.register(app, eval_app)


_flags_without_metavar()
_register()
if _previous_sigint is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _usage_message(e: Exception) -> str:
    """One line for a command-line usage error (typer/click), with the command it concerns."""
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    msg = " ".join(str(msg).split())
    ctx = getattr(e, "ctx", None)
    cmd = getattr(ctx, "command_path", None) if ctx is not None else None
    hint = f" (see '{cmd} --help')" if cmd else ""
    return f"{msg}{hint}"


def _is_usage_error(e: BaseException) -> bool:
    """typer >= 0.20 ships its own click; older versions use click itself: recognise both by shape."""
    return hasattr(e, "exit_code") and hasattr(e, "format_message") and not isinstance(e, HindsightError)


def _exit(code: int) -> None:
    """Exit with ``code``; success returns normally (callers that run ``main()`` in-process see no SystemExit)."""
    if code == 130:
        print(INTERRUPTED, file=sys.stderr)
    if code:
        sys.exit(code)


def _check_argv(argv: list[str]) -> None:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates: refuse them by position."""
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = repr(arg.encode("utf-8", "surrogateescape"))[2:-1][:40]
            raise HindsightError(f"Argument {i} ({shown!r}) is not valid UTF-8 text.") from None


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback."""
    try:
        _check_argv(sys.argv[1:])
        rv = app(standalone_mode=False)
    except HindsightError as e:
        if isinstance(e, InvalidRequest):  # a request or experiment field, named by its flag
            e = e.renamed("--" + e.param.replace("_", "-"))
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _exit(130)
    except typer.Exit as e:
        _exit(int(e.exit_code or 0))
    except typer.Abort:
        _exit(130)
    except Exception as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `hindsight` or group: the help was the answer
            sys.exit(0)
        if _is_usage_error(e):
            print(f"error: {_usage_message(e)}", file=sys.stderr)
            code = int(getattr(e, "exit_code", 2) or 2)
            sys.exit(2 if code == 1 else code)
        raise
    # typer turns a KeyboardInterrupt inside a command into the return value 130 when not standalone
    _exit(rv if isinstance(rv, int) else 0)
