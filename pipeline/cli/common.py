"""Helpers every command group shares: the configuration and folders of a run, failure text, tables, CliError."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the heavy imports stay out of ``--help``
    import pandas as pd

    from pipeline.config import PipelineConfig
    from pipeline.store.ledger import Ledger
    from pipeline.trading import Broker

__all__ = ["CliError", "broker", "failure_text", "lake_root", "ledger", "load_config", "one_line", "print_frame",
           "source_problems", "state_root"]


class CliError(Exception):
    """An expected failure: ``main`` prints the message as it is on stderr and exits with ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message, self.code = message, code


def one_line(text: object) -> str:
    """``text`` on one line: its lines joined with '; ', leaving out blank ones and DuckDB's ``^^^`` markers."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip().strip("^"))


def load_config(config: str | None, lake: str | None) -> PipelineConfig:
    """The configuration of ``--config`` (ConfigError if missing or invalid), its lake root set to ``--lake``."""
    from pipeline.config import load_config as load

    cfg = load(config)
    if lake:
        cfg = cfg.model_copy(update={"lake_root": lake})
    return cfg


def lake_root(cfg: PipelineConfig, lake: str | None) -> str:
    """The lake root as a string: a resolved folder or an object-store URL (``pipeline.store.paths``)."""
    from pipeline.store import paths

    return str(paths.lake_root(cfg, lake))


def state_root(cfg: PipelineConfig, lake: str | None) -> Path:
    """The local state folder of the ledger (``pipeline.store.paths``); StorageError if it has none."""
    from pipeline.store import paths

    return paths.state_path(cfg, paths.lake_root(cfg, lake))


def ledger(cfg: PipelineConfig, lake: str | None) -> Ledger:
    """The initialised ledger of the configuration's state folder."""
    from pipeline.store.ledger import Ledger
    from pipeline.store.warehouse import WAREHOUSE_FILE

    return Ledger(state_root(cfg, lake) / WAREHOUSE_FILE).init()


def broker(cfg: PipelineConfig, ledger: Ledger) -> Broker:
    """The configured broker, not yet connected (enter it with ``with``): the paper broker (its
    state in ``ledger``) or IB (``broker.mode: ib``; ib_async is loaded only then)."""
    if cfg.broker.mode == "ib":
        from pipeline.adapters.ib.broker import IBBroker

        return IBBroker(cfg.instruments, cfg.broker)
    from pipeline.execution.paper_broker import PaperBroker

    return PaperBroker.for_universe(ledger, cfg.instruments)


def print_frame(df: pd.DataFrame, title: str) -> None:
    """Print ``title`` and ``df`` indented below it, or ``(none)``."""
    import pandas as pd

    print(f"\n{title}")
    if df.empty:
        print("  (none)")
        return
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 200,
                           "display.float_format", "{:,.2f}".format):
        print("  " + df.to_string().replace("\n", "\n  "))


#: The class name Dagster puts before the message of a step's ``dg.Failure`` (an expected failure
#: the step explained: its message is what the user reads).
DAGSTER_FAILURE = "dagster._core.definitions.events.Failure: "


def failure_text(result, checks_only: bool = False) -> str:
    """One line per failed step and per failed asset check of a Dagster run result; with
    ``checks_only`` the failed checks alone, "" when none failed."""
    lines = []
    for event in result.all_events:
        if event.is_failure and event.step_key and not checks_only:
            data = event.event_specific_data
            error = getattr(data, "error", None)
            text = error.message.strip().removeprefix(DAGSTER_FAILURE) if error else event.message
            lines.append(f"  step {event.step_key}: {text}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            ev = event.event_specific_data
            why = f": {one_line(ev.description)}" if getattr(ev, "description", None) else ""
            lines.append(f"  check {ev.asset_check_key.asset_key.to_user_string()}:{ev.asset_check_key.name} failed "
                         f"({ev.severity.value}){why}")
    return "\n".join(lines) or ("" if checks_only else "  (see the run in the Dagster UI)")


def source_problems(cfg: PipelineConfig, lake: str | None, run_id: str) -> list[str]:
    """One line per input the bar source could not read and per universe instrument no readable
    input holds, as the run ``run_id`` recorded them in the ledger's ``source_errors``; [] if none
    (or no ledger yet)."""
    from pipeline.store.ledger import LedgerError

    try:
        rows = ledger(cfg, lake).source_errors(run_id=run_id)
    except LedgerError:
        return []
    rows = rows[["file", "instrument", "kind", "reason"]].fillna("")
    return [f"  {row.kind}: {one_line(row.reason)}" + (f" (instrument {row.instrument})" if row.file and row.instrument
                                                       else "")
            for row in rows.itertuples(index=False)]
