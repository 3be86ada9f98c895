"""A quarantined bar comes back only through an explicit, recorded release for its rule."""

import pandas as pd
import pytest

from pipeline.config import QualityConfig
from pipeline.quality.rules import flagged_spikes, validate_bars
from pipeline.store.ledger import Ledger, LedgerError
from tests.test_quality import alternating, bars, closes

BAD = {"session": "2024-01-03", "open": 100.0, "high": 99.0, "low": 101.0, "close": 100.0}  # high < low


def _raw():
    return bars([{"session": "2024-01-02", "close": 100.0}, BAD, {"session": "2024-01-04", "close": 100.5}])


def _released(rule):
    return pd.DataFrame({"session": [pd.Timestamp("2024-01-03")], "instrument": ["ES"], "rule": [rule]})


def test_an_unreleased_bad_bar_is_quarantined():
    result = validate_bars(_raw(), QualityConfig())
    assert list(result.quarantine["rule"]) == ["ohlc_inconsistent"]
    assert pd.Timestamp("2024-01-03") not in set(result.clean["session"])


def test_a_released_bar_is_clean_and_the_release_is_reported():
    result = validate_bars(_raw(), QualityConfig(), released=_released("ohlc_inconsistent"))
    assert result.quarantine.empty
    assert pd.Timestamp("2024-01-03") in set(result.clean["session"])
    (note,) = result.warnings.itertuples()
    assert note.severity == "WARN" and note.detail.startswith("released after a manual check: ")


def test_a_release_for_another_rule_does_not_apply():
    result = validate_bars(_raw(), QualityConfig(), released=_released("price_spike"))
    assert list(result.quarantine["rule"]) == ["ohlc_inconsistent"]


def test_spikes_as_warnings_are_flagged_out_of_the_clean_set_without_a_quarantine():
    values = alternating(60) + [160.0] + [160.0 + (i % 2) for i in range(5)]  # a 60-unit jump
    error = validate_bars(closes(values), QualityConfig(spike_severity="ERROR"))
    warn = validate_bars(closes(values), QualityConfig(spike_severity="WARN"))
    assert list(error.quarantine["rule"]) == ["price_spike"] and len(error.clean) == len(values) - 1
    assert warn.quarantine.empty and len(warn.clean) == len(values) - 1
    assert list(warn.warnings["rule"]) == ["price_spike"] and (warn.warnings["severity"] == "WARN").all()
    assert warn.warnings["detail"].iloc[0].endswith("flagged: not traded, out of vol, until released, check the source")
    flagged = flagged_spikes(warn.warnings)
    assert flagged["session"].tolist() == [pd.Timestamp("2024-03-01")]


def test_a_released_flagged_spike_returns_to_the_clean_set():
    values = alternating(60) + [160.0] + [160.0 + (i % 2) for i in range(5)]
    released = pd.DataFrame({"session": [pd.Timestamp("2024-03-01")], "instrument": ["ES"], "rule": ["price_spike"]})
    warn = validate_bars(closes(values), QualityConfig(spike_severity="WARN"), released=released)
    assert len(warn.clean) == len(values) and flagged_spikes(warn.warnings).empty
    assert warn.warnings["detail"].iloc[0].startswith("released after a manual check")


def test_the_ledger_records_each_release_once_with_reason_and_author(tmp_path):
    ledger = Ledger(tmp_path / "warehouse.duckdb").init()
    assert ledger.release_quarantined("2024-01-03", "ES", "ohlc_inconsistent", "checked vendor", "alice")
    assert not ledger.release_quarantined("2024-01-03", "ES", "ohlc_inconsistent", "again", "bob")
    (row,) = ledger.quarantine_releases().itertuples()
    assert (row.instrument, row.rule, row.reason, row.released_by) == ("ES", "ohlc_inconsistent", "checked vendor", "alice")
    with pytest.raises(LedgerError, match="reason"):
        ledger.release_quarantined("2024-01-04", "ES", "price_spike", "", "alice")
