"""pipeline.quality.rules: raw bars -> clean bars + quarantine + warnings."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.sources import BAR_COLUMNS, read_bar_file
from pipeline.adapters.sources.sample import SampleSource
from pipeline.config import QualityConfig
from pipeline.quality.rules import (
    ISSUE_COLUMNS,
    RULES,
    QualityInputError,
    quality_errors,
    spike_flags,
    validate_bars,
)
from tests.conftest import require_shared_data

T0 = pd.Timestamp("2024-01-10 22:00", tz="UTC")
T1 = pd.Timestamp("2024-01-11 22:00", tz="UTC")
CFG = QualityConfig()  # max_price_spike 8, spike_vol_span 500, stale_sessions 10


def bars(rows: list[dict]) -> pd.DataFrame:
    """Raw bars from short dicts; defaults: instrument ES, fetched at T0, no OHLV."""
    full = [
        {
            "session": pd.Timestamp(r["session"]),
            "instrument": r.get("instrument", "ES"),
            "open": r.get("open", np.nan),
            "high": r.get("high", np.nan),
            "low": r.get("low", np.nan),
            "close": r["close"],
            "volume": r.get("volume", np.nan),
            "source": r.get("source", "test"),
            "fetched_at": r.get("fetched_at", T0),
        }
        for r in rows
    ]
    return pd.DataFrame(full, columns=BAR_COLUMNS)


def closes(values, start="2024-01-01", freq="D", instrument="ES") -> pd.DataFrame:
    sessions = pd.date_range(start, periods=len(values), freq=freq)
    return bars(
        [{"session": s, "close": float(c), "instrument": instrument} for s, c in zip(sessions, values)]
    )


def alternating(n: int) -> list[float]:
    """100, 101, 100, ...: every |daily change| is 1, so the EWMA vol is exactly 1."""
    return [100.0 + (i % 2) for i in range(n)]


def rules_of(frame: pd.DataFrame) -> list[str]:
    return frame["rule"].tolist()


# -- result shape -----------------------------------------------------------------------------


def test_result_frames_have_the_documented_columns():
    res = validate_bars(closes([1, 2, 3]), CFG)
    assert list(res.clean.columns) == BAR_COLUMNS
    assert list(res.quarantine.columns) == ISSUE_COLUMNS
    assert list(res.warnings.columns) == ISSUE_COLUMNS
    assert res.summary["rule"].tolist() == [r for r, _ in RULES]
    assert res.summary["rows"].sum() == 0
    assert len(res.clean) == 3


def test_missing_column_is_a_clear_error():
    with pytest.raises(QualityInputError, match=r"lack columns \['close'\]"):
        validate_bars(closes([1, 2]).drop(columns="close"), CFG)


def test_extra_columns_such_as_a_partition_column_are_ignored():
    res = validate_bars(closes([1, 2]).assign(year=2024), CFG)
    assert list(res.clean.columns) == BAR_COLUMNS and len(res.clean) == 2


def test_empty_input_gives_empty_results():
    res = validate_bars(closes([]), CFG)
    assert res.clean.empty and res.quarantine.empty and res.warnings.empty


# -- rule 1: re-fetches and duplicates --------------------------------------------------------


def test_refetch_keeps_the_latest_fetch_and_is_not_an_error():
    raw = bars([
        {"session": "2024-01-02", "close": 1.0, "fetched_at": T0},
        {"session": "2024-01-02", "close": 2.0, "fetched_at": T1},
    ])
    res = validate_bars(raw, CFG)
    assert res.clean["close"].tolist() == [2.0]
    assert res.clean["fetched_at"].tolist() == [T1]
    assert res.quarantine.empty
    assert res.superseded == 1


def test_two_different_bars_in_one_fetch_are_both_quarantined():
    raw = bars([
        {"session": "2024-01-02", "close": 1.0, "fetched_at": T0},
        {"session": "2024-01-02", "close": 2.0, "fetched_at": T1},
        {"session": "2024-01-02", "close": 3.0, "fetched_at": T1},
        {"session": "2024-01-03", "close": 4.0, "fetched_at": T1},
    ])
    res = validate_bars(raw, CFG)
    q = res.quarantine
    assert rules_of(q) == ["duplicate", "duplicate"]
    assert q["value"].tolist() == [2.0, 3.0]
    assert "2 different bars" in q["detail"].iloc[0] and "closes 2, 3" in q["detail"].iloc[0]
    # the latest fetch is the authority: the older bar does not come back
    assert res.clean["session"].tolist() == [pd.Timestamp("2024-01-03")]


def test_identical_copies_in_one_fetch_count_once():
    raw = bars([{"session": "2024-01-02", "close": 1.0}, {"session": "2024-01-02", "close": 1.0}])
    res = validate_bars(raw, CFG)
    assert len(res.clean) == 1 and res.quarantine.empty


# -- rules 2-5: one bar at a time -------------------------------------------------------------


def test_close_nan_and_inf_are_quarantined_with_their_value():
    raw = bars([
        {"session": "2024-01-02", "close": np.nan},
        {"session": "2024-01-03", "close": np.inf},
        {"session": "2024-01-04", "close": 5.0},
    ])
    res = validate_bars(raw, CFG)
    q = res.quarantine
    assert rules_of(q) == ["close_not_finite"] * 2
    assert np.isnan(q["value"].iloc[0]) and q["value"].iloc[1] == np.inf
    assert q["detail"].tolist() == ["close is nan", "close is inf"]
    assert res.clean["close"].tolist() == [5.0]


def test_non_positive_price_is_quarantined():
    raw = bars([{"session": "2024-01-02", "open": 0.0, "high": 2.0, "low": 0.0, "close": 1.0}])
    q = validate_bars(raw, CFG).quarantine
    assert rules_of(q) == ["non_positive_price"]
    assert q["value"].iloc[0] == 0.0
    assert q["detail"].iloc[0].startswith("open 0 <= 0; low 0 <= 0; prices must be positive")


def test_negative_prices_of_back_adjusted_instruments_are_valid():
    raw = bars([{"session": "2024-01-02", "close": -37.8, "instrument": "US10"}])
    assert rules_of(validate_bars(raw, CFG).quarantine) == ["non_positive_price"]
    res = validate_bars(raw, CFG, back_adjusted=["US10"])
    assert res.quarantine.empty and res.clean["close"].tolist() == [-37.8]


@pytest.mark.parametrize(
    ("o", "h", "l", "c", "value", "detail"),
    [
        (10, 9, 8, 9, 9, "high 9 < open 10"),
        (9, 9, 8, 10, 9, "high 9 < close 10"),
        (8, 10, 9, 9, 9, "low 9 > open 8"),
        (9, 10, 9, 8, 9, "low 9 > close 8"),
        # AOS 2014-05-19 in the S&P 500 5-year set: high < low, open and close above high
        (23.89, 23.595, 23.85, 24.445, 23.595,
         "high 23.595 < low 23.85; high 23.595 < open 23.89; high 23.595 < close 24.445"),
    ],
)
def test_ohlc_inconsistent_names_each_broken_relation(o, h, l, c, value, detail):
    raw = bars([{"session": "2024-01-02", "open": o, "high": h, "low": l, "close": c}])
    res = validate_bars(raw, CFG)
    assert rules_of(res.quarantine) == ["ohlc_inconsistent"]
    assert res.quarantine["value"].iloc[0] == value
    assert res.quarantine["detail"].iloc[0] == detail
    assert res.clean.empty


def test_close_only_and_partial_bars_are_checked_only_where_values_exist():
    raw = bars([
        {"session": "2024-01-02", "close": 10.0},  # close only: valid
        {"session": "2024-01-03", "high": 11.0, "close": 10.5},  # high >= close: valid
        {"session": "2024-01-04", "high": 9.0, "close": 10.0},  # high < close
    ])
    res = validate_bars(raw, CFG)
    assert res.clean["close"].tolist() == [10.0, 10.5]
    assert res.quarantine["detail"].tolist() == ["high 9 < close 10"]


def test_negative_volume_is_quarantined_zero_and_nan_are_not():
    raw = bars([
        {"session": "2024-01-02", "close": 1.0, "volume": -5.0},
        {"session": "2024-01-03", "close": 1.0, "volume": 0.0},
        {"session": "2024-01-04", "close": 1.0},
    ])
    res = validate_bars(raw, CFG)
    assert rules_of(res.quarantine) == ["negative_volume"]
    assert res.quarantine["detail"].iloc[0] == "volume -5 < 0"
    assert len(res.clean) == 2


def test_a_bar_failing_two_rules_is_listed_once_per_rule():
    raw = bars([{"session": "2024-01-02", "open": 1.0, "high": 2.0, "low": 0.5, "close": -1.0}])
    res = validate_bars(raw, CFG)
    assert rules_of(res.quarantine) == ["non_positive_price", "ohlc_inconsistent"]
    counts = res.summary.set_index("rule")["rows"]
    assert counts["non_positive_price"] == 1 and counts["ohlc_inconsistent"] == 1


# -- rule 6: price spikes ---------------------------------------------------------------------


UNIT = np.log(101.0 / 100.0)  # the mean |log change| of alternating(): one vol unit


def test_single_bad_print_is_quarantined_but_not_the_return_back():
    # 30 alternating closes (mean |log change| = log 1.01), then 121, then 100
    values = alternating(30) + [121.0, 100.0]
    res = validate_bars(closes(values), CFG)
    q = res.quarantine
    assert rules_of(q) == ["price_spike"]
    assert q["session"].iloc[0] == pd.Timestamp("2024-01-31")
    z = np.log(121.0 / 101.0) / UNIT  # 18.2 vol units
    assert q["value"].iloc[0] == pytest.approx(z)
    expected = f"close 121 is {z:.1f} vol units from the last clean close 101 of 2024-01-30"
    assert expected in q["detail"].iloc[0]
    # 100 is measured against 101 (the last clean close), not against the spike
    assert pd.Timestamp("2024-02-01") in set(res.clean["session"])
    assert len(res.clean) == 31


def test_level_shift_flags_only_its_first_day():
    # a genuine jump that stays: the day after is close to the spike's close and is accepted
    values = alternating(30) + [121.0, 122.0, 121.0]
    res = validate_bars(closes(values), CFG)
    assert res.quarantine["session"].tolist() == [pd.Timestamp("2024-01-31")]
    assert res.clean["close"].tolist()[-2:] == [122.0, 121.0]


def test_spike_change_is_scaled_by_the_square_root_of_calendar_days():
    # after the alternating run, a 4-day gap: z = |log move| / sqrt(4) / UNIT
    base = closes(alternating(30))
    last = base["session"].iloc[-1]
    for z, flagged in [(9.0, True), (7.0, False)]:
        after_gap = {"session": last + pd.Timedelta(days=4), "close": 101.0 * np.exp(z * 2 * UNIT)}
        raw = pd.concat([base, bars([after_gap])])
        q = validate_bars(raw, CFG).quarantine
        assert (len(q) == 1) is flagged
        if flagged:
            assert q["value"].iloc[0] == pytest.approx(9.0)


def test_back_adjusted_series_are_judged_in_price_points():
    # the same +20 after alternating(30) is 20 points / 1 point = z 20 when back-adjusted
    raw = closes(alternating(30) + [121.0, 100.0])
    q = validate_bars(raw, CFG, back_adjusted={"ES"}).quarantine
    assert rules_of(q) == ["price_spike"] and q["value"].iloc[0] == pytest.approx(20.0)


def test_no_spike_is_judged_against_a_zero_vol_estimate():
    # 30 identical closes: the mean |change| is 0, so z is undefined, not infinite
    res = validate_bars(closes([50.0] * 30 + [51.0]), CFG)
    assert res.quarantine.empty


def test_a_quarantined_bar_is_not_the_reference_of_the_next_change():
    # the bad-OHLC bar's close 200 is never a "previous valid close", so 100 after it is normal
    raw = closes(alternating(30))
    raw = pd.concat([
        raw,
        bars([
            {"session": "2024-01-31", "open": 100.0, "high": 99.0, "low": 98.0, "close": 200.0},
            {"session": "2024-02-01", "close": 100.0},
        ]),
    ])
    res = validate_bars(raw, CFG)
    assert rules_of(res.quarantine) == ["ohlc_inconsistent"]


def test_spike_z_matches_pandas_ewm_of_previous_absolute_log_changes():
    # independent computation with pandas, per instrument, on two calendars (business days and
    # every third day) so gaps and the per-instrument EWMA are exercised; no spike is flagged
    # with an unreachable threshold, so the last clean close is always the previous close and
    # the winsorisation (at max_spike x scale) never bites
    rng = np.random.default_rng(7)
    a = closes(100 + rng.normal(0, 1, 120).cumsum(), freq="B", instrument="A")
    b = closes(50 + rng.normal(0, 2, 60).cumsum(), freq="3D", instrument="B")
    raw = pd.concat([a, b], ignore_index=True)
    span = 30
    v = spike_flags(raw, max_spike=1e9, span=span)
    assert not v.spike.any() and not v.impossible.any()
    for _, grp in raw.groupby("instrument"):
        days = grp["session"].diff().dt.days
        change = np.log(grp["close"]).diff() / np.sqrt(days)
        scale = change.abs().ewm(span=span, adjust=True, min_periods=20).mean().shift(1)
        expected = (change.abs() / scale).to_numpy()
        mature = np.isfinite(expected)
        np.testing.assert_allclose(v.z[grp.index][mature], expected[mature], rtol=1e-12)
        # before 20 changes the warm-up reference judges: median |change| x 1.183 from 3 changes
        warm = np.arange(len(grp)) < 20
        med = change.abs().expanding(3).median().shift(1) * (0.7978845608 / 0.6744897502)
        np.testing.assert_allclose(v.z[grp.index][warm], (change.abs() / med).to_numpy()[warm],
                                   rtol=1e-12, equal_nan=True)


# -- every bar judged: constructed bad prints ----------------------------------------------------


def walk(n: int, seed: int = 3, start: float = 50.0, vol: float = 0.01) -> np.ndarray:
    """A positive random walk in log price: daily log changes N(0, vol)."""
    return start * np.exp(np.random.default_rng(seed).normal(0, vol, n).cumsum())


@pytest.mark.parametrize("at", [1, 4, 24])  # the second, fifth and twenty-fifth bar
@pytest.mark.parametrize("factor", [100.0, 0.01, 10.0])
@pytest.mark.parametrize("severity", ["ERROR", "WARN"])
def test_a_bad_print_is_caught_wherever_it_falls(at, factor, severity):
    c = walk(60)
    c[at] *= factor
    res = validate_bars(closes(c), QualityConfig(spike_severity=severity))
    caught = pd.concat([res.quarantine, res.warnings])
    caught = caught[caught["rule"].isin(["impossible_move", "price_spike"])]
    assert caught["session"].tolist() == [pd.Timestamp("2024-01-01") + pd.Timedelta(days=at)]
    # x10 and more is impossible: quarantined whatever the spike severity
    assert rules_of(res.quarantine) == ["impossible_move"]
    assert len(res.clean) == 59


@pytest.mark.parametrize("severity", ["ERROR", "WARN"])
def test_a_x3_print_among_the_first_bars_is_judged_by_the_peers(severity):
    # B is new (its 3rd bar) while A and two peers have years of history: the peers' reference
    # judges it, and with ERROR it is quarantined like any later spike
    peers = [closes(walk(300, seed=s), instrument=f"P{s}") for s in range(3)]
    new = walk(10, seed=9)
    new[2] *= 3.0
    raw = pd.concat([*peers, closes(new, start="2024-10-01", instrument="NEW")], ignore_index=True)
    res = validate_bars(raw, QualityConfig(spike_severity=severity))
    flagged = (res.quarantine if severity == "ERROR" else res.warnings).query("rule == 'price_spike'")
    assert flagged[["instrument", "session"]].values.tolist() == [["NEW", pd.Timestamp("2024-10-03")]]


def test_one_accepted_move_cannot_inflate_the_reference_that_judges_the_next_bad_print():
    # two x3 prints 60 sessions apart on a fresh series: both are caught, and the second one's z
    # is as large as the first's (the first never entered the reference)
    c = walk(200)
    c[[5, 65]] *= 3.0
    res = validate_bars(closes(c), CFG)
    q = res.quarantine
    assert q["session"].tolist() == [pd.Timestamp("2024-01-06"), pd.Timestamp("2024-03-06")]
    assert q["value"].min() > 50


def test_the_severity_setting_applies_to_the_first_bars_too():
    c = walk(40)
    c[6] *= 2.0  # not impossible, far outside the reference: a price_spike at the seventh bar
    error = validate_bars(closes(c), QualityConfig(spike_severity="ERROR"))
    warn = validate_bars(closes(c), QualityConfig(spike_severity="WARN"))
    assert rules_of(error.quarantine) == ["price_spike"] and len(error.clean) == 39
    assert warn.quarantine.empty and rules_of(warn.warnings) == ["price_spike"]


def test_a_real_x10_move_on_a_back_adjusted_future_is_not_impossible():
    # back-adjusted futures can cross zero: no ceiling for them, only the vol-unit rule
    c = list(100.0 + np.random.default_rng(1).normal(0, 1, 40).cumsum())
    c += [c[-1] / 12, c[-1] / 12 + 0.5]  # WTI-like collapse that stays
    res = validate_bars(closes(c), QualityConfig(spike_severity="WARN"), back_adjusted={"ES"})
    assert res.quarantine.empty and rules_of(res.warnings) == ["price_spike"]


# -- rule 7: stale prices ---------------------------------------------------------------------


def test_stale_price_warns_from_the_nth_equal_close_and_keeps_the_bars():
    cfg = QualityConfig(stale_sessions=3)
    res = validate_bars(closes([1, 2, 2, 2, 2, 3]), cfg)
    w = res.warnings
    # run lengths 1,1,2,3,4,1: the 3rd and 4th equal closes reach stale_sessions = 3
    assert w["session"].tolist() == [pd.Timestamp("2024-01-04"), pd.Timestamp("2024-01-05")]
    assert w["value"].tolist() == [3.0, 4.0]
    assert (w["severity"] == "WARN").all()
    assert w["detail"].iloc[0].startswith("close 2 unchanged for 3 sessions (since 2024-01-02)")
    assert len(res.clean) == 6
    assert res.summary.set_index("rule").loc["stale_price", "rows"] == 2


def test_stale_runs_do_not_cross_instruments():
    cfg = QualityConfig(stale_sessions=2)
    raw = pd.concat([closes([1, 2], instrument="A"), closes([2, 3], instrument="B")])
    assert validate_bars(raw, cfg).warnings.empty


# -- helpers, no look-ahead -------------------------------------------------------------------


def test_quality_errors_selects_the_given_sessions():
    raw = bars([
        {"session": "2024-01-02", "close": np.nan},
        {"session": "2024-01-03", "close": np.nan},
    ])
    res = validate_bars(raw, CFG)
    errs = quality_errors(res, ["2024-01-03"])
    assert errs["session"].tolist() == [pd.Timestamp("2024-01-03")]
    assert list(errs.columns) == ISSUE_COLUMNS


def defective_history(seed: int) -> pd.DataFrame:
    """Three instruments, 160 sessions, with every kind of defect sprinkled in."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, name in enumerate(["A", "B", "C"]):
        c = 100 + rng.normal(0, 1, 160).cumsum()
        c[rng.integers(30, 160, 4)] += rng.choice([-30, 30], 4)  # spikes
        c[100 + k : 115 + k] = c[100 + k]  # a stale run
        f = closes(c, freq="B", instrument=name)
        f["high"] = f["close"] + 0.5
        f["low"] = f["close"] - 0.5
        f.loc[rng.integers(0, 160, 3), "high"] -= 2.0  # OHLC errors
        f.loc[rng.integers(0, 160, 2), "close"] = np.nan
        frames.append(f)
    raw = pd.concat(frames, ignore_index=True)
    refetch = raw.sample(20, random_state=seed)
    refetch = refetch.assign(fetched_at=T1, close=refetch["close"] + 0.1)
    dup = raw.sample(3, random_state=seed + 1).assign(close=lambda d: d["close"] + 1.0)
    return pd.concat([raw, refetch, dup], ignore_index=True)


