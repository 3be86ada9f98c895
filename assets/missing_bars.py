"""The ``bars_complete`` check of ``clean_bars`` and the missing-bar policy behind it.

Every (session, instrument) of the sessions ``clean_bars`` writes that has no clean bar is
classified (:mod:`pipeline.quality.missing`: ``missing``, ``quarantined``, ``ended``, ``no_data``),
recorded in the ledger's ``missing_bars`` table, and handled by the instrument's
``missing_bar_policy``: ``block`` fails the blocking ``bars_complete`` check (the default, as
before the policy existed), ``carry`` adds a flat bar at the last close to the clean set with a
``stale_price`` warning, ``omit`` leaves the instrument out of that session (no target, no order).
A series that has ended is reported once (an alert per instrument and last bar) and never blocks.
"""

from dataclasses import dataclass, replace

import dagster as dg
import pandas as pd

from assets.markdown import frame_md
from assets.resources import Settings
from pipeline.adapters.alerts import notify
from pipeline.calendar import sessions as calendar_sessions
from pipeline.config import PipelineConfig
from pipeline.quality.missing import carried_bars, classify_missing_bars, summarise_gaps
from pipeline.quality.rules import flagged_spikes

CHECK_COMPLETE = "bars_complete"
#: Where the pairs are listed in full.
MISSING_QUERY = 'trading-pipeline query "select * from missing_bars"'


@dataclass(frozen=True)
class MissingBars:
    """The gaps of a clean_bars run and the validation result with the carried bars added."""

    gaps: pd.DataFrame
    result: object


def apply_missing_bar_policy(cfg: PipelineConfig, result, sessions: pd.DatetimeIndex, run: pd.DatetimeIndex,
                             backfill: bool = False) -> MissingBars:
    """Classify the gaps of ``sessions`` (those of the portfolio calendar) and add the carried bars
    and their ``stale_price`` warnings to ``result`` (a :class:`pipeline.quality.rules.QualityResult`).
    Only a gap on a session of ``run`` in a run that is not a ``backfill`` (which never trades) can
    block; any other gap the policy would block is left out instead: the instrument's bar is missing
    from the history (positions carried) and the gap is listed."""
    sessions = pd.DatetimeIndex(sessions)
    if len(sessions):
        sessions = sessions[sessions.isin(calendar_sessions(sessions.min(), sessions.max(), cfg.calendar))]
    default = cfg.quality.missing_bar_policy
    policies = {i.symbol: i.missing_bar_policy or default for i in cfg.instruments}
    gaps = classify_missing_bars(result.clean, result.quarantine, sessions, cfg.symbols, policies,
                                 cfg.quality.series_ended_after, cfg.calendar, flagged=flagged_spikes(result.warnings))
    # only the sessions a run could trade block: a backfill none, a daily its own (not the history it fills)
    may_block = pd.DatetimeIndex([] if backfill else run).astype("datetime64[us]")
    gaps.loc[(gaps["action"] == "blocked") & ~gaps["session"].isin(may_block), "action"] = "left_out"
    carried, flags = carried_bars(result.clean, gaps)
    if len(carried):
        clean = pd.concat([result.clean, carried], ignore_index=True).sort_values(
            ["instrument", "session"], kind="stable", ignore_index=True)
        warnings = pd.concat([result.warnings, flags.astype(result.warnings.dtypes.to_dict())], ignore_index=True)
        result = replace(result, clean=clean, warnings=warnings)
    return MissingBars(gaps, result)


def record_missing_bars(settings: Settings, gaps: pd.DataFrame, sessions: pd.DatetimeIndex, run_id: str,
                        log) -> None:
    """Write ``gaps`` to the ledger's ``missing_bars`` (replacing the rows of ``sessions``) and raise
    one alert per instrument whose series ended (deduplicated by instrument and last bar)."""
    ledger = settings.ledger()
    ledger.record_missing_bars(gaps, sessions, run_id)
    ended = gaps[gaps["reason"] == "ended"].drop_duplicates("instrument", keep="first")
    for instrument, last in zip(ended["instrument"], ended["last_bar"]):
        last_day = pd.Timestamp(last).date() if pd.notna(last) else "none"
        outcome = notify(ledger, kind="series_ended", severity="WARN", subject=instrument,
                         message=f"{instrument}: no bar since {last_day}; the series is taken as ended and left out "
                                 f"of trading (a held position is not traded). See {MISSING_QUERY}",
                         dedupe_key=f"series_ended:{instrument}:{last_day}")
        if outcome.added:
            log.warning(f"ALERT [WARN] {instrument}: series ended after {last_day}")


def bars_complete_check(gaps: pd.DataFrame, run: pd.DatetimeIndex, backfill: bool = False) -> dg.AssetCheckResult:
    """``bars_complete`` for the run's sessions: fails (ERROR, blocking) when a gap's action is
    ``blocked``; its description names the first pairs and the count, its metadata every gap."""
    gaps = gaps[gaps["session"].isin(pd.DatetimeIndex(run).astype("datetime64[us]"))]
    blocked = gaps[gaps["action"] == "blocked"]
    others = gaps[gaps["action"] != "blocked"]
    if len(blocked):
        description = (f"{summarise_gaps(blocked)} (missing_bar_policy block); downstream assets are blocked. "
                       f"See {MISSING_QUERY}")
    else:
        description = "every listed instrument has a clean bar on each session of the run"
    if len(others):
        counts = others.groupby(["reason", "action"]).size()
        description += "; not blocking: " + ", ".join(f"{n} {r} ({a})" for (r, a), n in counts.items())
        if backfill:
            description += f" ({summarise_gaps(others)}; see {MISSING_QUERY})"
    return dg.AssetCheckResult(
        check_name=CHECK_COMPLETE,
        # in a backfill the gaps a daily would block are left out: the check fails as a warning naming them
        passed=blocked.empty and not (backfill and ((others["policy"] == "block")
                                                    & others["reason"].isin(["missing", "quarantined"])).any()),
        severity=dg.AssetCheckSeverity.WARN if backfill else dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "blocked": len(blocked),
            "not_blocking": len(others),
            "missing": dg.MetadataValue.md(frame_md(gaps.head(200))),
            "query": MISSING_QUERY,
        },
    )
