"""pipeline.quality.expectations: GX suites per asset class, cross-checked against pipeline.quality.rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.adapters.sources import BAR_COLUMNS
from pipeline.config import QualityConfig
from pipeline.quality.expectations import (
    ASSET_CLASSES,
    RESULT_COLUMNS,
    ExpectationsError,
    build_suite,
    validate_bars_gx,
)
from pipeline.quality.rules import RULES, validate_bars
from tests.conftest import require_shared_data

SHARED_RULES = ["duplicate", "close_not_finite", "non_positive_price", "ohlc_inconsistent",
                "negative_volume"]
T0 = pd.Timestamp("2024-01-10 22:00", tz="UTC")
NAN, INF = np.nan, np.inf

# One defect per row where the rules allow it (high < low always breaks other relations too).
# (instrument, session, open, high, low, close, volume)
DEFECTS = [
    ("A", "2024-01-02", 10, 11, 9, 10.5, 100),     # good
    ("A", "2024-01-03", 10, 9, 9.5, 9.2, 100),     # high < low (and < open, < close; close < low)
    ("A", "2024-01-04", 12, 11, 9, 10, 100),       # open above high
    ("A", "2024-01-05", 10, 11, 9, 11.5, 100),     # close above high
    ("A", "2024-01-08", 8.5, 11, 9, 10, 100),      # open below low
    ("A", "2024-01-09", 10, 11, 9, 8.8, 100),      # close below low
    ("B", "2024-01-02", 5, 6, 4, NAN, 10),         # close missing
    ("B", "2024-01-03", NAN, NAN, NAN, INF, NAN),  # close +inf
    ("B", "2024-01-04", NAN, NAN, NAN, -INF, NAN), # close -inf (also not positive)
    ("B", "2024-01-05", 5, 6, 0, 5, 10),           # low zero
    ("B", "2024-01-08", 5, 6, 4, 5, -1),           # negative volume
    ("B", "2024-01-09", 5, 6, 4, 5, 10),           # duplicate key, two different bars
    ("B", "2024-01-09", 5, 6, 4, 5.5, 10),
    ("C", "2024-01-02", NAN, NAN, NAN, 7, NAN),    # close-only bar: valid
    ("C", "2024-01-03", 7, 8, 6, 7, 0),            # zero volume: valid
    ("C", "2024-01-04", 7, 7, 7, 7, 5),            # flat bar O=H=L=C: valid
    ("D", "2024-01-02", NAN, NAN, NAN, -1, NAN),   # negative close
    ("E", "2024-01-02", -2, -1, -3, -2, 1),        # all prices negative, OHLC consistent
]


def k(inst: str, day: str) -> tuple[str, pd.Timestamp]:
    return (inst, pd.Timestamp(day))


# Expected failing keys per check, read off the DEFECTS comments above.
EXPECTED = {
    "(instrument, session) unique": {k("B", "2024-01-09")},
    "close not null": {k("B", "2024-01-02")},
    "close finite": {k("B", "2024-01-03"), k("B", "2024-01-04")},
    "open > 0": {k("E", "2024-01-02")},
    "high > 0": {k("E", "2024-01-02")},
    "low > 0": {k("B", "2024-01-05"), k("E", "2024-01-02")},
    "close > 0": {k("B", "2024-01-04"), k("D", "2024-01-02"), k("E", "2024-01-02")},
    "high >= low": {k("A", "2024-01-03")},
    "high >= open": {k("A", "2024-01-03"), k("A", "2024-01-04")},
    "high >= close": {k("A", "2024-01-03"), k("A", "2024-01-05")},
    "open >= low": {k("A", "2024-01-08")},
    "close >= low": {k("A", "2024-01-03"), k("A", "2024-01-09")},
    "volume >= 0": {k("B", "2024-01-08")},
}


def raw_bars(rows) -> pd.DataFrame:
    """Raw bars in the pipeline's schema, one fetch (so pipeline.quality.rules sees them as given)."""
    df = pd.DataFrame(rows, columns=["instrument", "session", "open", "high", "low", "close",
                                     "volume"])
    df["session"] = pd.to_datetime(df["session"]).astype("datetime64[us]")
    df[["open", "high", "low", "close", "volume"]] = df[
        ["open", "high", "low", "close", "volume"]].astype("float64")
    df["source"] = "test"
    df["fetched_at"] = T0
    return df[BAR_COLUMNS]