def upto(frame: pd.DataFrame, d: pd.Timestamp) -> pd.DataFrame:
    return frame[frame["session"] <= d].reset_index(drop=True)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(5, 150))
def test_verdicts_up_to_d_do_not_depend_on_later_data(seed, cut):
    raw = defective_history(seed)
    d = pd.bdate_range("2024-01-01", periods=160)[cut]
    full = validate_bars(raw, CFG)
    truncated = validate_bars(upto(raw, d), CFG)
    # perturb the future: later bars become wild
    later = raw["session"] > d
    perturbed = raw.copy()
    perturbed.loc[later, "close"] = perturbed.loc[later, "close"] * 3.0 - 50.0
    changed = validate_bars(perturbed, CFG)
    for other in (truncated, changed):
        for attr in ("clean", "quarantine", "warnings"):
            expected, got = upto(getattr(full, attr), d), upto(getattr(other, attr), d)
            pd.testing.assert_frame_equal(expected, got)


# -- real data --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sp500_5yr() -> pd.DataFrame:
    path = require_shared_data("stocks", "sp500_5yr_2013_2018_all505.parquet")
    raw = pd.read_parquet(path).rename(columns={"date": "session", "Name": "instrument"})
    raw = raw[raw["instrument"].isin(["AOS", "SPG", "CHK", "IP", "FTV", "WRK"])]
    return raw.assign(source="files:sp500", fetched_at=T0, volume=raw["volume"].astype("float64"))


