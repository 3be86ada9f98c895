"""The ``no_non_session_bars`` check of ``clean_bars``: a WARN for bars a run received for a non-session.

Such a bar (a weekend or holiday date, e.g. a vendor's Sunday-evening bar) is already kept out of
the clean set by the ``non_session`` quarantine rule, so nothing downstream can use it; this check
makes it seen: it fails (WARN, not blocking) when bars of the run's days are quarantined for that
rule, and the ``asset_check_alerts`` sensor turns the failure into one alert per run.

WARN rather than ERROR (reliability.md section 4): ERROR checks block every downstream asset and
are for data that would otherwise feed forecasts and orders. Here the quarantine already removed
the bar, and the harmful case behind it, a source that stamps a session's bar with the wrong date,
also leaves that session without a bar, which the blocking ``bars_complete`` check catches. Blocking
on the extra bar itself would stop trading every week for a source that sends Sunday bars.
"""


import dagster as dg
import pandas as pd

from assets.markdown import frame_md
from pipeline.quality.non_session import non_session_bars, run_window

CHECK_NON_SESSION = "no_non_session_bars"

NON_SESSION_CHECK = dg.AssetCheckSpec(
    CHECK_NON_SESSION, asset="clean_bars", blocking=False,
    description="WARN when the source returned bars dated on a non-session (weekend, holiday, closure) of the "
                "instrument's calendar for the days of this run; they are quarantined as non_session.",
)


def non_session_check(quarantine: pd.DataFrame, run: pd.DatetimeIndex, calendar: str) -> dg.AssetCheckResult:
    """The check result for ``run`` (its sessions) given the quarantine of ``pipeline.quality.rules``."""
    found = non_session_bars(quarantine, run, calendar)
    days = ""
    if len(run):
        after, last = run_window(run, calendar)
        days = f" after {after.date()} up to {last.date()}"
    columns = [c for c in ("session", "instrument", "value", "source", "detail") if c in found.columns]
    return dg.AssetCheckResult(
        check_name=CHECK_NON_SESSION,
        passed=found.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"{len(found)} bar(s) dated on a non-session{days} quarantined as non_session; check the "
                     "source's date stamps" if len(found) else f"no bar dated on a non-session{days}"),
        metadata={"non_session_bars": len(found), "bars": dg.MetadataValue.md(frame_md(found[columns]))},
    )
