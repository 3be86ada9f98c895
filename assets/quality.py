"""``clean_bars``: validated bars; rejected rows quarantined with the rule and the value.

Two blocking ERROR checks stand between bad data and every downstream asset (DESIGN rule 7):
``no_quarantined_bars`` (no bar of the run's sessions failed an ERROR rule) and ``bars_complete``
(every listed instrument has a clean bar on each of the run's sessions). Stale prices are a WARN.
"""


import dagster as dg
import pandas as pd

from assets.ingest import RAW_BARS
from assets.markdown import frame_md
from assets.missing_bars import (
    CHECK_COMPLETE,
    apply_missing_bar_policy,
    bars_complete_check,
    record_missing_bars,
)
from assets.non_session import CHECK_NON_SESSION, NON_SESSION_CHECK, non_session_check
from assets.partitions import (
    DailyPartitions,
    is_backfill,
    no_session_result,
    run_sessions,
)
from assets.resources import Settings
from pipeline.quality.expectations import preload, validate_bars_gx
from pipeline.quality.rules import flagged_mask, validate_bars

CLEAN_BARS = "clean_bars"
QUARANTINE = "quarantine"
QUALITY_WARNINGS = "quality_warnings"

CHECK_NO_QUARANTINE = "no_quarantined_bars"
CHECK_STALE = "no_stale_prices"
CHECK_SPIKES = "no_price_spikes"
CHECK_GX = "expectations_hold"

#: The checks of ``clean_bars``; the blocking ones stop every downstream asset (DESIGN rule 7).
CLEAN_BARS_CHECKS = [
    dg.AssetCheckSpec(CHECK_NO_QUARANTINE, asset=CLEAN_BARS, blocking=True,
                      description="No bar of the run's sessions failed an ERROR rule."),
    dg.AssetCheckSpec(CHECK_COMPLETE, asset=CLEAN_BARS, blocking=True,
                      description="Every listed instrument has a clean bar on each session of the run, unless its "
                                  "missing_bar_policy carries or omits it or its series ended (assets/missing_bars.py)."),
    dg.AssetCheckSpec(CHECK_STALE, asset=CLEAN_BARS, blocking=False,
                      description="WARN when a close is unchanged for quality.stale_sessions sessions."),
    dg.AssetCheckSpec(CHECK_SPIKES, asset=CLEAN_BARS, blocking=False,
                      description="WARN for price spikes kept in the clean set (quality.spike_severity: WARN)."),
    dg.AssetCheckSpec(CHECK_GX, asset=CLEAN_BARS, blocking=True,
                      description="The clean bars of the run pass the Great Expectations suite of their asset "
                                  "class: an independent second implementation of the ERROR rules."),
    NON_SESSION_CHECK,
]


def clean_bars(context: dg.AssetExecutionContext, settings: Settings):
    """Validated daily bars, one row per (session, instrument); rejected rows go to ``quarantine``.

    Rules (pipeline.quality.rules): re-fetches resolved by latest ``fetched_at``, duplicates, bars dated
    on a non-session of the instrument's exchange calendar, non-finite close, non-positive prices
    (except back-adjusted futures), OHLC consistency where OHLC exist,
    negative volume, impossible moves (x8 or /8), price spikes over ``max_price_spike`` volatility
    units (quarantined with ``spike_severity: ERROR``; flagged with WARN: held out of the clean set,
    the instrument not traded that session, the run not blocked); stale prices warn.
    A quarantined or flagged bar returns to the clean set only when a person releases it after a check
    (``trading-pipeline release SESSION INSTRUMENT RULE --reason ...``).
    """
    cfg, lake = settings.config(), settings.lake()
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: no bars to check, every check passes on nothing
        yield no_session_result(context, cfg.calendar, check_results=[
            dg.AssetCheckResult(check_name=name, passed=True, description="no exchange session in this run")
            for name in (CHECK_NO_QUARANTINE, CHECK_COMPLETE, CHECK_STALE, CHECK_SPIKES, CHECK_GX, CHECK_NON_SESSION)])
        return
    raw = lake.read(RAW_BARS, end=run[-1])
    raw = raw[raw["instrument"].isin(cfg.symbols)]
    released = settings.ledger().quarantine_releases()
    result = validate_bars(raw, cfg.quality, back_adjusted={i.symbol for i in cfg.instruments if i.back_adjusted},
                           released=released, calendars={i.symbol: i.calendar for i in cfg.instruments},
                           peers={i.symbol: i.asset_class for i in cfg.instruments})
    owned = lake.sessions_to_write(CLEAN_BARS, pd.DatetimeIndex(result.clean["session"].unique()), run)
    backfill = is_backfill(context)  # blocks nothing: bad bars are left out of the history and listed
    policy = apply_missing_bar_policy(cfg, result, owned, run, backfill=backfill)  # gaps classified; carried bars added
    result, gaps = policy.result, policy.gaps
    record_missing_bars(settings, gaps, owned, context.run.run_id, context.log)
    rows = lake.write_sessions(CLEAN_BARS, result.clean, owned)
    # Quarantined bars may be dated on days with no clean bar at all (non_session): keep them too.
    lake.write_sessions(QUARANTINE, result.quarantine, owned.union(
        lake.sessions_to_write(QUARANTINE, pd.DatetimeIndex(result.quarantine["session"].unique()), run)))
    lake.write_sessions(QUALITY_WARNINGS, result.warnings, owned)

    bad = result.quarantine[result.quarantine["session"].isin(run)]
    warned = result.warnings[result.warnings["session"].isin(run)]
    stale = warned[warned["rule"] == "stale_price"]
    spikes = warned[flagged_mask(warned)]
    yield dg.MaterializeResult(
        metadata={
            "rows_written": rows,
            "sessions_written": len(owned),
            "quarantined_in_run": len(bad),
            "quarantined_total": len(result.quarantine),
            "rule_counts": dg.MetadataValue.md(frame_md(result.summary)),
            "path": dg.MetadataValue.path(str(lake.path(CLEAN_BARS))),
        }
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_NO_QUARANTINE,
        passed=bad.empty,
        severity=dg.AssetCheckSeverity.WARN if backfill else dg.AssetCheckSeverity.ERROR,
        description=(f"{len(bad)} bar(s) of this backfill quarantined and left out of the history (positions "
                     f"carried): {_pairs(bad)}; see the quarantine table" if len(bad) and backfill else
                     f"{len(bad)} bar(s) of this run quarantined ({_pairs(bad)}): downstream assets are blocked "
                     "until they are released or corrected" if len(bad) else "no bar of this run failed an ERROR rule"),
        metadata={"quarantined": dg.MetadataValue.md(frame_md(bad))},
    )
    yield bars_complete_check(gaps, run, backfill=backfill)
    yield dg.AssetCheckResult(
        check_name=CHECK_STALE,
        passed=stale.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"stale": dg.MetadataValue.md(frame_md(stale))},
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_SPIKES,
        passed=spikes.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(spikes)} bar(s) flagged as suspected bad prints ({_pairs(spikes)}): those instruments are not "
            "traded this session (position held); if a bar is right, release it: trading-pipeline release "
            f"{spikes['session'].iloc[0].date()} {spikes['instrument'].iloc[0]} price_spike --reason ..." if len(spikes)
            else "no bar of this run flagged as a spike"),
        metadata={"spikes": dg.MetadataValue.md(frame_md(spikes))},
    )
    yield _expectations_check(result.clean[result.clean["session"].isin(run)], cfg, released)
    yield non_session_check(result.quarantine, run, cfg.calendar)