def check_keys(report, check: str) -> set:
    row = report.results.set_index("check").loc[check]
    return set(row["examples"])


def gx_keys_by_rule(report) -> dict[str, set]:
    return {r: {key for ex in report.results.loc[report.results["rule"] == r, "examples"]
                for key in ex} for r in SHARED_RULES}


def quality_keys_by_rule(raw: pd.DataFrame, back_adjusted=()) -> dict[str, set]:
    q = validate_bars(raw, QualityConfig(), back_adjusted=back_adjusted).quarantine
    return {r: set(zip(q.loc[q["rule"] == r, "instrument"],
                       pd.to_datetime(q.loc[q["rule"] == r, "session"]))) for r in SHARED_RULES}


@pytest.fixture(scope="module")
def defects_report():
    return validate_bars_gx(raw_bars(DEFECTS), "equity", max_examples=None)


# -- the suites ---------------------------------------------------------------------------


@pytest.mark.parametrize("asset_class", ASSET_CLASSES)
def test_every_expectation_carries_severity_and_a_quality_rule_in_meta(asset_class):
    known = dict(RULES) | {"schema": "ERROR"}
    for exp in build_suite(asset_class, back_adjusted=False).expectations:
        assert exp.meta["rule"] in known
        # the severity is pipeline.quality.rules's, so the two implementations cannot drift apart
        assert exp.meta["severity"] == known[exp.meta["rule"]]


def test_back_adjusted_suite_drops_exactly_the_four_positive_price_expectations():
    plain = [e.meta["check"] for e in build_suite("futures", False).expectations]
    adjusted = [e.meta["check"] for e in build_suite("futures", True).expectations]
    assert sorted(set(plain) - set(adjusted)) == ["close > 0", "high > 0", "low > 0", "open > 0"]
    assert set(adjusted) < set(plain)


def test_fx_suite_neither_requires_nor_checks_volume():
    checks = [e.meta["check"] for e in build_suite("fx").expectations]
    assert not [c for c in checks if "volume" in c]


def test_index_suite_checks_volume_but_does_not_require_the_column():
    checks = [e.meta["check"] for e in build_suite("index").expectations]
    assert "volume >= 0" in checks and "column volume exists" not in checks


def test_unknown_asset_class_is_a_clear_error():
    with pytest.raises(ExpectationsError, match="unknown asset class 'bond'"):
        build_suite("bond")


# -- each expectation on hand-made defects -------------------------------------------------


@pytest.mark.parametrize("check", sorted(EXPECTED))
def test_each_expectation_catches_exactly_its_rows(defects_report, check):
    assert check_keys(defects_report, check) == EXPECTED[check]


def test_unexpected_counts_are_rows_so_a_duplicate_pair_counts_two(defects_report):
    counts = defects_report.results.set_index("check")["unexpected_count"]
    assert counts["(instrument, session) unique"] == 2  # both rows of B 2024-01-09
    assert counts["close >= low"] == 2


def test_results_have_the_documented_columns_and_fail_on_error(defects_report):
    assert list(defects_report.results.columns) == RESULT_COLUMNS
    assert defects_report.rows == len(DEFECTS)
    assert not defects_report.success


def test_clean_bars_pass_every_expectation():
    report = validate_bars_gx(raw_bars(DEFECTS[:1] + DEFECTS[13:16]), "equity")
    assert report.success
    assert report.results["success"].all()


def test_back_adjusted_negative_prices_pass_but_ohlc_is_still_checked():
    rows = [("E", "2024-01-02", -2, -1, -3, -2, 1), ("E", "2024-01-03", -2, -3, -1, -2, 1)]
    report = validate_bars_gx(raw_bars(rows), "futures", back_adjusted=True)
    by_rule = report.by_rule().set_index("rule")
    assert "non_positive_price" not in by_rule.index
    assert by_rule.loc["ohlc_inconsistent", "examples"] == [k("E", "2024-01-03")]


def test_max_examples_caps_examples_but_not_the_count():
    rows = [("A", f"2024-01-{d:02d}", 1, 1, 1, -1.0, 1) for d in range(2, 12)]  # 10 bad closes
    report = validate_bars_gx(raw_bars(rows), "equity", max_examples=3)
    row = report.results.set_index("check").loc["close > 0"]
    assert row["unexpected_count"] == 10 and len(row["examples"]) == 3
    assert not report.examples_complete


