"""The non_session rule: a bar dated on a day its exchange does not trade goes to quarantine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import QualityConfig
from pipeline.quality.rules import QualityInputError, validate_bars
from tests.test_quality import bars

CFG = QualityConfig()
#: NYSE holidays of 2022, written out by hand from the exchange's published schedule (New Year's
#: Day fell on a Saturday and was not observed): an independent check on exchange_calendars.
NYSE_HOLIDAYS_2022 = pd.DatetimeIndex([
    "2022-01-17", "2022-02-21", "2022-04-15", "2022-05-30", "2022-06-20", "2022-07-04",
    "2022-09-05", "2022-11-24", "2022-12-26",
])


def _rows(days: list[str], instrument: str = "ES", close: float = 100.0) -> list[dict]:
    return [{"session": d, "instrument": instrument, "close": close} for d in days]


def test_weekend_and_holiday_bars_are_quarantined_with_the_rule_and_the_reason():
    # Fri 2022-07-01, Sat 07-02, Sun 07-03, Mon 07-04 (Independence Day), Tue 07-05.
    raw = bars(_rows(["2022-07-01", "2022-07-02", "2022-07-03", "2022-07-04", "2022-07-05"]))
    res = validate_bars(raw, CFG, calendars={"ES": "XNYS"})
    assert res.clean["session"].dt.strftime("%Y-%m-%d").tolist() == ["2022-07-01", "2022-07-05"]
    q = res.quarantine
    assert q["rule"].tolist() == ["non_session"] * 3 and set(q["severity"]) == {"ERROR"}
    assert q["session"].dt.strftime("%Y-%m-%d").tolist() == ["2022-07-02", "2022-07-03", "2022-07-04"]
    assert q["detail"].iloc[1] == ("2022-07-03 is a Sunday, not a session of the instrument's calendar XNYS "
                                   "(weekend, holiday or closure); check the source's date stamps")
    assert q["value"].tolist() == [100.0] * 3 and set(q["source"]) == {"test"}
    assert res.summary.set_index("rule").loc["non_session", "rows"] == 3


def test_nothing_is_lost_every_raw_bar_is_clean_or_quarantined():
    days = pd.date_range("2022-12-20", "2023-01-03", freq="D").strftime("%Y-%m-%d").tolist()
    res = validate_bars(bars(_rows(days)), CFG, calendars={"ES": "XNYS"})
    assert len(res.clean) + len(res.quarantine) == len(days) == 15
    # 2022-12-24/25/31, 2023-01-01 are weekends, 12-26 and 2023-01-02 the observed holidays.
    assert len(res.quarantine) == 4 + 2


def test_each_instrument_is_judged_by_its_own_calendar():
    # 2022-07-04 is an NYSE holiday but a session of the 24/5 calendar (spot FX trades); Sunday is neither.
    raw = bars(_rows(["2022-07-03", "2022-07-04"], "SPY") + _rows(["2022-07-03", "2022-07-04"], "EURUSD", 1.04))
    res = validate_bars(raw, CFG, calendars={"SPY": "XNYS", "EURUSD": "24/5"})
    q = res.quarantine.set_index(["instrument", res.quarantine["session"].dt.strftime("%Y-%m-%d")])["rule"]
    assert q.to_dict() == {("EURUSD", "2022-07-03"): "non_session", ("SPY", "2022-07-03"): "non_session",
                           ("SPY", "2022-07-04"): "non_session"}
    assert res.clean[["instrument", "close"]].values.tolist() == [["EURUSD", 1.04]]


def test_without_calendars_dates_are_not_checked():
    raw = bars(_rows(["2022-07-02", "2022-07-03"]))  # a weekend
    assert len(validate_bars(raw, CFG).clean) == 2
    assert len(validate_bars(raw, CFG, calendars={"OTHER": "XNYS"}).clean) == 2  # ES has no calendar


def test_an_unknown_calendar_is_a_clear_error_naming_the_instrument():
    with pytest.raises(QualityInputError, match=r"calendar 'NOPE' of ES is not an exchange_calendars code"):
        validate_bars(bars(_rows(["2022-07-01"])), CFG, calendars={"ES": "NOPE"})


def test_a_weekend_bar_never_feeds_the_spike_check():
    # 40 weekday sessions (no NYSE holiday in them) alternating 100/101 (vol 1 per day), then a Sunday at 1000.
    sessions = pd.bdate_range("2022-09-06", periods=40)
    rows = [{"session": s, "close": 100.0 + (i % 2)} for i, s in enumerate(sessions)]
    sunday = sessions[-1] + pd.offsets.Week(weekday=6)
    monday = sunday + pd.Timedelta(days=1)
    rows += [{"session": sunday, "close": 1000.0}, {"session": monday, "close": 100.0}]
    res = validate_bars(bars(rows), CFG, calendars={"ES": "XNYS"})
    assert res.quarantine["rule"].tolist() == ["non_session"]
    assert res.quarantine["session"].iloc[0] == sunday
    assert res.clean["session"].iloc[-1] == monday  # judged against Friday's close, not the Sunday print


def test_a_released_non_session_bar_returns_with_a_warning():
    released = pd.DataFrame({"session": [pd.Timestamp("2022-07-03")], "instrument": ["ES"], "rule": ["non_session"]})
    res = validate_bars(bars(_rows(["2022-07-01", "2022-07-03"])), CFG, calendars={"ES": "XNYS"}, released=released)
    assert res.quarantine.empty and len(res.clean) == 2
    assert res.warnings["detail"].str.startswith("released after a manual check").tolist() == [True]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 364), min_size=1, max_size=60, unique=True))
def test_quarantined_dates_are_exactly_the_weekends_and_nyse_holidays_of_2022(offsets):
    days = pd.Timestamp("2022-01-01") + pd.to_timedelta(sorted(offsets), unit="D")
    res = validate_bars(bars(_rows(list(days))), CFG, calendars={"ES": "XNYS"})
    expected = days[(days.dayofweek >= 5) | days.isin(NYSE_HOLIDAYS_2022)]
    got = pd.DatetimeIndex(res.quarantine["session"]).as_unit("ns")
    assert np.array_equal(got.sort_values(), expected.as_unit("ns"))
    assert len(res.clean) == len(days) - len(expected)


# -- in the pipeline: clean_bars keeps non-session bars in the quarantine table ---------------------


def test_clean_bars_quarantines_a_vendors_sunday_bars_and_keeps_every_row(tmp_path):
    import dagster as dg
    import yaml

    from assets.resources import default_resources
    from pipeline.config import load_config
    from pipeline.definitions import build_definitions

    assets = {a.key.to_user_string(): a for a in build_definitions(load_config()).assets}
    raw_bars, clean_bars = assets["raw_bars"], assets["clean_bars"]
    from pipeline.store.lake import Lake

    # Dukascopy-style EURUSD: every weekday of Nov-Dec 2022 (24/5 sessions) plus a bar each Sunday.
    days = pd.date_range("2022-11-01", "2022-12-28", freq="D")
    days = days[days.dayofweek != 5]
    sundays = days[days.dayofweek == 6]
    folder = tmp_path / "bars"
    folder.mkdir()
    closes = 1.0 + 0.001 * (np.arange(len(days)) % 3)
    pd.DataFrame({"Date": days.strftime("%Y.%m.%d"), "Open": closes, "High": closes + 0.002,
                  "Low": closes - 0.002, "Close": closes}).to_csv(folder / "EURUSD.csv", index=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "lake_root": str(tmp_path / "lake"), "history_start": "2022-11-01",
        "source": {"kind": "files", "path": str(folder)},
        "instruments": [{"symbol": "EURUSD", "sec_type": "CASH", "asset_class": "fx", "calendar": "24/5"}],
    }))
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_bars, clean_bars], partition_key="2022-12-28", instance=instance,
                                resources=default_resources(str(config)))
    assert result.success
    lake = Lake(tmp_path / "lake")
    quarantine, clean = lake.read("quarantine"), lake.read("clean_bars")
    assert set(quarantine["rule"]) == {"non_session"}
    assert sorted(quarantine["session"]) == list(sundays)
    assert len(sundays) == 8 and len(clean) + len(quarantine) == len(days)
    assert not clean["session"].dt.dayofweek.isin([5, 6]).any()
    assert pd.Timestamp("2022-12-26") in set(clean["session"])  # an NYSE holiday, but FX trades