def _pairs(frame: pd.DataFrame, first: int = 5) -> str:
    """``INSTRUMENT SESSION`` of the first rows, then how many more."""
    named = ", ".join(f"{i} {pd.Timestamp(d).date()}" for d, i in zip(frame["session"][:first], frame["instrument"][:first]))
    return named + (f" and {len(frame) - first} more" if len(frame) > first else "")


def _expectations_check(clean: pd.DataFrame, cfg, released: pd.DataFrame) -> dg.AssetCheckResult:
    """Run each asset class's GX suite on the run's clean bars (one batch per class); bars a
    person released after a check are left out (they are known to break a rule)."""
    if len(released):
        keys = pd.MultiIndex.from_arrays([pd.to_datetime(released["session"]).astype("datetime64[ns]"), released["instrument"]])
        clean = clean[~pd.MultiIndex.from_arrays([clean["session"].astype("datetime64[ns]"), clean["instrument"]]).isin(keys)]
    reports = []
    for (asset_class, back_adjusted), symbols in _classes(cfg).items():
        rows = clean[clean["instrument"].isin(symbols)]
        if len(rows):
            report = validate_bars_gx(rows, asset_class, back_adjusted=back_adjusted)
            reports.append(report.results.assign(asset_class=asset_class))
    results = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(columns=["success", "severity"])
    failed = results[~results["success"].astype(bool)]
    return dg.AssetCheckResult(
        check_name=CHECK_GX,
        passed=bool((failed["severity"] != "ERROR").all()),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "expectations": len(results),
            "failed": dg.MetadataValue.md(frame_md(failed[["asset_class", "rule", "check", "unexpected_count", "examples"]]
                                                   if len(failed) else failed)),
        },
    )


def preload_expectations(cfg) -> None:
    """Start importing Great Expectations and building the suites of ``cfg``'s instruments in the
    background (:func:`pipeline.quality.expectations.preload`), for a run whose ``clean_bars`` comes later."""
    preload(_classes(cfg))


def _classes(cfg) -> dict[tuple[str, bool], list[str]]:
    """Instruments grouped by the GX suite that applies: (asset class, back-adjusted)."""
    suite_of = {"STK": "equity", "ETF": "equity", "CASH": "fx", "FUT": "futures", "IND": "index"}
    groups: dict[tuple[str, bool], list[str]] = {}
    for i in cfg.instruments:
        groups.setdefault((suite_of[i.sec_type], i.back_adjusted), []).append(i.symbol)
    return groups


def build(daily: DailyPartitions) -> list[dg.AssetsDefinition]:
    """The session-partitioned assets of this module, on the partitions of the configuration."""
    return [daily.asset(clean_bars, group_name="quality", deps=[RAW_BARS], check_specs=CLEAN_BARS_CHECKS)]
