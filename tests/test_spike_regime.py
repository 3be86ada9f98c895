"""A change of regime is not a bad print for ever: after ``quality.spike_regime_sessions`` sessions in
a row with a flagged bar, the next bar far outside the reference starts a new regime (accepted,
WARN ``spike_regime``) and the reference restarts from it, judging only bars up to each session."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import QualityConfig
from pipeline.quality.rules import flagged_spikes, validate_bars
from tests.conftest import require_shared_data
from tests.test_quality import closes


def pegged_then_floating(seed: int = 7, peg: int = 300, floating: int = 200) -> np.ndarray:
    """A currency held within 0.01% a day for ``peg`` sessions, then floating at 1.5% a day."""
    rng = np.random.default_rng(seed)
    steps = np.r_[rng.normal(0, 0.0001, peg), rng.normal(0, 0.015, floating)]
    return 1.2 * np.exp(steps.cumsum())


def test_after_five_flagged_sessions_the_sixth_starts_a_new_regime():
    raw = closes(pegged_then_floating(), freq="B")
    res = validate_bars(raw, QualityConfig(spike_severity="WARN"))
    flagged = flagged_spikes(res.warnings)["session"]
    regime = res.warnings.loc[res.warnings["rule"] == "spike_regime", "session"]
    sessions = pd.DatetimeIndex(raw["session"])
    assert len(regime) >= 1
    first_regime = regime.iloc[0]
    before = flagged[flagged < first_regime]
    # the five sessions held before it are consecutive sessions of the floating period
    assert len(before) == 5 and sessions.get_loc(first_regime) - sessions.get_loc(before.iloc[0]) == 5
    # the market is traded again: nearly every floating bar after the new regime's warm-up is clean
    late = sessions[sessions > first_regime + pd.Timedelta(days=40)]
    clean = pd.DatetimeIndex(res.clean["session"])
    assert late.isin(clean).mean() > 0.95
    assert res.quarantine.empty  # WARN: nothing quarantined, the flagged bars are held


def test_without_the_regime_rule_the_floating_market_is_held_for_ever():
    raw = closes(pegged_then_floating(), freq="B")
    res = validate_bars(raw, QualityConfig(spike_severity="WARN", spike_regime_sessions=None))
    assert len(flagged_spikes(res.warnings)) > 100  # most of the floating period flagged
    assert (res.warnings["rule"] == "spike_regime").sum() == 0


def test_a_one_day_bad_print_is_not_a_regime():
    c = pegged_then_floating(floating=0, peg=300)
    c[150] *= 1.05
    res = validate_bars(closes(c, freq="B"), QualityConfig(spike_severity="ERROR"))
    assert res.quarantine["rule"].tolist() == ["price_spike"]
    assert (res.warnings["rule"] == "spike_regime").sum() == 0


def test_the_regime_decision_uses_only_bars_up_to_the_session():
    full = closes(pegged_then_floating(), freq="B")
    cfg = QualityConfig(spike_severity="WARN")
    whole = validate_bars(full, cfg)
    for cut in (303, 306, 320):  # during the flags, at the regime, after it
        part = validate_bars(full.iloc[:cut], cfg)
        upto = full["session"].iloc[cut - 1]
        pd.testing.assert_frame_equal(part.clean.reset_index(drop=True),
                                      whole.clean[whole.clean["session"] <= upto].reset_index(drop=True))


def test_the_real_devalues_in_1999_and_is_traded_again_within_a_week():
    path = require_shared_data("futures_carver_2023", "adjusted_prices_daily.parquet")
    prices = pd.read_parquet(path)
    bre = prices[(prices["instrument"] == "BRE") & (prices["date"] < "2000-01-01")].dropna()
    raw = closes(bre["price"].to_numpy(), instrument="BRE")
    raw["session"] = pd.DatetimeIndex(bre["date"]).normalize().to_numpy()
    # the real's back-adjusted prices cross zero: judged in price points
    res = validate_bars(raw, QualityConfig(spike_severity="WARN"), back_adjusted=["BRE"])
    flagged = flagged_spikes(res.warnings)
    in_1999 = flagged.loc[flagged["session"] >= "1999-01-01", "session"]
    # the float of 1999-01-13: five sessions held (1999-01-12 .. 01-19), then a new regime on 01-20;
    # without the rule 45 sessions of 1999 were held, to the year's end
    assert [str(d.date()) for d in in_1999] == ["1999-01-12", "1999-01-13", "1999-01-14", "1999-01-15", "1999-01-19"]
    regime = res.warnings.loc[res.warnings["rule"] == "spike_regime", "session"]
    assert [str(d.date()) for d in regime] == ["1999-01-20"]
    without = validate_bars(raw, QualityConfig(spike_severity="WARN", spike_regime_sessions=None), back_adjusted=["BRE"])
    assert (flagged_spikes(without.warnings)["session"] >= "1999-01-01").sum() == 45
