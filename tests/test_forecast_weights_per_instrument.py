"""Forecast weights per instrument (pst's ``forecast_weights: {INSTRUMENT: {rule: weight}}``):
each instrument is combined with its own weights and the FDM of its own weight group, exactly as
if its group were configured alone with those weights for every instrument."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.config import PipelineConfig
from pipeline.signals.combination import combine_rules
from pipeline.signals.combine import CombinationError

RULES = {"ewmac": [[8, 32], [32, 128]], "breakout": [], "carry": {}}
SCALARS = {"ewmac8_32": 5.3, "ewmac32_128": 2.65}
#: The combination alone, on forecasts without prices: no speed limit, no cost or history exclusions.
NO_COSTS = {"apply_speed_limit": False, "max_sr_cost_per_trade": None, "min_history_sessions": None}


def _config(symbols, weights, fdm="estimate") -> PipelineConfig:
    return PipelineConfig(
        instruments=[{"symbol": s, "sec_type": "STK", "asset_class": "equity"} for s in symbols],
        rules={**RULES, "forecast_scalars": SCALARS},
        combination={"forecast_weights": weights, "fdm": fdm, "forecast_weight_ewma_span": None,
                     **NO_COSTS},
    )


def _capped(symbols, n=700, seed=2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2018-01-01", periods=n, name="session")
    cols = pd.MultiIndex.from_product([["ewmac8_32", "ewmac32_128"], symbols], names=["rule", "instrument"])
    base = rng.normal(0, 1, (n, len(symbols))).cumsum(axis=0) / 8
    noise = rng.normal(0, 4, (n, 2 * len(symbols)))
    values = np.clip(np.tile(base, 2) * 5 + noise, -20, 20)
    return pd.DataFrame(values, index=index, columns=cols)


SYMBOLS = ["A", "B", "C", "D"]
FAST = {"ewmac8_32": 0.8, "ewmac32_128": 0.2}
SLOW = {"ewmac8_32": 0.1, "ewmac32_128": 0.9}


@pytest.mark.parametrize("fdm", ["estimate", 1.25])
def test_each_group_combines_as_if_configured_alone(fdm):
    capped = _capped(SYMBOLS)
    per = combine_rules(capped, None, None, _config(SYMBOLS, {"A": FAST, "B": SLOW, "C": FAST, "D": SLOW}, fdm))
    for weights, members in ((FAST, ["A", "C"]), (SLOW, ["B", "D"])):
        alone = combine_rules(capped.loc[:, capped.columns.get_level_values(1).isin(members)], None, None,
                              _config(members, weights, fdm))
        pd.testing.assert_frame_equal(per.combined[members], alone.combined[members], rtol=1e-12)
        for m in members:
            np.testing.assert_allclose(per.fdm_by_instrument[m].to_numpy(), alone.fdm.to_numpy(), rtol=1e-12)
    # the two groups differ: the weights reach the combination
    assert not np.allclose(per.combined["A"], combine_rules(capped, None, None, _config(SYMBOLS, SLOW, fdm)).combined["A"])
    assert per.weights_by_instrument.loc["B"].to_dict() == pytest.approx(SLOW)
    wide = per.fdm_wide()
    assert list(wide.columns) == SYMBOLS and wide.notna().any().all()


def test_one_weight_set_for_all_is_the_global_form():
    capped = _capped(SYMBOLS)
    per = combine_rules(capped, None, None, _config(SYMBOLS, {s: FAST for s in SYMBOLS}))
    glob = combine_rules(capped, None, None, _config(SYMBOLS, FAST))
    pd.testing.assert_frame_equal(per.combined, glob.combined, rtol=1e-12)
    np.testing.assert_allclose(per.fdm.to_numpy(), glob.fdm.to_numpy(), rtol=1e-12)


def test_every_instrument_must_be_listed_and_no_other():
    with pytest.raises(ValidationError, match=r"missing \['D'\], not in the universe \['E'\]"):
        _config(SYMBOLS, {"A": FAST, "B": SLOW, "C": FAST, "E": SLOW})


def test_a_weight_on_a_rule_without_forecasts_for_that_instrument_is_an_error():
    capped = _capped(SYMBOLS)
    with_carry = {"ewmac8_32": 0.5, "carry": 0.5}
    cfg = PipelineConfig(
        instruments=[{"symbol": s, "sec_type": "STK", "asset_class": "equity"} for s in SYMBOLS],
        rules={**RULES, "carry": {"carry": {"smooth_days": 90}}, "forecast_scalars": {**SCALARS, "carry": 30.0}},
        combination={"forecast_weights": {"A": with_carry, "B": FAST, "C": FAST, "D": FAST}, **NO_COSTS},
    )
    with pytest.raises(CombinationError, match="A: carry"):
        combine_rules(capped, None, None, cfg)