def test_missing_column_is_reported_as_a_failed_schema_check_not_raised():
    report = validate_bars_gx(raw_bars(DEFECTS[:1]).drop(columns="volume"), "equity")
    res = report.results.set_index("check")
    assert not res.loc["column volume exists", "success"]
    assert res.loc["volume >= 0", "error"] == "column volume missing from the bars"
    assert not report.success


def test_fx_bars_without_volume_pass():
    report = validate_bars_gx(raw_bars(DEFECTS[:1]).drop(columns="volume"), "fx")
    assert report.success


def test_session_of_strings_fails_the_schema():
    bars = raw_bars(DEFECTS[:1]).assign(session="2024-01-02")
    res = validate_bars_gx(bars, "equity").results.set_index("check")
    assert not res.loc["session is datetime64", "success"]


def test_non_frame_input_is_a_clear_error():
    with pytest.raises(ExpectationsError, match="expected a pandas DataFrame"):
        validate_bars_gx([1, 2], "equity")


def test_verdicts_up_to_a_date_ignore_later_bars():
    # No look-ahead: breaking every bar after d changes no verdict on bars up to d.
    d = pd.Timestamp("2024-01-04")
    base = raw_bars(DEFECTS)
    later = base["session"] > d
    broken = base.copy()
    broken.loc[later, ["high", "close", "volume"]] = [-5.0, np.inf, -3.0]
    up_to_d = lambda rep: {r: {x for x in s if x[1] <= d} for r, s in gx_keys_by_rule(rep).items()}
    a = validate_bars_gx(base, "equity", max_examples=None)
    b = validate_bars_gx(broken, "equity", max_examples=None)
    assert up_to_d(a) == up_to_d(b)


# -- agreement with pipeline.quality.rules -------------------------------------------------------


def test_gx_and_quality_quarantine_the_same_bars_for_each_shared_rule(defects_report):
    assert gx_keys_by_rule(defects_report) == quality_keys_by_rule(raw_bars(DEFECTS))


def test_gx_and_quality_agree_for_back_adjusted_futures():
    raw = raw_bars(DEFECTS)
    report = validate_bars_gx(raw, "futures", back_adjusted=True, max_examples=None)
    instruments = raw["instrument"].unique().tolist()
    assert gx_keys_by_rule(report) == quality_keys_by_rule(raw, back_adjusted=instruments)


VALUES = st.sampled_from([NAN, -INF, -1.0, 0.0, 1.0, 2.0, 3.0, INF])


# Few examples of many rows each: a GX validation costs ~0.4 s whatever the frame's size.
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["X", "Y"]), VALUES, VALUES, VALUES, VALUES, VALUES),
                min_size=1, max_size=60))
def test_gx_and_quality_agree_on_random_bars(rows):
    # Unique keys: each row gets its own session (quality merges identical copies, GX cannot).
    bars = [(inst, pd.Timestamp("2024-01-01") + pd.Timedelta(days=i), *v)
            for i, (inst, *v) in enumerate(rows)]
    raw = raw_bars(bars)
    report = validate_bars_gx(raw, "equity", max_examples=None)
    assert gx_keys_by_rule(report) == quality_keys_by_rule(raw)


# -- real data -----------------------------------------------------------------------------


def test_sp500_known_bad_bars_fail_ohlc_consistency():
    path = require_shared_data("stocks", "sp500_5yr_2013_2018_all505.parquet")
    names = ["AOS", "SPG", "CHK", "AAPL", "MSFT"]
    df = pd.read_parquet(path, filters=[("Name", "in", names)])
    bars = df.rename(columns={"Name": "instrument", "date": "session"})
    bars["instrument"] = bars["instrument"].astype(str)
    report = validate_bars_gx(bars, "equity", max_examples=None)
    caught = report.by_rule().set_index("rule").loc["ohlc_inconsistent", "examples"]
    # data/README.md "Known real defects": AOS high < low, SPG close below low, CHK close
    # outside the range; AAPL and MSFT have no such bar in this set.
    assert caught == [k("AOS", "2014-05-19"), k("CHK", "2014-06-30"), k("SPG", "2014-05-28")]