@pytest.mark.parametrize(
    ("instrument", "session", "detail"),
    [
        ("AOS", "2014-05-19",
         "high 23.595 < low 23.85; high 23.595 < open 23.89; high 23.595 < close 24.445"),
        ("SPG", "2014-05-28", "low 174.5 > close 165.42"),
        ("CHK", "2014-06-30", "low 30.37 > close 29.39"),
        ("IP", "2014-07-01", "low 50.57 > close 50.09"),
    ],
)
def test_real_ohlc_defects_are_quarantined(sp500_5yr, instrument, session, detail):
    # the known defects of the S&P 500 5-year set (shared data README)
    q = validate_bars(sp500_5yr, CFG).quarantine
    hit = q[(q["instrument"] == instrument) & (q["session"] == pd.Timestamp(session))]
    assert rules_of(hit) == ["ohlc_inconsistent"]
    assert hit["detail"].iloc[0] == detail


@pytest.mark.parametrize(("instrument", "session"), [("FTV", "2016-07-01"), ("WRK", "2015-06-26")])
def test_real_bars_with_nan_open_high_low_stay_clean(sp500_5yr, instrument, session):
    res = validate_bars(sp500_5yr, CFG)
    clean = res.clean
    row = clean[(clean["instrument"] == instrument) & (clean["session"] == pd.Timestamp(session))]
    assert len(row) == 1 and np.isnan(row["open"].iloc[0]) and np.isfinite(row["close"].iloc[0])


