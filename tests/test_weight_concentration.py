"""Instrument weights carry a concentration check: one instrument far above its equal-risk share
(the mark of a broken vol estimate) fails a blocking check, so no target position and no order
is made until a person releases it."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.definitions import execute_daily
from pipeline.portfolio.instrument_weights import WeightsError, weight_concentration
from pipeline.store.ledger import Ledger
from pipeline.store.warehouse import WAREHOUSE_FILE
from tests.conftest import LATEST_SAMPLE_SESSION, write_config


def test_the_broken_vol_case_is_flagged_with_its_multiple():
    # the case found on unseen data: one instrument at 0.974, nineteen others sharing the rest
    w = pd.Series([0.974] + [0.026 / 19] * 19, index=["BAD"] + [f"S{i}" for i in range(19)])
    found = weight_concentration(w, 10.0)
    assert found.index.tolist() == ["BAD"]
    assert found.loc["BAD", "multiple"] == pytest.approx(0.974 * 20)
    assert found.loc["BAD", "equal_share"] == pytest.approx(0.05)


def test_erc_diversifiers_and_ineligible_instruments_are_not_concentrated():
    # WTI's ERC weight in the bundled sample in 1991 (0.19 with 22 eligible of 29): 4.2x, allowed
    w = pd.Series(np.r_[0.19, np.full(21, 0.81 / 21), np.zeros(7)])
    assert weight_concentration(w, 10.0).empty
    assert weight_concentration(w, 4.0).index.tolist() == [0]


def test_the_limit_must_be_above_the_equal_share():
    with pytest.raises(WeightsError, match="max_multiple must be > 1"):
        weight_concentration(pd.Series([0.5, 0.5]), 1.0)


def test_a_concentrated_weight_blocks_the_daily_until_a_person_releases_it(tmp_path):
    # a limit of 1.01x the equal share trips on the small sample universe's ERC weights (they are not all equal)
    config = write_config(tmp_path, portfolio={"max_weight_concentration": 1.01})
    cfg = load_config(config)
    with dg.instance_for_test() as instance:
        first = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
        assert not first.success
        checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
        check = checks["weights_not_concentrated"]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        made = {e.asset_key.to_user_string() for e in first.get_asset_materialization_events()}
        assert "instrument_weights" in made and "target_positions" not in made and "orders" not in made
        ledger = Ledger(cfg.lake_path / WAREHOUSE_FILE)
        assert ledger.intents().empty

        estimated_at, named = check.description.split(" release ")[1].split()[:2]
        concentrated = check.metadata["concentrated"].value
        instruments = [row.split("|")[1].strip() for row in concentrated.splitlines()[2:]]
        assert named in instruments
        for instrument in instruments:
            ledger.release_quarantined(estimated_at, instrument, "weight_concentration", reason="diversifier, checked",
                                       released_by="test")
        second = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
        assert second.success
        checks = {c.check_name: c for c in second.get_asset_check_evaluations()}
        assert checks["weights_not_concentrated"].passed
        assert sorted(checks["weights_not_concentrated"].metadata["released"].value) == sorted(instruments)
