"""Instrument weights by method (ERC, equal, fixed, handcrafted) and the IDM of the chosen weights.

Returns are built so that their sample correlation is known exactly: columns of an orthonormal,
zero-mean basis, B = 0.8 A + 0.6 x2, C independent, so corr(A, B) = 0.8 and every other pair 0.
"""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.config import PortfolioConfig
from pipeline.portfolio.instrument_weights import (
    WeightsError,
    estimate_instrument_weights,
)

RHO = 0.8


def _returns(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(n, 3))
    raw -= raw.mean(axis=0)
    q, _ = np.linalg.qr(raw)  # orthonormal columns, each still zero-mean (combinations of centred columns)
    q *= math.sqrt(n - 1)  # unit sample variance
    a, x2, c = q.T
    values = np.column_stack([a, RHO * a + math.sqrt(1 - RHO**2) * x2, c])
    index = pd.bdate_range("2020-01-01", periods=n, name="session")
    return pd.DataFrame(values, index=index, columns=pd.Index(["A", "B", "C"], name="instrument"))


def _estimate(method, **kwargs):
    returns = _returns()
    return estimate_instrument_weights(returns, lookback_sessions=1000, min_sessions=50, method=method, **kwargs)


def test_the_constructed_correlation_is_exact():
    corr = _returns().corr().to_numpy()
    np.testing.assert_allclose(corr, [[1, RHO, 0], [RHO, 1, 0], [0, 0, 1]], atol=1e-12)


def test_equal_weights_and_their_idm():
    est = _estimate("equal")
    np.testing.assert_allclose(est.weights.iloc[-1].to_numpy(), [1 / 3] * 3, atol=1e-15)
    # w'Hw = (3 + 2 x 0.8) / 9 -> IDM = 3 / sqrt(4.6) = 1.398757...
    assert est.idm.iloc[-1] == pytest.approx(3 / math.sqrt(4.6), abs=1e-9)


def test_fixed_weights_are_renormalised_and_give_their_idm():
    est = _estimate("fixed", fixed_weights={"A": 2.0, "B": 1.0, "C": 1.0})
    np.testing.assert_allclose(est.weights.iloc[-1].to_numpy(), [0.5, 0.25, 0.25], atol=1e-15)
    # w'Hw = 0.25 + 0.0625 + 0.0625 + 2 x 0.5 x 0.25 x 0.8 = 0.575
    assert est.idm.iloc[-1] == pytest.approx(1 / math.sqrt(0.575), abs=1e-9)


def test_fixed_weights_skip_instruments_without_data_or_weight():
    returns = _returns()
    returns.iloc[:200, 2] = np.nan  # C listed late: not eligible at the first month ends
    est = estimate_instrument_weights(returns, 1000, 50, method="fixed", fixed_weights={"A": 1.0, "C": 3.0})
    first, last = est.weights.iloc[0], est.weights.iloc[-1]
    assert first.tolist() == [1.0, 0.0, 0.0]  # A alone (B has no fixed weight, C no data yet)
    np.testing.assert_allclose(last.to_numpy(), [0.25, 0.0, 0.75], atol=1e-15)
    assert est.idm.iloc[0] == pytest.approx(1.0)
    # A and C uncorrelated: w'Hw = 0.0625 + 0.5625 = 0.625
    assert est.idm.iloc[-1] == pytest.approx(1 / math.sqrt(0.625), abs=1e-9)


def test_handcrafted_weights_group_the_correlated_pair():
    est = _estimate("handcraft")
    # {A, B} and {C}: A, B 1/2 each within their group, group variance 0.5 (1 + 0.8) = 0.9 against 1
    # for C; the groups share in proportion to 1 / variance: {A, B} (1/0.9) / (1/0.9 + 1) = 10/19.
    w = est.weights.iloc[-1].to_numpy()
    np.testing.assert_allclose(w, [5 / 19, 5 / 19, 9 / 19], atol=1e-12)
    # w'Hw = 2 (5/19)^2 (1 + 0.8) + (9/19)^2 = (90 + 81) / 361 = 9/19 -> IDM = sqrt(19/9)
    assert est.idm.iloc[-1] == pytest.approx(math.sqrt(19 / 9), abs=1e-9)


def test_erc_stays_the_default_and_equalises_risk():
    default = estimate_instrument_weights(_returns(), 1000, 50)
    erc = _estimate("erc")
    pd.testing.assert_frame_equal(default.weights, erc.weights)
    rc = erc.risk_contributions.iloc[-1].to_numpy()
    np.testing.assert_allclose(rc, [1 / 3] * 3, atol=1e-8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "magic"}, "unknown method"),
        ({"method": "fixed"}, "needs weights"),
        ({"method": "fixed", "fixed_weights": {"A": 1.0, "Z": 1.0}}, "without returns: \\['Z'\\]"),
        ({"method": "fixed", "fixed_weights": {"A": -1.0}}, "bad: \\['A'\\]"),
    ],
)
def test_bad_method_or_fixed_weights_are_named(kwargs, match):
    with pytest.raises(WeightsError, match=match):
        estimate_instrument_weights(_returns(), 1000, 50, **kwargs)


def test_the_config_default_keeps_erc():
    cfg = PortfolioConfig()
    assert cfg.instrument_weights_method == "erc" and cfg.instrument_weights is None
    assert PortfolioConfig(instrument_weights_method="fixed", instrument_weights={"A": 1}).instrument_weights == {"A": 1.0}


def test_the_daily_job_uses_fixed_instrument_weights_and_their_idm(tmp_path):
    """The asset path: fixed weights from the config, re-normalised; an instrument without weight
    gets no position; the stored IDM is that of the fixed weights."""
    import dagster as dg

    from pipeline.config import load_config
    from pipeline.definitions import execute_daily
    from pipeline.store.lake import Lake
    from tests.conftest import LATEST_SAMPLE_SESSION, write_config

    config = write_config(
        tmp_path, symbols=["AAPL", "KO", "XOM"],
        portfolio={"instrument_weights_method": "fixed", "instrument_weights": {"AAPL": 3.0, "KO": 1.0}},
        rules={"scalars": "estimate"}, stale_guard={"sessions": 5},
    )
    cfg = load_config(config)
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=False, config_path=str(config), instance=instance)
    assert result.success
    lake = Lake(cfg.lake_path)
    weights = lake.read_table("instrument_weights").pivot(index="estimated_at", columns="instrument", values="weight")
    last = weights.iloc[-1]
    assert last["AAPL"] == pytest.approx(0.75) and last["KO"] == pytest.approx(0.25) and last["XOM"] == 0.0
    # IDM of (0.75, 0.25) with the stored correlation of the two: 1 / sqrt(w'Hw), H floored at 0
    corr = lake.read_table("instrument_correlation").set_index("instrument")
    rho = max(float(corr.loc["AAPL", "KO"]), 0.0)
    idm = lake.read_table("idm").set_index("estimated_at")["idm"].iloc[-1]
    assert idm == pytest.approx(1 / math.sqrt(0.75**2 + 0.25**2 + 2 * 0.75 * 0.25 * rho), rel=1e-9)
    targets = lake.read("target_positions")
    assert (targets.loc[targets["instrument"] == "XOM", "target"].fillna(0.0) == 0.0).all()
    assert (targets.loc[targets["instrument"] == "AAPL", "target"] != 0).any()