def test_real_back_adjusted_negative_prices_pass_only_when_declared():
    path = require_shared_data("futures_carver_2016", "US10_price.csv")
    with path.open() as fh:
        prices = [r["PRICE"] for r in csv.DictReader(fh)]
    negative = sum(p != "" and float(p) <= 0 for p in prices)
    blank = sum(p == "" for p in prices)
    raw = read_bar_file(path, "US10").assign(fetched_at=T0)
    plain = validate_bars(raw, CFG).summary.set_index("rule")["rows"]
    declared = validate_bars(raw, CFG, back_adjusted=["US10"]).summary.set_index("rule")["rows"]
    assert negative > 0
    assert plain["non_positive_price"] == negative
    assert declared["non_positive_price"] == 0
    assert declared["close_not_finite"] == blank  # Carver's blank price rows


def test_bundled_sample_has_no_structural_defects():
    source = SampleSource(clock=lambda: T0)
    raw = source.fetch(source.instruments(), pd.Timestamp("1980-01-01"), pd.Timestamp("2030-01-01"))
    counts = validate_bars(raw, CFG).summary.set_index("rule")["rows"]
    structural = ["duplicate", "close_not_finite", "non_positive_price", "ohlc_inconsistent",
                  "negative_volume"]
    assert counts[structural].tolist() == [0] * 5


