"""The ``deploysignal`` entry point: a root command group that imports a command's module only when that
command runs.

``deploysignal --version`` and ``deploysignal --help`` import typer and rich and nothing of numpy, numba,
scipy or fastapi; ``deploysignal gate`` imports the gate's modules and not the service's, the fleet's or
the evaluation's. The root listing shows the one-line summaries of :data:`COMMANDS`; each command's own
``--help`` is its full text. ``tests/test_cli_start.py`` checks that the table names exactly the commands
of the full application (:func:`full_app`) and that ``--version`` and ``--help`` import no numerical
library.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click
import typer
from typer.core import TyperGroup

from .. import __version__

__all__ = ["COMMANDS", "app", "console_main", "full_app", "main", "request_fast_exit"]

#: root command -> (module of ``deploysignal.cli`` defining it, attribute there, one-line summary).
#: The attribute is a typer command function of ``_app.app`` (``"app"``), a ``typer.Typer`` (a command
#: group) or a function registered as a command of its own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "calibrate": ("_app", "app", "Compile a healthy baseline into a frozen config (model check, backtest, certification)."),
    "gate": ("_app", "app", "Evaluate a canary; exit 0 proceed, 3 extend, 4 rollback, 2 bad input."),
    "replay": ("_app", "app", "Re-derive every audit record; exit 0 only if all match byte for byte (1 otherwise)."),
    "simulate": ("_scenarios", "simulate_cmd", "Write a seeded scenario (baseline, canary, control, truth) or a split scenario's request log."),
    "demo": ("_scenarios", "demo", "Run the gate on seeded built-in scenarios and show what it decided and why."),
    "bench": ("_app", "app", "Per-tick latency of the gate (and the fleet observer), or the service's noisy-neighbour benchmark."),
    "serve": ("_service", "serve", "Run the HTTP service (FastAPI + uvicorn); OpenAPI spec at /openapi.json, docs at /docs."),
    "drill": ("_migration", "drill", "Rollback drill: regression onset on a live (simulated) migration -> decision -> rollback."),
    "split-eval": ("_split_eval", "split_eval", "Split gate against its peers on seeded per-request logs (tables and a JSON report)."),
    "service": ("_service", "service_app", "HTTP service helpers."),
    "audit": ("_service", "audit_app", "Audit log tools."),
    "eval": ("_eval", "app", "Evaluate the gate against peer methods on the scenario suite and real data."),
    "migrate": ("_migration", "migrate_app", "Paired migration of an AI agent."),
    "pipeline": ("_migration", "pipeline_app", "Versioned release pipelines."),
    "fleet": ("_fleet", "app", "Fleet observer: per-shard evidence across a cluster."),
    "prometheus": ("_prometheus", "app", "Prometheus: check specs, read per-arm split ticks."),
    "ui": ("_dashboard", "ui", "Dashboard over a local store or audit / fleet / migration files (read-only, 127.0.0.1)."),
    "report": ("_dashboard", "report", "Write one self-contained HTML report of an analysis (store, audit file or service)."),
}


def _load(name: str) -> click.Command | None:
    """The click command of root command ``name``, importing only the module that defines it."""
    if name not in COMMANDS:  # a command registered on the full application but missing from the table
        return typer.main.get_group(full_app()).get_command(click.Context(click.Group()), name)
    module, attr, _ = COMMANDS[name]
    obj: Any = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    if attr == "app" and module == "_app":  # one of the root commands of _app.app
        return typer.main.get_group(obj).get_command(click.Context(click.Group()), name)
    if isinstance(obj, typer.Typer):
        group = typer.main.get_group(obj)
        group.name = name
        return group
    single = typer.Typer(add_completion=False)
    single.command(name)(obj)
    return typer.main.get_group(single).get_command(click.Context(click.Group()), name)


class _LazyGroup(TyperGroup):
    """A root group resolving each command on first use; its help listing reads :data:`COMMANDS` only."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self._listing:  # formatting the root help: the summary, no import
            entry = COMMANDS.get(cmd_name)
            return None if entry is None else click.Command(cmd_name, help=entry[2], short_help=entry[2])
        return _load(cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(cls=_LazyGroup, add_completion=False, no_args_is_help=True, help="Anytime-valid deploy gate: proceed, extend or roll back.")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging to stderr."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    if version:
        sys.stdout.write(__version__ + "\n")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        sys.stdout.write(ctx.get_help() + "\n")
        raise typer.Exit(2)


def full_app() -> typer.Typer:
    """The application with every command registered (imports every adapter module)."""
    from . import _app

    _app._register_subcommands()
    return _app.app


#: set by a command whose process may end without the interpreter's teardown (:func:`request_fast_exit`)
_FAST_EXIT = {"requested": False}


def request_fast_exit() -> None:
    """Let :func:`console_main` end this process with ``os._exit`` once the command has returned.

    After a ``gate`` run the interpreter's teardown (numba's compiler registries, LLVM objects) costs
    about 0.3 s of CPU, a fifth of a one-tick gate's start-up (docs/performance.md); freeing memory the
    process is about to return is wasted work. Only a command whose files are closed by the time it
    returns may ask: :func:`console_main` shuts logging down and flushes stdout and stderr first, and falls back
    to the ordinary exit if a flush fails. Atexit handlers are not run (numba and llvmlite register
    flags for their teardown, logging is shut down explicitly, the gate creates no temporary files)."""
    _FAST_EXIT["requested"] = True


def _exit_now(code: Any) -> None:
    """``os._exit`` with the exit status Python would give ``SystemExit(code)``; returns if a flush fails."""
    if code is not None and not isinstance(code, int):
        return  # a message to print: the ordinary path prints it
    logging.shutdown()  # flushes the handlers (stderr) first
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)


def main(args: list[str] | None = None) -> None:
    """Run the application on ``args`` (default: ``sys.argv[1:]``), as a library call.

    Ends, as a click application does, by raising :class:`SystemExit` whose ``code`` is the command's
    exit status (``gate``: 0 proceed, 3 extend, 4 rollback, 2 bad input); a caller may catch it. The
    process is never ended here: the fast exit is :func:`console_main`'s alone."""
    _FAST_EXIT["requested"] = False  # only this run's command can ask (not one run before in the same process)
    app(args=args)


def console_main() -> None:
    """The console script ``deploysignal`` and ``python -m deploysignal``: :func:`main` on ``sys.argv``,
    and a command that asked for it (:func:`request_fast_exit`, ``gate``) ends the process without the
    interpreter's teardown once its output is flushed."""
    try:
        main()
    except SystemExit as exc:
        if _FAST_EXIT["requested"]:
            _exit_now(exc.code)
        raise
