"""Carver fidelity on real data: our estimates against Carver's published numbers (issue 7).

The data tests run on 40 liquid markets of pysystemtrade's 2023 set (``scripts/carver_fidelity.py``
``LIQUID_40``: rates, equity indices, FX, energy, metals, agriculture) to keep the runtime small;
``docs/carver_fidelity.md`` holds the same table over all 238 instruments. Published values and
tolerances come from ``reference/carver.md`` §3 and issues 7 and 19, and are written here, not
imported from the script the tests check. They skip cleanly without the shared data folder; the
formula tests run everywhere.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline.signals.volatility import robust_vol
from scripts.carver_fidelity import (
    BREAKOUT_RULES,
    CARRY_RULE,
    DEFAULT_DATA,
    EWMAC_RULES,
    LIQUID_40,
    _guarded_raw,
    capped_forecasts,
    fdm_by_n,
    final_scalars,
    idm_checks,
    load_carver_2023,
    oos_by_split,
    oos_mean_abs,
    raw_forecasts,
    successive_ratios,
    to_business_days,
)
from tests.conftest import require_shared_data

# Published values (reference/carver.md §3) and the issues' tolerances, held by the tests themselves.
#: pst's pooled EWMAC scalar estimates (rob_system/config.yaml), carver.md §3.1
PUBLISHED_EWMAC = {"ewmac4_16": 8.54, "ewmac8_32": 5.95, "ewmac16_64": 4.10, "ewmac32_128": 2.79, "ewmac64_256": 1.91}
#: AFTS FDM_DICT of the n slowest equal-weight EWMAC variations, carver.md §3.3
AFTS_FDM = {2: 1.03, 3: 1.08, 4: 1.13, 5: 1.19, 6: 1.26}
RATIO_TOLERANCE = 0.05  # successive EWMAC scalar ratios within 5% (issue 7)
LEVEL_TOLERANCE = 0.25  # EWMAC scalar levels within 25% (issue 7)
BREAKOUT_RANGE = (0.55, 0.95)  # pst 0.603 .. 0.737 (issue 7)
CARRY_RANGE = (20.0, 40.0)  # book 30, pst 27.8 .. 29.4 (issue 7)
FDM_TOLERANCE = 0.05
#: Issue 19's decision: the out-of-sample level is judged on the traded (capped) forecast with the
#: walk-forward scalar, at split years 1995 to 2010; the trend rules hold 10 +/- 1, carry (whose level
#: drifts with interest rates after 2008) 7 to 11.
OOS_SPLIT_YEARS = (1995, 2000, 2005, 2010)
TREND_OOS_RANGE = (9.0, 11.0)
CARRY_OOS_RANGE = (7.0, 11.0)


@pytest.fixture(scope="module")
def measured() -> dict:
    require_shared_data(DEFAULT_DATA / "adjusted_prices_daily.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        data = load_carver_2023(DEFAULT_DATA, LIQUID_40)
        raw = raw_forecasts(data, robust_vol(data.prices))
        return {
            "n_instruments": data.prices.shape[1],
            "scalars": final_scalars(raw),
            "fdm": fdm_by_n(capped_forecasts(raw[EWMAC_RULES])),
            "oos": oos_mean_abs(raw),
            # the forecasts the pipeline trades by default: with the stale-price guard (stale_guard.sessions 5)
            "oos_splits": oos_by_split(_guarded_raw(data), years=OOS_SPLIT_YEARS),
        }


# ------------------------------------------------------------------------------ formula (no data)


def test_to_business_days_matches_pandas_business_day_resample():
    # pst's resample("1B").last() is the independent computation: a Sunday row lands on Friday and
    # wins; a Saturday NaN does not overwrite a value.
    idx = pd.DatetimeIndex(["2023-08-24", "2023-08-25", "2023-08-26", "2023-08-27", "2023-08-28"], name="session")
    frame = pd.DataFrame({"A": [1.0, 2.0, np.nan, 3.0, 4.0], "B": [5.0, np.nan, 6.0, np.nan, 7.0]}, index=idx)
    got = to_business_days(frame)
    expected = frame.resample("1B").last()
    assert list(got.index) == list(expected.index)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    assert got.loc["2023-08-25"].tolist() == [3.0, 6.0]  # hand: Sunday's 3 and Saturday's 6


@pytest.mark.parametrize("case", idm_checks(), ids=lambda c: c[0])
def test_idm_formula_is_exact_on_known_matrices(case):
    # expected values hand-computed in scripts/carver_fidelity.idm_checks (1/sqrt(w'Hw), H floored at 0)
    # and carver.md §3.3's equal-weight formula 1/sqrt((1 + (N-1) rho) / N), capped at 2.5
    name, expected, computed = case
    assert computed == pytest.approx(expected, abs=1e-12), name


def test_idm_of_carver_table_entries_to_two_decimals():
    # carver.md §3.3 table, rows N=2 and N=6: rho 0.25 -> 1.26 and 1.63, rho 0.9 -> 1.03 and 1.04
    from pipeline.portfolio.instrument_weights import idm

    for n, rho, table in [(2, 0.25, 1.26), (6, 0.25, 1.63), (2, 0.9, 1.03), (6, 0.9, 1.04)]:
        names = [f"i{k}" for k in range(n)]
        values = np.full((n, n), rho)
        np.fill_diagonal(values, 1.0)
        corr = pd.DataFrame(values, index=names, columns=names)
        assert round(idm(pd.Series(1.0 / n, index=names), corr), 2) == table


def test_out_of_sample_levels_by_split_year_equal_a_hand_computation():
    # Two instruments with |raw| 1 and 3 before 2004 and half that after (signs alternate). Before the
    # split the cross-sectional median is 2, so the scalar is 10 / 2 = 5 and the in-sample pooled mean
    # 5 x (1 + 3) / 2 = 10; after it, 5 x (0.5 + 1.5) / 2 = 5 with the median 5 x 1 = 5. Walk-forward:
    # at post-split day k the scalar is 10 / mean of the medians so far = 10 (n + k) / (2 n + k).
    sessions = pd.bdate_range("2001-01-01", "2005-12-30", name="session")
    after = sessions >= "2004-01-01"
    sign = np.where(np.arange(len(sessions)) % 2 == 0, 1.0, -1.0)
    level = np.where(after, 0.5, 1.0)
    columns = pd.MultiIndex.from_tuples([("r", "A"), ("r", "B")], names=["rule", "instrument"])
    raw = pd.DataFrame(np.column_stack([sign * level, 3 * sign * level]), index=sessions, columns=columns)

    got = oos_by_split(raw, years=(2004,)).loc[(2004, "r")]

    n, k = int((~after).sum()), np.arange(int(after.sum()))
    assert got["scalar"] == pytest.approx(5.0, rel=1e-12)
    assert got["in_sample_mean_abs"] == pytest.approx(10.0, rel=1e-12)
    assert got["mean_abs"] == pytest.approx(5.0, rel=1e-12)
    assert got["mean_abs_capped"] == pytest.approx(5.0, rel=1e-12)
    assert got["median_based"] == pytest.approx(5.0, rel=1e-12)
    assert got["pooled_mean_target"] == pytest.approx(5.0, rel=1e-12)
    assert got["wf_mean_abs"] == pytest.approx(np.mean(10 * (n + k) / (2 * n + k)), rel=1e-12)
    assert got["worst"] == "B" and got["worst_mean_abs"] == pytest.approx(7.5, rel=1e-12)


# ------------------------------------------------------------------------------ real data


def test_subset_is_the_forty_liquid_markets(measured):
    assert measured["n_instruments"] == 40


@pytest.mark.parametrize("pair", list(zip(list(PUBLISHED_EWMAC)[:-1], list(PUBLISHED_EWMAC)[1:])), ids=str)
def test_ewmac_scalar_ratio_between_speeds_within_5pct_of_published(measured, pair):
    # published ratio from pst's pooled estimates 8.54, 5.95, 4.10, 2.79, 1.91 (carver.md §3.1)
    (ours,) = successive_ratios(measured["scalars"], list(pair))
    (published,) = successive_ratios(PUBLISHED_EWMAC, list(pair))
    assert abs(ours / published - 1) <= RATIO_TOLERANCE, (pair, ours, published)


@pytest.mark.parametrize("rule", list(PUBLISHED_EWMAC))
def test_ewmac_scalar_level_within_25pct_of_published(measured, rule):
    # a vol in the wrong units (% returns, annualised) would miss by a factor of 16 or more
    ratio = measured["scalars"][rule] / PUBLISHED_EWMAC[rule]
    assert abs(ratio - 1) <= LEVEL_TOLERANCE, (rule, measured["scalars"][rule])


@pytest.mark.parametrize("rule", BREAKOUT_RULES)
def test_breakout_scalar_in_issue_range(measured, rule):
    # pst publishes 0.603 .. 0.737 (carver.md §3.2); issue 7 tolerance 0.55 - 0.95
    lo, hi = BREAKOUT_RANGE
    assert lo <= measured["scalars"][rule] <= hi, measured["scalars"][rule]


def test_carry_scalar_in_issue_range(measured):
    # book 30, pst 27.8 - 29.4 (carver.md §3.2); issue 7 tolerance 20 - 40
    lo, hi = CARRY_RANGE
    assert lo <= measured["scalars"][CARRY_RULE] <= hi, measured["scalars"][CARRY_RULE]


@pytest.mark.parametrize("n", list(AFTS_FDM))
def test_fdm_of_equal_weight_ewmac_set_within_005_of_afts(measured, n):
    # AFTS FDM_DICT 1.03, 1.08, 1.13, 1.19, 1.26 for the n slowest variations; final value of
    # estimate_fdm (expanding pooled correlation)
    expanding, pooled = measured["fdm"][n]
    assert abs(expanding - AFTS_FDM[n]) <= FDM_TOLERANCE, (n, expanding)
    assert math.isclose(expanding, pooled, abs_tol=0.02)  # the smoothed expanding value ~ the whole-sample one


@pytest.mark.parametrize("year", OOS_SPLIT_YEARS)
@pytest.mark.parametrize("rule", [*EWMAC_RULES, *BREAKOUT_RULES, CARRY_RULE])
def test_out_of_sample_level_of_the_traded_forecast(measured, rule, year):
    # Scalars re-estimated each session from the sessions before it (walk-forward, as the forecast_scalars
    # asset does), forecasts capped at +/-20 (the forecast combined and traded), pooled mean |forecast|
    # from 1 January of the split year to the end of the data. On these markets (2010): ewmac2_8 10.12,
    # breakout40 9.13, carry 8.10; uncapped ewmac2_8 is 11.02 (its heavy tails, cut by the cap) and carry's
    # level falls with rates after 2008 (docs/carver_fidelity.md, "The out-of-sample decision").
    lo, hi = CARRY_OOS_RANGE if rule == CARRY_RULE else TREND_OOS_RANGE
    level = measured["oos_splits"].loc[(year, rule), "wf_mean_abs_capped"]
    assert lo <= level <= hi, (rule, year, level)