@pytest.mark.parametrize("severity", ["ERROR", "WARN"])
def test_a_bad_print_at_the_start_of_a_series_that_later_lists_on_another_calendar(severity):
    # NEWCO trades first in London (XLON sessions, which include the US holidays 2022-07-04,
    # 2022-09-05 and 2022-11-24), then lists in New York; its configuration says XNYS. Its third London bar is a
    # x100 print and its ninth a x3 print. The bars on US holidays are non-session for XNYS; the
    # two bad prints are caught from the peers' reference; none of them judges a later bar, and the
    # New York history after them is clean.
    from pipeline.calendar import exchange_calendar

    london = exchange_calendar("XLON").sessions_in_range("2022-06-27", "2022-12-30")
    new_york = exchange_calendar("XNYS").sessions_in_range("2023-01-03", "2023-06-30")
    days = london.append(new_york)
    c = walk(len(days), seed=11)
    c[2] *= 100.0
    c[8] *= 3.0
    new = bars([{"session": d, "close": float(x), "instrument": "NEWCO"} for d, x in zip(days, c)])
    peer_days = exchange_calendar("XNYS").sessions_in_range("2021-01-04", "2023-06-30")
    peers = [bars([{"session": d, "close": float(x), "instrument": f"P{s}"}
                   for d, x in zip(peer_days, walk(len(peer_days), seed=s))]) for s in range(3)]
    raw = pd.concat([new, *peers], ignore_index=True)
    res = validate_bars(raw, QualityConfig(spike_severity=severity),
                        calendars={"NEWCO": "XNYS", "P0": "XNYS", "P1": "XNYS", "P2": "XNYS"},
                        peers={"NEWCO": "equity", "P0": "equity", "P1": "equity", "P2": "equity"})
    q = res.quarantine[res.quarantine["instrument"] == "NEWCO"]
    w = res.warnings[res.warnings["instrument"] == "NEWCO"]
    holidays = [pd.Timestamp("2022-07-04"), pd.Timestamp("2022-09-05"), pd.Timestamp("2022-11-24")]
    assert holidays == list(london.difference(exchange_calendar("XNYS").sessions))
    assert sorted(q.loc[q["rule"] == "non_session", "session"]) == holidays
    assert q.loc[q["rule"] == "impossible_move", "session"].tolist() == [days[2]]  # x100: always quarantined
    spikes = (q if severity == "ERROR" else w).query("rule == 'price_spike'")
    assert spikes["session"].tolist() == [days[8]]  # x3 on the ninth bar: judged while history is short
    # nothing else of NEWCO is judged bad: the bars after each print (back to normal) and the whole
    # New York history are clean
    bad = {days[2], days[8], *holidays}
    clean = pd.DatetimeIndex(res.clean.loc[res.clean["instrument"] == "NEWCO", "session"])
    expected = days.difference(pd.DatetimeIndex(sorted(bad)))
    # (a flagged spike, WARN, is held out of the clean set until released, like a quarantined one)
    assert clean.tolist() == expected.tolist() and len(clean) == len(days) - 5
    assert not res.quarantine["instrument"].str.startswith("P").any()
