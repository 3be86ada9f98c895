"""The ``trading-pipeline`` typer app: the command groups put together, and ``main`` with its one-line errors."""

from __future__ import annotations

import sys
import warnings

import typer

from pipeline.cli import (
    backtest,
    common,
    data,
    fake_gateway,
    futures,
    positions,
    rehearse,
    run,
    status,
    trading,
)

__all__ = ["app", "main"]

PROG = "trading-pipeline"

app = typer.Typer(
    name=PROG,
    help="""Run the daily job, backfill history, query the lake, set the kill switch.

Every command takes --config PATH (default: $TRADING_PIPELINE_CONFIG or the bundled default) and
--lake PATH|URL (a folder or an object-store URL; the ledger then lives in the configuration's
state_root). Runs go through Dagster and are recorded in $DAGSTER_HOME (default ./.dagster_home),
so they show in the UI next to the scheduled runs.""",
    epilog="Example: trading-pipeline daily --session 2022-12-28 (then: trading-pipeline daily --help)",
    rich_markup_mode="markdown",
    add_completion=False,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for group in (run, data, trading, status, positions, backtest, fake_gateway, rehearse, futures):
    app.add_typer(group.commands)


@app.callback()
def _root() -> None:
    """Keep ``trading-pipeline`` a group of commands (a callback with no option of its own)."""


def _expected_failure(exc: Exception) -> tuple[str, int] | None:
    """The one line to print and the exit code for a failure the user can fix, else None (a bug)."""
    from pipeline.bars import SourceError
    from pipeline.config import ConfigError
    from pipeline.store.lake import LakeError
    from pipeline.store.paths import StorageError
    from pipeline.trading import BrokerError

    if isinstance(exc, ConfigError | StorageError):  # a missing or invalid config file, a lake without state
        return f"error: {exc}", 2
    if isinstance(exc, BrokerError | SourceError):  # the broker or the data source is down or refuses
        return f"error: {common.one_line(exc)}", 1
    if isinstance(exc, LakeError):  # a lake table missing or a lake file broken: the message names it
        return f"error: {common.one_line(exc)}", 1
    return None


#: Libraries whose deprecation and future-change warnings are for whoever upgrades them, not for a
#: trader reading a run's output (``module`` of :func:`warnings.filterwarnings`: the module a warning
#: is attributed to, matched from its start). The project's own packages are never listed.
LIBRARY_MODULES = r"(pandas|numpy|exchange_calendars|great_expectations|marshmallow|apprise|dagster|dagster_shared)(\.|$)"


def filter_library_warnings() -> None:
    """Hide, once at the command line's edge, the warnings of libraries that mean nothing to a trader.

    * Dagster's ``BetaWarning`` and ``PreviewWarning`` (e.g. ``backfill_policy`` is beta in 1.13):
      Dagster attributes them to the calling module (an asset of ours), so they are filtered by
      their category, which only Dagster raises (imported from ``dagster_shared``, where
      ``dagster.BetaWarning`` is defined: importing ``dagster`` itself would cost every command a second).
    * ``DeprecationWarning`` (pandas' ``Pandas4Warning`` is one), ``PendingDeprecationWarning`` and
      ``FutureWarning`` attributed to a module of :data:`LIBRARY_MODULES`, e.g. pandas' warning about
      ``Series.values`` inside exchange_calendars, Great Expectations' and marshmallow's deprecations.

    A warning attributed to the project's own modules (``pipeline``, ``assets``, ``sensors``) still
    shows, and so does every ``UserWarning`` or ``RuntimeWarning`` (they may be about the data).
    """
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    for category in (BetaWarning, PreviewWarning):
        warnings.filterwarnings("ignore", category=category)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)


def main(argv: list[str] | None = None) -> int:
    """Run ``trading-pipeline`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    filter_library_warnings()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: unknown option, missing argument, malformed date
        ctx = getattr(exc, "ctx", None)
        hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        print(f"error: {common.one_line(exc.format_message()).rstrip('.')}{hint}", file=sys.stderr)
        return exc.exit_code
    except common.CliError as exc:
        print(exc.message, file=sys.stderr)
        return exc.code
    except Exception as exc:
        failure = _expected_failure(exc)
        if failure is None:
            raise
        print(failure[0], file=sys.stderr)
        return failure[1]
    return code or 0
