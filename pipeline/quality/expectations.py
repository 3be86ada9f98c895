"""Great Expectations (GX 1.x) suites for daily bars, one per asset class, and a fast validator.

These suites restate the row rules of :mod:`pipeline.quality.rules` in GX's vocabulary so the two
implementations check each other (tests compare them row by row) and so the Dagster asset checks
can show GX's standard results. They cover what GX expresses well:

====================  ========  =============================================================
rule                  severity  expectations
====================  ========  =============================================================
schema                ERROR     required columns exist; ``session`` is datetime64; prices
                                (and volume where checked) are numeric
duplicate             ERROR     (instrument, session) unique (``ExpectCompoundColumnsToBeUnique``)
close_not_finite      ERROR     close not null; close within +/- the largest float (no inf)
non_positive_price    ERROR     open, high, low, close > 0 (dropped when ``back_adjusted``)
ohlc_inconsistent     ERROR     high >= low, high >= open, high >= close, open >= low,
                                close >= low, each ignoring rows where either value is missing
negative_volume       ERROR     volume >= 0 (not for FX: spot FX has no volume)
====================  ========  =============================================================

Severities of the shared rules are taken from :data:`pipeline.quality.rules.RULES`, so the two cannot
drift apart. Price spikes, stale prices, calendar completeness and freshness stay in
:mod:`pipeline.quality.rules` and :mod:`pipeline.calendar`: GX has no rolling-window primitive
(``ExpectColumnValueZScoresToBeLessThan`` uses the whole column's mean and std).

Differences from :func:`pipeline.quality.rules.validate_bars`, by design: GX sees the frame exactly as
given, so (a) two identical copies of a bar are a ``duplicate`` here (quality first keeps the
latest fetch and merges identical copies), and (b) a duplicated bar is also checked by the other
rules (quality only reports it as a duplicate). Give GX one fetch per (instrument, session), e.g.
the clean bars or the latest fetch, and the verdicts agree.

GX is imported lazily (it costs seconds to import); one ephemeral GX context is created per
process, with analytics, progress bars and INFO logging switched off. :func:`preload` starts that
import in a background thread, so that a run can do its other work meanwhile (the daily run starts it
with the run; its ``clean_bars`` step then validates without waiting for the import).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.bars import PRICE_COLUMNS
from pipeline.quality.rules import RULES

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition

#: Asset classes with a suite.
ASSET_CLASSES: tuple[str, ...] = ("equity", "fx", "futures", "index")
#: Columns that identify a bar; unexpected rows are reported by these.
KEY_COLUMNS: list[str] = ["instrument", "session"]
#: Columns of :attr:`GXReport.results`.
RESULT_COLUMNS: list[str] = [
    "rule", "severity", "check", "success", "unexpected_count", "examples", "error"
]
#: Asset classes whose bars must carry a volume column (index sources often have none).
_VOLUME_REQUIRED = {"equity", "futures"}
#: Asset classes whose volume is checked when present (spot FX has no volume).
_VOLUME_CHECKED = {"equity", "futures", "index"}
#: Any datetime64 resolution is a date column: pandas 3 creates ``us``, older files ``ns``.
_DATETIME_TYPES = ["datetime64[s]", "datetime64[ms]", "datetime64[us]", "datetime64[ns]"]
_NUMERIC_TYPES = ["float64", "float32", "int64", "int32"]
_FLOAT_MAX = float(np.finfo(np.float64).max)
_SEVERITY = dict(RULES) | {"schema": "ERROR"}
#: (column_A, column_B): A >= B for each OHLC relation (nautilus ``Bar::new_checked``).
_OHLC_PAIRS = [("high", "low"), ("high", "open"), ("high", "close"), ("open", "low"),
               ("close", "low")]
#: GX logs at INFO while importing and creating a context; one module pins its own level to INFO.
_GX_LOGGERS = ("great_expectations", "great_expectations.data_context.types.base", "posthog")


class ExpectationsError(ValueError):
    """An unknown asset class or an input that is not a frame of bars."""


@dataclass(frozen=True)
class GXReport:
    """Outcome of :func:`validate_bars_gx`.

    Attributes
    ----------
    asset_class : str
    back_adjusted : bool
    rows : int
        Rows of the validated frame.
    results : DataFrame
        One row per expectation, in suite order, columns :data:`RESULT_COLUMNS`: ``rule`` and
        ``severity`` (from the expectation's ``meta``), ``check`` (a short text such as
        ``"high >= low"``), ``success`` (bool), ``unexpected_count`` (Int64 rows failing a
        row-level expectation; <NA> for table-level ones such as a column's type),
        ``examples`` (list of (instrument, session) tuples of failing rows, at most
        ``max_examples`` of them) and ``error`` (GX's exception message when the expectation
        could not run, e.g. its column is missing; else "").
    examples_complete : bool
        True when ``examples`` lists every failing row (``max_examples=None``).
    """

    asset_class: str
    back_adjusted: bool
    rows: int
    results: pd.DataFrame
    examples_complete: bool

    @property
    def success(self) -> bool:
        """True when every ERROR-severity expectation succeeded (WARN ones only alert)."""
        err = self.results[self.results["severity"] == "ERROR"]
        return bool(err["success"].all())

    def by_rule(self) -> pd.DataFrame:
        """One row per rule: ``rule, severity, success, expectations, unexpected_count, examples``.

        ``unexpected_count`` sums the rule's expectations, so a bar that breaks two OHLC
        relations counts twice; ``examples`` are the distinct failing (instrument, session)
        keys of the rule, sorted (every failing bar only when :attr:`examples_complete`).
        """
        out = []
        for rule, grp in self.results.groupby("rule", sort=False):
            keys = sorted({k for ex in grp["examples"] for k in ex}, key=_key_order)
            out.append({
                "rule": rule,
                "severity": grp["severity"].iloc[0],
                "success": bool(grp["success"].all()),
                "expectations": len(grp),
                "unexpected_count": grp["unexpected_count"].sum(min_count=1),
                "examples": keys,
            })
        return pd.DataFrame(out).astype({"unexpected_count": "Int64"})


def build_suite(asset_class: str, back_adjusted: bool = False) -> ExpectationSuite:
    """The GX expectation suite for daily bars of one asset class.

    Parameters
    ----------
    asset_class : {"equity", "fx", "futures", "index"}
        Decides the volume expectations: required and >= 0 for equity and futures; >= 0 where
        present for index; none for FX (spot FX has no volume).
    back_adjusted : bool
        True for back-adjusted futures (or any series whose prices may be <= 0): drops the
        ``non_positive_price`` expectations, as :func:`pipeline.quality.rules.validate_bars` does
        for instruments it is told are back-adjusted.

    Returns
    -------
    great_expectations.core.ExpectationSuite
        A new, unsaved suite named ``bars_<asset_class>[_back_adjusted]``; every expectation's
        ``meta`` holds ``severity`` ("ERROR" | "WARN"), ``rule`` (as in :mod:`pipeline.quality.rules`,
        or "schema") and ``check`` (a short text). Expectations: module docstring.

    Raises
    ------
    ExpectationsError
        ``asset_class`` is not one of :data:`ASSET_CLASSES`.

    Notes
    -----
    Sources: the OHLC relations follow nautilus_trader ``Bar::new_checked``; the expectation
    classes are those listed in reliability.md section 4 (GX 1.x).
    """
    _check_asset_class(asset_class)
    gx = _gx()
    _batch_definition()  # GX suites need an active context
    E = gx.expectations
    expectations = []

    def add(exp_cls: type, rule: str, check: str, **kwargs: Any) -> None:
        meta = {"severity": _SEVERITY[rule], "rule": rule, "check": check}
        expectations.append(exp_cls(meta=meta, **kwargs))

    volume_checked = asset_class in _VOLUME_CHECKED
    for col in _required_columns(asset_class):
        add(E.ExpectColumnToExist, "schema", f"column {col} exists", column=col)
    add(E.ExpectColumnValuesToBeInTypeList, "schema", "session is datetime64",
        column="session", type_list=_DATETIME_TYPES)
    for col in PRICE_COLUMNS + (["volume"] if volume_checked else []):
        add(E.ExpectColumnValuesToBeInTypeList, "schema", f"{col} is numeric",
            column=col, type_list=_NUMERIC_TYPES)

    add(E.ExpectCompoundColumnsToBeUnique, "duplicate", "(instrument, session) unique",
        column_list=KEY_COLUMNS)
    add(E.ExpectColumnValuesToNotBeNull, "close_not_finite", "close not null", column="close")
    # Bounded both sides so +/-inf fail while negative back-adjusted closes pass.
    add(E.ExpectColumnValuesToBeBetween, "close_not_finite", "close finite", column="close",
        min_value=-_FLOAT_MAX, max_value=_FLOAT_MAX)
    if not back_adjusted:
        for col in PRICE_COLUMNS:
            add(E.ExpectColumnValuesToBeBetween, "non_positive_price", f"{col} > 0",
                column=col, min_value=0, strict_min=True)
    for a, b in _OHLC_PAIRS:
        # "either missing" skips close-only and partial bars, as pipeline.quality.rules does.
        add(E.ExpectColumnPairValuesAToBeGreaterThanB, "ohlc_inconsistent", f"{a} >= {b}",
            column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing")
    if volume_checked:
        add(E.ExpectColumnValuesToBeBetween, "negative_volume", "volume >= 0",
            column="volume", min_value=0)
    name = f"bars_{asset_class}" + ("_back_adjusted" if back_adjusted else "")
    return gx.ExpectationSuite(name=name, expectations=expectations)


def validate_bars_gx(
    bars: pd.DataFrame, asset_class: str, back_adjusted: bool = False,
    max_examples: int | None = 5,
) -> GXReport:
    """Validate long daily bars against :func:`build_suite` in one GX batch.

    Parameters
    ----------
    bars : DataFrame
        Long bars, one row per bar, with at least ``instrument, session, open, high, low,
        close`` (and ``volume`` for equity and futures); other columns are ignored. Prices in
        price points, volume in units, NaN where the source has no value (NaN open/high/low
        or volume are not failures; a NaN close is). Any row order and index.
    asset_class : {"equity", "fx", "futures", "index"}
    back_adjusted : bool
        See :func:`build_suite`. To mix back-adjusted and other instruments, validate them in
        two calls.
    max_examples : int or None
        Failing (instrument, session) keys to report per expectation; None reports them all
        (use on small frames or when counting distinct rows per rule).

    Returns
    -------
    GXReport
        Verdict per expectation; :attr:`GXReport.success` is False when any ERROR expectation
        failed. A missing column is reported (the ``schema`` expectation fails and the
        expectations on that column carry GX's error), not raised.

    Raises
    ------
    ExpectationsError
        Unknown ``asset_class``, or ``bars`` is not a DataFrame.

    Notes
    -----
    One ephemeral GX context per process (created on first use, guarded by a lock); the suite
    of each (asset_class, back_adjusted) is built once. Costs about 1-2 s per 600k bars.
    """
    _check_asset_class(asset_class)
    if not isinstance(bars, pd.DataFrame):
        raise ExpectationsError(
            f"validate_bars_gx: expected a pandas DataFrame of bars, got {type(bars).__name__}"
        )
    if max_examples is not None and max_examples < 0:
        raise ExpectationsError(f"validate_bars_gx: max_examples must be >= 0, got {max_examples}")
    frame = bars.reset_index(drop=True)
    if "volume" not in frame.columns and asset_class not in _VOLUME_REQUIRED:
        frame = frame.assign(volume=np.nan)  # optional here; "no value" keeps the check silent
    keys = [k for k in KEY_COLUMNS if k in frame.columns]
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE" if max_examples is None else "SUMMARY",
        "unexpected_index_column_names": keys,
    }
    if max_examples is not None:
        result_format["partial_unexpected_count"] = max_examples
    with _LOCK:
        suite = _cached_suite(asset_class, back_adjusted)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(suite, result_format=result_format)

    by_check = {r.expectation_config.meta["check"]: r for r in outcome.results}
    rows = []
    for exp in suite.expectations:
        meta = exp.meta
        res = by_check[meta["check"]]
        error = _error_of(exp, res.exception_info, frame.columns)
        detail = res.result or {}
        listed = detail.get("unexpected_index_list" if max_examples is None
                            else "partial_unexpected_index_list") or []
        count = detail.get("unexpected_count")
        rows.append({
            "rule": meta["rule"],
            "severity": meta["severity"],
            "check": meta["check"],
            "success": bool(res.success) and not error,
            "unexpected_count": pd.NA if count is None else int(count),
            "examples": [_key_of(d) for d in listed][: max_examples],
            "error": error,
        })
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS).astype(
        {"success": "bool", "unexpected_count": "Int64"}
    )
    return GXReport(asset_class, back_adjusted, len(frame), results, max_examples is None)


# -- the process-wide GX context --------------------------------------------------------------

_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}


def _gx() -> Any:
    """The ``great_expectations`` module, imported on first use with its noise switched off."""
    with _LOCK:
        if "gx" not in _STATE:
            _quiet_gx_loggers()
            import great_expectations as gx

            _quiet_gx_loggers()  # again: the import pins one of its loggers to INFO

            _STATE["gx"] = gx
        return _STATE["gx"]


def preload(suites: Iterable[tuple[str, bool]] = ()) -> threading.Thread | None:
    """Import GX, create the process's context and build ``suites`` in a background thread.

    Returns at once. :func:`validate_bars_gx` (and :func:`build_suite`) wait for the thread where
    they need what it builds (one lock guards the process's GX state), so calling this never
    changes a verdict, only when the import is paid. A failure in the thread is left for the
    validation to raise (it retries the import in its own thread).

    Parameters
    ----------
    suites : iterable of (asset_class, back_adjusted)
        Suites to build beforehand (:func:`build_suite`); unknown asset classes are skipped.

    Returns
    -------
    threading.Thread or None
        The started daemon thread; None when the context exists or a preload already started.
    """
    wanted = [(a, bool(b)) for a, b in suites if a in ASSET_CLASSES]

    def warm() -> None:
        try:
            with _LOCK:
                _batch_definition()
                for asset_class, back_adjusted in wanted:
                    _cached_suite(asset_class, back_adjusted)
        except Exception:  # the validation in the run raises it again, with its context
            logging.getLogger(__name__).debug("GX preload failed", exc_info=True)

    with _LOCK:
        if "batch_definition" in _STATE or "preload" in _STATE:
            return None
        thread = threading.Thread(target=warm, name="gx-preload", daemon=True)
        _STATE["preload"] = thread
        thread.start()
        return thread


def _quiet_gx_loggers() -> None:
    for name in _GX_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _batch_definition() -> BatchDefinition:
    """The whole-dataframe batch definition of the process's ephemeral context (made once)."""
    with _LOCK:
        if "batch_definition" not in _STATE:
            gx = _gx()
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            # No usage statistics leave the machine; no tqdm bars in logs and test output.
            context.enable_analytics(False)
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            asset = context.data_sources.add_pandas("bars").add_dataframe_asset("bars")
            _STATE["context"] = context
            _STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
        return _STATE["batch_definition"]


def _cached_suite(asset_class: str, back_adjusted: bool) -> ExpectationSuite:
    key = ("suite", asset_class, bool(back_adjusted))
    with _LOCK:
        if key not in _STATE:
            _STATE[key] = build_suite(asset_class, back_adjusted)
        return _STATE[key]


# -- helpers -----------------------------------------------------------------------------------


def _check_asset_class(asset_class: str) -> None:
    if asset_class not in ASSET_CLASSES:
        raise ExpectationsError(
            f"unknown asset class {asset_class!r}; expected one of {list(ASSET_CLASSES)} "
            "(set the instrument's asset_class in the config)"
        )


def _required_columns(asset_class: str) -> list[str]:
    cols = KEY_COLUMNS + PRICE_COLUMNS
    return cols + (["volume"] if asset_class in _VOLUME_REQUIRED else [])


def _error_of(exp: Any, info: Any, columns: pd.Index) -> str:
    """Why an expectation could not run ("" when it ran).

    GX reports a missing column as an opaque metric error (e.g. "list index out of range"), so
    name the column ourselves; other failures keep GX's message. ``exception_info`` is either
    one dict or a dict of dicts keyed by metric.
    """
    infos = [info] if isinstance(info, dict) and "raised_exception" in info else (
        list(info.values()) if isinstance(info, dict) else []
    )
    messages = [str(i.get("exception_message") or "") for i in infos
                if isinstance(i, dict) and i.get("raised_exception")]
    if not messages:
        return ""
    kw = exp.configuration.kwargs
    used = [kw.get("column"), kw.get("column_A"), kw.get("column_B"), *(kw.get("column_list") or [])]
    missing = [c for c in used if c is not None and c not in columns]
    if missing:
        return f"column {', '.join(missing)} missing from the bars"
    return "; ".join(sorted(set(messages)))


def _key_of(item: Any) -> tuple[str | None, pd.Timestamp | None]:
    """(instrument, session) of one entry of GX's unexpected index list."""
    if isinstance(item, dict):
        inst = item.get("instrument")
        sess = item.get("session")
        return (None if inst is None else str(inst),
                None if sess is None else pd.Timestamp(sess))
    return (None, None)  # no key columns in the frame: GX lists bare row numbers


def _key_order(key: tuple[str | None, pd.Timestamp | None]) -> tuple[str, pd.Timestamp]:
    inst, sess = key
    return (inst or "", sess if sess is not None else pd.Timestamp.min)
