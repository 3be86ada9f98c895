"""Carver fidelity table: our estimates on real pysystemtrade data beside Carver's published numbers.

    python scripts/carver_fidelity.py                       # print the Markdown table
    python scripts/carver_fidelity.py --write docs/carver_fidelity.md
    python scripts/carver_fidelity.py --instruments liquid40  # the 40-market subset the tests use

Input: pysystemtrade's 2023 data (``adjusted_prices_daily.parquet`` for prices,
``multiple_prices_daily.parquet`` for carry, ``csvconfig/instrumentconfig.csv`` for point sizes),
by default from the ``shared/data/futures_carver_2023`` folder beside the project (``--data`` to
point elsewhere). The data is test and benchmark input only; nothing of it is written into the
project except the numbers in the generated table.

What is compared (published values: carver.md §3):

* EWMAC forecast scalars 4/16 .. 64/256 (pysystemtrade's pooled estimates 8.54 .. 1.91): the
  ratio between successive speeds, and each level;
* breakout scalars (pst 0.603 .. 0.737; issue tolerance 0.55 - 0.95) and the carry scalar
  (book 30, pst 27.8 - 29.4; tolerance 20 - 40);
* the FDM of equal-weight EWMAC sets of 2 .. 6 variations against AFTS's 1.03 .. 1.26;
* out of sample: scalars estimated before 2010-01-01, applied after it, give mean |forecast| 10,
  without and with the stale-price guard (``pipeline/quality/stale.py``: a market flat for 5 sessions gets
  no forecast and its flat closes leave its vol); beside it the walk-forward estimate (expanding,
  fitted through the session before each one it scales), capped and uncapped, carry's level
  by decade, and the same check at every split year 1995, 2000, 2005, 2010, 2015, 2018;
* the IDM formula ``1 / sqrt(w' H w)`` on matrices whose answer is known exactly;
* pysystemtrade's chapter-15 system from ``examples/pysystemtrade_ch15.yaml`` on Carver's 2016 files
  (``shared/data/futures_carver_2016``), run with ``trading-pipeline backtest``: its Sharpe ratio beside
  pysystemtrade's published 0.480.

Data preparation, as pysystemtrade does it: rows dated on a weekend are moved to the Friday before
(pst ``resample("1B").last()``), keeping the last value. Forecasts are counted only on sessions
where the instrument has a price (pipeline rules carry their last value over gaps, so a delisted
or not-yet-reporting instrument would otherwise sit in the cross-section with a stale forecast).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from pipeline.adapters.pysystemtrade import (  # noqa: E402
    read_adjusted_prices,
    read_instrument_config,
    read_multiple_prices,
)
from pipeline.config import DEFAULT_FORECAST_SCALARS, RulesConfig  # noqa: E402
from pipeline.portfolio.instrument_weights import idm  # noqa: E402
from pipeline.quality.stale import mask_stale_forecasts, stale_mask, without_stale  # noqa: E402
from pipeline.signals.carry import (  # noqa: E402
    CARRY_FORECAST_SCALAR,
    annualised_roll,
    carry_forecast,
)
from pipeline.signals.combine import estimate_fdm, fdm_from_correlation  # noqa: E402
from pipeline.signals.forecasts import (  # noqa: E402
    ForecastSet,
    compute_forecasts,
    estimate_forecast_scalars,
    rescale,
)
from pipeline.signals.volatility import mixed_vol, robust_vol  # noqa: E402

#: The shared data folder beside the project (absent on a fresh machine: callers skip).
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "futures_carver_2023"

EWMAC_SPEEDS = [(2, 8), (4, 16), (8, 32), (16, 64), (32, 128), (64, 256)]
BREAKOUT_LOOKBACKS = [10, 20, 40, 80, 160, 320]
EWMAC_RULES = [f"ewmac{f}_{s}" for f, s in EWMAC_SPEEDS]
BREAKOUT_RULES = [f"breakout{n}" for n in BREAKOUT_LOOKBACKS]
CARRY_RULE = "carry"

#: pysystemtrade's pooled estimates, ``rob_system/config.yaml`` (carver.md §3.1, §3.2).
PUBLISHED_EWMAC = {"ewmac4_16": 8.54, "ewmac8_32": 5.95, "ewmac16_64": 4.10, "ewmac32_128": 2.79, "ewmac64_256": 1.91}
PUBLISHED_BREAKOUT = {
    "breakout10": 0.603, "breakout20": 0.674, "breakout40": 0.704,
    "breakout80": 0.726, "breakout160": 0.739, "breakout320": 0.737,
}
PST_CARRY_RANGE = (27.8, 29.4)  # carry10 .. carry125 in rob_system/config.yaml
#: AFTS chapter 9/12 ``FDM_DICT``: equal-weight EWMAC sets of n variations (carver.md §3.3).
AFTS_FDM = {2: 1.03, 3: 1.08, 4: 1.13, 5: 1.19, 6: 1.26}

# Tolerances (issue 7).
RATIO_TOLERANCE = 0.05
LEVEL_TOLERANCE = 0.25
BREAKOUT_RANGE = (0.55, 0.95)
CARRY_RANGE = (20.0, 40.0)
FDM_TOLERANCE = 0.05
OOS_SPLIT = pd.Timestamp("2010-01-01")
OOS_TARGET, OOS_TOLERANCE = 10.0, 1.0
#: Every split year reported (1 January); 2010 is the headline split above.
OOS_SPLIT_YEARS = (1995, 2000, 2005, 2010, 2015, 2018)
#: Stale-price guard of the out-of-sample check: unchanged closes for a week.
STALE_SESSIONS = 5

#: 40 liquid markets, one contract size each, across rates, equities, FX, energy, metals and
#: agriculture; all have multiple prices (carry) in the 2023 set. Used by the tests for speed.
LIQUID_40 = [
    "US2", "US5", "US10", "US20", "US30", "SOFR", "EURIBOR", "SHATZ", "GILT", "JGB",
    "SP500", "NASDAQ", "DOW", "RUSSELL", "DAX", "FTSE100", "NIKKEI", "HANG", "EUROSTX", "VIX",
    "EUR", "JPY", "GBP", "AUD", "MXP", "NZD",
    "CRUDE_W", "BRENT_W", "GAS_US", "HEATOIL", "GOLD", "PLAT", "COPPER",
    "CORN", "WHEAT", "SOYBEAN", "SOYOIL", "SOYMEAL", "SUGAR11", "COFFEE",
]


# ------------------------------------------------------------------------------------------ data


def to_business_days(frame: pd.DataFrame) -> pd.DataFrame:
    """Move weekend-dated rows to the Friday before, keeping each instrument's last value.

    pysystemtrade's ``resample("1B").last()``: a Saturday or Sunday row lands in Friday's bin and,
    being later, wins over Friday's own value; NaN never overwrites a value. Works for float and
    nullable integer (contract) frames alike. Index ``session``, columns unchanged.
    """
    idx = pd.DatetimeIndex(frame.index)
    back = np.clip(np.asarray(idx.day_of_week) - 4, 0, None)  # Sat -> 1 day back, Sun -> 2
    if not back.any():
        return frame
    friday = pd.DatetimeIndex(idx - pd.to_timedelta(back, unit="D"), name="session")
    out = frame.groupby(friday, sort=True).last()
    out.index = pd.DatetimeIndex(out.index, name="session")
    out.columns = frame.columns
    return out


@dataclass(frozen=True)
class CarverData:
    """The 2023 set on one business-day grid.

    ``prices``: back-adjusted prices (session x instrument). ``price``, ``carry``,
    ``price_contract``, ``carry_contract``: multiple prices reindexed to ``prices`` for the
    instruments that have them (``carry_instruments``). ``point_size``: Series per instrument.
    """

    prices: pd.DataFrame
    price: pd.DataFrame
    carry: pd.DataFrame
    price_contract: pd.DataFrame
    carry_contract: pd.DataFrame
    point_size: pd.Series

    @property
    def carry_instruments(self) -> list[str]:
        return list(self.price.columns)


def load_carver_2023(folder: Path = DEFAULT_DATA, instruments: list[str] | None = None) -> CarverData:
    """Read adjusted prices, multiple prices and point sizes with the pipeline's readers."""
    folder = Path(folder)
    prices = to_business_days(read_adjusted_prices(folder / "adjusted_prices_daily.parquet", instruments).prices)
    multiple = read_multiple_prices(folder / "multiple_prices_daily.parquet", instruments)
    carry_cols = [c for c in prices.columns if c in multiple.price.columns]

    def grid(frame: pd.DataFrame) -> pd.DataFrame:
        return to_business_days(frame[carry_cols]).reindex(index=prices.index)

    config = read_instrument_config(folder / "csvconfig" / "instrumentconfig.csv")
    point_size = config["Pointsize"].reindex(prices.columns)
    return CarverData(
        prices=prices,
        price=grid(multiple.price),
        carry=grid(multiple.carry),
        price_contract=grid(multiple.price_contract),
        carry_contract=grid(multiple.carry_contract),
        point_size=point_size,
    )


def carry_raw(data: CarverData, vol: pd.DataFrame) -> pd.DataFrame:
    """Raw (unscaled) carry forecast of the instruments with multiple prices (pipeline.signals.carry)."""
    cols = data.carry_instruments
    ann = annualised_roll(data.price, data.carry, data.price_contract, data.carry_contract)
    return carry_forecast(ann, vol[cols])


def raw_forecasts(
    data: CarverData,
    vol: pd.DataFrame,
    ewmac: list[tuple[int, int]] = EWMAC_SPEEDS,
    breakout: list[int] = BREAKOUT_LOOKBACKS,
    carry: bool = True,
) -> pd.DataFrame:
    """Raw forecasts, columns ``(rule, instrument)``, masked to sessions where the instrument has a price."""
    rules = RulesConfig(ewmac=list(ewmac), breakout=list(breakout))
    frames = [compute_forecasts(data.prices, vol, rules).raw]
    if carry:
        frames.append(pd.concat({CARRY_RULE: carry_raw(data, vol)}, axis=1, names=["rule", "instrument"]))
    raw = pd.concat(frames, axis=1)
    has_price = data.prices.notna().reindex(columns=raw.columns.get_level_values("instrument")).to_numpy()
    return raw.where(has_price)


# ------------------------------------------------------------------------------------ quantities


def final_scalars(raw: pd.DataFrame) -> pd.Series:
    """Final value of the pooled, expanding estimate (``estimate_forecast_scalars``), per rule."""
    return estimate_forecast_scalars(raw).ffill().iloc[-1]


def successive_ratios(scalars: pd.Series | dict, rules: list[str]) -> list[float]:
    """``scalar(rule_k) / scalar(rule_k+1)`` for consecutive rules."""
    return [float(scalars[a]) / float(scalars[b]) for a, b in zip(rules[:-1], rules[1:])]


def capped_forecasts(raw: pd.DataFrame) -> pd.DataFrame:
    """Capped forecasts with the estimated scalars (published values until an estimate exists)."""
    fallback = {**DEFAULT_FORECAST_SCALARS, CARRY_RULE: CARRY_FORECAST_SCALAR}
    fset = ForecastSet(raw=raw, scaled=raw, capped=raw)
    return rescale(fset, estimate_forecast_scalars(raw), fallback=fallback).capped


def fdm_by_n(capped: pd.DataFrame) -> dict[int, tuple[float, float]]:
    """FDM of equal-weight sets of the n slowest EWMAC variations, n = 2..6.

    AFTS drops the fastest variations first (they cost the most), so its n-variation set is the
    n slowest. Returns ``n -> (estimate_fdm final value, FDM of the whole-sample pooled
    correlation)``; both floor correlations at 0.
    """
    out = {}
    for n in AFTS_FDM:
        rules = EWMAC_RULES[-n:]
        weights = pd.Series(1.0 / n, index=pd.Index(rules, name="rule"))
        expanding = float(estimate_fdm(capped, weights).iloc[-1])
        stacked = pd.DataFrame({r: capped[r].to_numpy().ravel() for r in rules})
        pooled = fdm_from_correlation(weights, stacked.corr())
        out[n] = (expanding, pooled)
    return out


def oos_mean_abs(
    raw: pd.DataFrame, split: pd.Timestamp = OOS_SPLIT, walk_forward: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Scalars estimated on sessions before ``split`` applied after it: pooled mean |forecast|.

    Returns a frame indexed by rule: ``scalar`` (final pre-split estimate), ``mean_abs`` (mean of
    |raw x scalar| over every instrument-day from ``split`` on, uncapped) and ``mean_abs_capped``
    (the same after the +/-20 cap), ``median_based`` (time mean of the cross-sectional median
    |forecast|, the quantity the scalar targets), ``in_sample_mean_abs`` (the pooled mean before the
    split with the same scalar), ``wf_mean_abs`` / ``wf_mean_abs_capped`` (walk-forward scalars,
    below), and ``worst`` / ``worst_mean_abs``: the instrument with the largest mean |forecast|
    after the split (where a pooled mean goes wrong, it is usually one market).

    ``walk_forward`` is ``estimate_forecast_scalars(raw)``; pass it when calling for several splits
    of the same ``raw`` (it does not depend on the split).
    """
    before = raw[raw.index < split]
    scalars = estimate_forecast_scalars(before).ffill().iloc[-1]
    after = raw[raw.index >= split]
    # Walk-forward: the expanding estimate made with sessions up to d-1, applied at d (production
    # re-estimates through time; every scalar is still fitted strictly before it is used).
    if walk_forward is None:
        walk_forward = estimate_forecast_scalars(raw)
    walk_forward = walk_forward.shift(1)
    walk_forward = walk_forward[walk_forward.index >= split]
    rows = {}
    for rule in dict.fromkeys(raw.columns.get_level_values("rule")):
        per_instrument = (after[rule].abs() * scalars[rule]).mean()
        values = _pooled_abs(after[rule] * scalars[rule])
        in_sample = _pooled_abs(before[rule] * scalars[rule])
        wf = _pooled_abs(after[rule].mul(walk_forward[rule], axis=0))
        rows[rule] = {
            "scalar": float(scalars[rule]),
            "mean_abs": float(values.mean()),
            "mean_abs_capped": float(np.minimum(values, 20.0).mean()),
            "median_based": float((after[rule].abs() * scalars[rule]).replace(0.0, np.nan).median(axis=1).mean()),
            "in_sample_mean_abs": float(in_sample.mean()),
            "wf_mean_abs": float(wf.mean()),
            "wf_mean_abs_capped": float(np.minimum(wf, 20.0).mean()),
            "worst": str(per_instrument.idxmax()),
            "worst_mean_abs": float(per_instrument.max()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def oos_by_split(raw: pd.DataFrame, years: tuple[int, ...] = OOS_SPLIT_YEARS) -> pd.DataFrame:
    """:func:`oos_mean_abs` with the split on 1 January of each of ``years``.

    Returns a frame indexed by ``(split, rule)`` (``split`` the year) with the columns of
    :func:`oos_mean_abs` plus ``pooled_mean_target``: the post-split level a scalar fitted to an
    in-sample pooled mean of exactly 10 would give, ``10 x mean_abs / in_sample_mean_abs``. It
    measures how far the rule's own level moved across the split, whatever the estimator.
    """
    walk_forward = estimate_forecast_scalars(raw)
    frames = {}
    for year in years:
        oos = oos_mean_abs(raw, pd.Timestamp(year=year, month=1, day=1), walk_forward)
        oos["pooled_mean_target"] = OOS_TARGET * oos["mean_abs"] / oos["in_sample_mean_abs"]
        frames[year] = oos
    return pd.concat(frames, names=["split", "rule"])


def _pooled_abs(frame: pd.DataFrame) -> np.ndarray:
    """|values| of every instrument-day with a forecast, flattened."""
    values = np.abs(frame.to_numpy(dtype=float).ravel())
    return values[~np.isnan(values)]


def carry_by_period(raw: pd.DataFrame, scalar: float, edges: tuple[int, ...] = (1990, 2000, 2010, 2024)) -> pd.DataFrame:
    """Carry forecast level by decade: ``raw x scalar`` (one fixed scalar), per period ``[a, b)``.

    Columns: ``instruments`` (mean number with a carry forecast per session), ``median_based``
    (time mean of the cross-sectional median |forecast|, the quantity the scalar targets),
    ``median_based_first`` (the same over the markets that already had carry in the first period
    only: a fixed set, so a change is the markets' carry, not the composition) and ``mean_abs``
    (pooled mean over instrument-days).
    """
    carry = raw[CARRY_RULE] * scalar
    first = carry[(carry.index.year >= edges[0]) & (carry.index.year < edges[1])]
    early = first.columns[first.notna().any()]
    rows = {}
    for a, b in zip(edges[:-1], edges[1:]):
        part = carry[(carry.index.year >= a) & (carry.index.year < b)]
        rows[f"{a}-{b - 1}"] = {
            "instruments": float(part.notna().sum(axis=1).mean()),
            "median_based": float(part.abs().replace(0.0, np.nan).median(axis=1).mean()),
            "median_based_first": float(part[early].abs().replace(0.0, np.nan).median(axis=1).mean()),
            "mean_abs": float(_pooled_abs(part).mean()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def idm_checks() -> list[tuple[str, float, float]]:
    """``(case, expected, computed)`` for matrices whose IDM/FDM is known exactly.

    Computed with both ``pipeline.portfolio.instrument_weights.idm`` and ``pipeline.signals.combine.fdm_from_correlation``
    (the same formula; the larger deviation is returned).
    """
    cases = []
    # Two instruments 50/50, rho 0.5: 1/sqrt(0.25 + 0.25 + 2*0.25*0.5) = 1/sqrt(0.75).
    cases.append(("2 instr, 50/50, rho 0.5", 1.0 / math.sqrt(0.75), [0.5, 0.5], [[1, 0.5], [0.5, 1]]))
    # Negative correlation floored at 0: 1/sqrt(0.5) = sqrt(2).
    cases.append(("2 instr, 50/50, rho -0.4 (floored to 0)", math.sqrt(2.0), [0.5, 0.5], [[1, -0.4], [-0.4, 1]]))
    # w = (0.5, 0.25, 0.25), rho12 0.5, rho13 0, rho23 0.25:
    # w'Hw = 0.25 + 0.0625 + 0.0625 + 2*(0.125*0.5 + 0 + 0.0625*0.25) = 0.53125.
    cases.append((
        "3 instr, (0.5, 0.25, 0.25)", 1.0 / math.sqrt(0.53125),
        [0.5, 0.25, 0.25], [[1, 0.5, 0.0], [0.5, 1, 0.25], [0.0, 0.25, 1]],
    ))
    # carver.md §3.3 formula table: equal weights, constant rho, capped at 2.5.
    for n, rho in [(6, 0.5), (10, 0.25), (30, 0.0)]:
        expected = min(1.0 / math.sqrt((1 + (n - 1) * rho) / n), 2.5)
        corr = np.full((n, n), rho)
        np.fill_diagonal(corr, 1.0)
        cases.append((f"{n} equal weights, rho {rho}", expected, [1.0 / n] * n, corr.tolist()))
    out = []
    for name, expected, w, corr in cases:
        names = [f"i{k}" for k in range(len(w))]
        ws = pd.Series(w, index=names)
        cs = pd.DataFrame(corr, index=names, columns=names, dtype=float)
        a, b = idm(ws, cs), fdm_from_correlation(ws, cs)
        out.append((name, expected, a if abs(a - expected) >= abs(b - expected) else b))
    return out


# ---------------------------------------------------------------------------------------- report


@dataclass
class Results:
    """Everything the table shows."""

    n_instruments: int
    n_carry: int
    instrument_days: int
    first: pd.Timestamp
    last: pd.Timestamp
    scalars: pd.Series  # robust vol (pipeline default)
    scalars_mixed: pd.Series  # mixed vol, EWMAC and carry only
    scalars_liquid: pd.Series  # robust vol, pooled over LIQUID_40 only
    fdm: dict[int, tuple[float, float]]
    oos: pd.DataFrame
    oos_guarded: pd.DataFrame  # the same with the stale-price guard
    carry_periods: pd.DataFrame  # guarded carry level by decade, pre-split scalar
    oos_splits: pd.DataFrame  # guarded, every split year (oos_by_split)
    oos_splits_liquid: pd.DataFrame  # the same over LIQUID_40 (loaded on its own, as the tests do)
    stale_share: float  # fraction of instrument-days the guard flags
    idm: list[tuple[str, float, float]]
    seconds: float
    chapter15: dict | None = None  # the chapter-15 command-line backtest (chapter15_backtest), run by main()
    edollar: dict | None = None  # EWMAC 32/128 alone on EDOLLAR (chapter15_backtest(EDOLLAR_CONFIG)), run by main()
    defaults: dict | None = None  # every future of the 2023 set with the defaults (defaults_run), run by main()


def compute(folder: Path = DEFAULT_DATA, instruments: list[str] | None = None) -> Results:
    """Every quantity of the table, from the data in ``folder`` (optionally a subset)."""
    started = time.perf_counter()
    data = load_carver_2023(folder, instruments)
    vol = robust_vol(data.prices)
    raw = raw_forecasts(data, vol)
    scalars = final_scalars(raw)
    liquid = raw.columns.get_level_values("instrument").isin(LIQUID_40)
    scalars_liquid = final_scalars(raw.loc[:, liquid])
    vol_mixed = mixed_vol(data.prices)
    scalars_mixed = final_scalars(raw_forecasts(data, vol_mixed, breakout=[]))
    capped = capped_forecasts(raw[EWMAC_RULES])
    stale = stale_mask(data.prices, STALE_SESSIONS)
    raw_guarded = _guarded_raw(data, stale)
    oos_guarded = oos_mean_abs(raw_guarded)
    oos_splits = oos_by_split(raw_guarded)
    oos_splits_liquid = oos_by_split(_guarded_raw(load_carver_2023(folder, LIQUID_40)))
    return Results(
        n_instruments=data.prices.shape[1],
        n_carry=len(data.carry_instruments),
        instrument_days=int(data.prices.notna().to_numpy().sum()),
        first=data.prices.index[0],
        last=data.prices.index[-1],
        scalars=scalars,
        scalars_mixed=scalars_mixed,
        scalars_liquid=scalars_liquid,
        fdm=fdm_by_n(capped),
        oos=oos_mean_abs(raw),
        oos_guarded=oos_guarded,
        oos_splits=oos_splits,
        oos_splits_liquid=oos_splits_liquid,
        carry_periods=carry_by_period(raw_guarded, float(oos_guarded.loc[CARRY_RULE, "scalar"])),
        stale_share=float(stale.to_numpy().sum() / max(data.prices.notna().to_numpy().sum(), 1)),
        idm=idm_checks(),
        seconds=time.perf_counter() - started,
    )


def _guarded_raw(data: CarverData, stale: pd.DataFrame | None = None) -> pd.DataFrame:
    """Raw forecasts with the stale-price guard: no forecast, and no vol from flat closes, where stale."""
    if stale is None:
        stale = stale_mask(data.prices, STALE_SESSIONS)
    return mask_stale_forecasts(raw_forecasts(data, robust_vol(without_stale(data.prices, stale))), stale)


def _holds(value: float) -> bool:
    """Whether an out-of-sample level is within the issue's 10 +/- 1."""
    return abs(value - OOS_TARGET) <= OOS_TOLERANCE


def _ok(flag: bool) -> str:
    return "yes" if flag else "**no**"


def markdown(res: Results, command: str, data_label: str) -> str:
    """The fidelity document: one row per published number, ours, tolerance, verdict."""
    s, sm, sl = res.scalars, res.scalars_mixed, res.scalars_liquid
    lines = [
        "# Carver fidelity: our estimates on real data beside Carver's published numbers",
        "",
        f"Generated by `{command}` on {dt.date.today().isoformat()} "
        f"({res.seconds:.0f} s). Do not edit by hand; re-run the command.",
        "",
        f"Data: pysystemtrade's 2023 futures set ({data_label}): {res.n_instruments} instruments "
        f"({res.n_carry} with multiple prices for carry), {res.instrument_days:,} instrument-days, "
        f"{res.first:%Y-%m-%d} .. {res.last:%Y-%m-%d}. Weekend-dated rows are moved to the Friday "
        "before (pst `resample(\"1B\").last()`); forecasts count only on sessions where the "
        "instrument has a price. Vol: `robust_vol` (the pipeline default); the mixed-vol column "
        "uses `mixed_vol` (pst's current default). Scalars: `estimate_forecast_scalars` "
        "(pooled cross-sectional median of |raw|, expanding mean), final value. Published values: "
        "`reference/carver.md` §3.",
        "",
        "## Forecast scalars",
        "",
        "| quantity | published | ours (robust vol) | ours (mixed vol) | ours, 40 liquid | ours / published | tolerance | holds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines.append(
        f"| EWMAC 2/8 scalar | 12.1 (AFTS code; pst n/a) | {s['ewmac2_8']:.2f} | {sm['ewmac2_8']:.2f} | {sl['ewmac2_8']:.2f} | "
        f"{s['ewmac2_8'] / 12.1:.2f} | (not in issue) | - |"
    )
    for rule, pub in PUBLISHED_EWMAC.items():
        ratio = s[rule] / pub
        lines.append(
            f"| EWMAC {rule[5:].replace('_', '/')} scalar | {pub} | {s[rule]:.2f} | {sm[rule]:.2f} | {sl[rule]:.2f} | {ratio:.2f} | "
            f"level within {LEVEL_TOLERANCE:.0%} | {_ok(abs(ratio - 1) <= LEVEL_TOLERANCE)} |"
        )
    pub_rules = list(PUBLISHED_EWMAC)
    ours_r, mixed_r = successive_ratios(s, pub_rules), successive_ratios(sm, pub_rules)
    liquid_r = successive_ratios(sl, pub_rules)
    for (a, b), pub_ratio, o, m, q in zip(
        zip(pub_rules[:-1], pub_rules[1:]), successive_ratios(PUBLISHED_EWMAC, pub_rules), ours_r, mixed_r, liquid_r
    ):
        lines.append(
            f"| ratio {a[5:].replace('_', '/')} : {b[5:].replace('_', '/')} | {pub_ratio:.3f} | {o:.3f} | {m:.3f} | {q:.3f} | "
            f"{o / pub_ratio:.3f} | within {RATIO_TOLERANCE:.0%} | {_ok(abs(o / pub_ratio - 1) <= RATIO_TOLERANCE)} |"
        )
    for rule, pub in PUBLISHED_BREAKOUT.items():
        lo, hi = BREAKOUT_RANGE
        lines.append(
            f"| {rule} scalar | {pub} | {s[rule]:.3f} | - | {sl[rule]:.3f} | {s[rule] / pub:.2f} | {lo} - {hi} | "
            f"{_ok(lo <= s[rule] <= hi)} |"
        )
    lo, hi = CARRY_RANGE
    c = s[CARRY_RULE]
    lines.append(
        f"| carry scalar | 30 (book); {PST_CARRY_RANGE[0]} - {PST_CARRY_RANGE[1]} (pst) | {c:.1f} | "
        f"{sm[CARRY_RULE]:.1f} | {sl[CARRY_RULE]:.1f} | {c / 30:.2f} | {lo:.0f} - {hi:.0f} | {_ok(lo <= c <= hi)} |"
    )
    lines += [
        "",
        "## FDM of equal-weight EWMAC sets (AFTS `FDM_DICT`)",
        "",
        "The n-variation set is the n slowest (AFTS drops the fastest, most expensive, first). Forecasts "
        "are capped with the estimated scalars. *Expanding*: final value of `estimate_fdm` (pooled "
        "expanding correlation of daily capped forecasts, weekly re-estimate, ewm span 125); "
        "*pooled*: `fdm_from_correlation` of the whole-sample pooled correlation. The verdict uses "
        "the expanding value.",
        "",
        "| n | variations | AFTS | ours (expanding) | ours (pooled) | tolerance | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, pub in AFTS_FDM.items():
        e, p = res.fdm[n]
        names = ", ".join(r[5:].replace("_", "/") for r in EWMAC_RULES[-n:])
        lines.append(
            f"| {n} | {names} | {pub:.2f} | {e:.3f} | {p:.3f} | +/-{FDM_TOLERANCE} | {_ok(abs(e - pub) <= FDM_TOLERANCE)} |"
        )
    lines += [
        "",
        f"## Out of sample: scalars estimated before {OOS_SPLIT:%Y-%m-%d}, applied after",
        "",
        "Mean of |raw x pre-split scalar| pooled over every instrument-day from the split on "
        f"(target {OOS_TARGET:.0f}, tolerance +/-{OOS_TOLERANCE:.0f}); the capped column applies the +/-20 cap. "
        f"*Guarded*: with the stale-price guard (`pipeline/quality/stale.py`, {STALE_SESSIONS} unchanged sessions; "
        f"it flags {res.stale_share:.1%} of instrument-days): a flagged market has no forecast and its "
        "flat closes leave its vol; scalars are re-estimated on the guarded forecasts. The verdict uses "
        "the uncapped mean.",
        "",
        "| rule | pre-split scalar | full-sample scalar | mean abs after | capped | holds | largest instrument mean "
        "| guarded: scalar | mean abs after | holds | largest instrument mean |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rule, row in res.oos.iterrows():
        ok = _holds(row["mean_abs"])
        g = res.oos_guarded.loc[rule]
        ok_g = _holds(g["mean_abs"])
        lines.append(
            f"| {rule} | {row['scalar']:.3f} | {s[rule]:.3f} | {row['mean_abs']:.2f} | "
            f"{row['mean_abs_capped']:.2f} | {_ok(ok)} | {row['worst']} {row['worst_mean_abs']:.4g} | "
            f"{g['scalar']:.3f} | {g['mean_abs']:.2f} | {_ok(ok_g)} | {g['worst']} {g['worst_mean_abs']:.4g} |"
        )
    lines += [
        "",
        "## Out of sample with the guard: fixed split beside walk-forward",
        "",
        "Guarded forecasts (as above). *In sample*: the pooled mean |forecast| before the split with the "
        "scalar fitted on exactly those sessions, i.e. what the estimator gives by construction. *Fixed "
        f"split*: the pre-{OOS_SPLIT:%Y} scalar applied from the split on (the table above). *Walk-forward*: "
        "the expanding estimate made with the sessions up to d-1 applied at d, from the split on (how "
        "the pipeline re-estimates through time: every scalar is fitted strictly before it is used). "
        "*Capped*: after the +/-20 cap, the forecast that is combined and traded. *Median-based*: time "
        "mean of the cross-sectional median |forecast| after the split (fixed scalar), the quantity the "
        "scalar targets.",
        "",
        "| rule | in sample | fixed split | capped | walk-forward | capped | median-based | holds: fixed | "
        "walk-forward | fixed, capped | walk-forward, capped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def held(value: float) -> str:
        return _ok(_holds(value))

    for rule, g in res.oos_guarded.iterrows():
        lines.append(
            f"| {rule} | {g['in_sample_mean_abs']:.2f} | {g['mean_abs']:.2f} | {g['mean_abs_capped']:.2f} | "
            f"{g['wf_mean_abs']:.2f} | {g['wf_mean_abs_capped']:.2f} | {g['median_based']:.2f} | "
            f"{held(g['mean_abs'])} | {held(g['wf_mean_abs'])} | {held(g['mean_abs_capped'])} | "
            f"{held(g['wf_mean_abs_capped'])} |"
        )
    lines += [
        "",
        f"Carry by decade (guarded, one scalar: the pre-{OOS_SPLIT:%Y} estimate "
        f"{res.oos_guarded.loc[CARRY_RULE, 'scalar']:.2f}):",
        "",
        f"| period | instruments with carry (mean per session) | median-based | median-based, the "
        f"{res.carry_periods.index[0]} markets only | pooled mean |",
        "|---|---|---|---|---|",
    ]
    for period, row in res.carry_periods.iterrows():
        lines.append(
            f"| {period} | {row['instruments']:.0f} | {row['median_based']:.2f} | "
            f"{row['median_based_first']:.2f} | {row['mean_abs']:.2f} |"
        )
    lines += ["", *_split_section(res), "", *_decision_section(res)]
    lines += [
        "",
        "## IDM / FDM formula on known matrices (exact)",
        "",
        "`pipeline.portfolio.instrument_weights.idm` and `pipeline.signals.combine.fdm_from_correlation`, negative correlations "
        "floored at 0, cap 2.5 (carver.md §2.6, §3.3, §3.4).",
        "",
        "| case | expected | computed | abs error |",
        "|---|---|---|---|",
    ]
    for name, expected, got in res.idm:
        lines.append(f"| {name} | {expected:.6f} | {got:.6f} | {abs(got - expected):.1e} |")
    lines += ["", "## Reading the numbers", "", *_explanation(res), "", *FOLDERS_SECTION, ""]
    lines += [*chapter15_section(res.chapter15), "", *edollar_section(res.edollar), ""]
    lines += [*defaults_section(res.defaults), ""]
    return "\n".join(lines)


#: pysystemtrade's chapter-15 futures system as a configuration of the pipeline, run from the command line.
CH15_CONFIG = "examples/pysystemtrade_ch15.yaml"
#: pysystemtrade ``docs/backtesting.md``: Sharpe ratio of the chapter-15 system, and the issue's tolerance.
PST_CH15_SHARPE, CH15_TOLERANCE = 0.480, 0.08


def chapter15_backtest(config: str = CH15_CONFIG, lake_metrics: bool = False) -> dict | None:
    """Run ``trading-pipeline backtest --config examples/pysystemtrade_ch15.yaml`` and read its summary.

    The command runs from the project root (the example's ``source.path`` is relative to it) with a
    temporary lake, results folder and Dagster home. Returns None when the data folder named in the
    example does not exist; raises RuntimeError (with the command's last output) when the run fails
    (with ``lake_metrics``, only when it failed before the ``backtest`` asset stored its metrics: the
    values then come from the lake's ``backtest_metrics`` and ``note`` says why).
    Returns the ``performance`` values and ``basis`` of ``summary.json`` with the command and seconds.
    """
    import json
    import os
    import subprocess
    import tempfile

    import yaml

    folder = (ROOT / yaml.safe_load((ROOT / config).read_text())["source"]["path"]).resolve()
    if not folder.is_dir():
        return None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ch15-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "TRADING_PIPELINE_CONFIG"} | {"DAGSTER_HOME": tmp}
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backtest", "--config", config,
                               "--lake", f"{tmp}/lake", "--out", f"{tmp}/results"],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=1800)
        written = list(Path(tmp, "results").glob("*/summary.json")) if Path(tmp, "results").is_dir() else []
        if done.returncode != 0 and not (lake_metrics and Path(tmp, "lake", "backtest_metrics").exists()):
            raise RuntimeError(f"{config} backtest failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        if done.returncode != 0 or not written:  # the backtest asset stored its metrics before the report failed
            from pipeline.store.lake import Lake

            metrics = Lake(Path(tmp, "lake")).read_table("backtest_metrics").set_index("metric")["value"]
            return {"values": metrics.to_dict(), "basis": {"sample": "the whole history of the run's lake"},
                    "command": f"trading-pipeline backtest --config {config} --out DIR",
                    "seconds": time.perf_counter() - started,
                    "note": "the results folder was not written (the command failed after the backtest asset had "
                            "stored its metrics); the values are the lake's backtest_metrics"}
        summary = json.loads(written[0].read_text())
    return {"values": summary["performance"]["values"], "basis": summary["basis"],
            "command": f"trading-pipeline backtest --config {config} --out DIR",
            "seconds": time.perf_counter() - started}


def chapter15_section(run: dict | None) -> list[str]:
    """The chapter-15 section: pysystemtrade's published Sharpe beside the command-line backtest's."""
    lines = ["## Carver's chapter-15 system from configuration alone", ""]
    if run is None:
        return lines + [f"Not run: the data folder of `{CH15_CONFIG}` (`source.path`) is absent."]
    v = run["values"]
    holds = abs(v["sharpe"] - PST_CH15_SHARPE) <= CH15_TOLERANCE
    lines += [
        (f"`{run['command']}` ({run['seconds']:.0f} s): pysystemtrade's `systems/provided/futures_chapter15` "
         "(EDOLLAR, US10, EUROSTX, V2X, MXP, CORN with its instrument weights; ewmac16_64, ewmac32_128, ewmac64_256 "
         "and carry with its forecast weights and scalars; FDM 1.31, IDM 1.89, vol target 20%, capital 250,000; "
         "buffer 10% of the average position) on Carver's 2016 legacy files, through the daily job "
         "(carry in the `forecasts` asset from the multiple prices) and the `backtest` asset. "
         f"Sample {run['basis']['sample']}; {run['basis']['costs']}."),
        "",
        "| quantity | pysystemtrade | ours | tolerance | holds |",
        "|---|---|---|---|---|",
        (f"| Sharpe ratio, net of costs | {PST_CH15_SHARPE:.3f} (`docs/backtesting.md`) | {v['sharpe']:.3f} "
         f"| +/-{CH15_TOLERANCE:.2f} | {'yes' if holds else '**no**'} |"),
        f"| Sharpe ratio, gross | - | {v['gross_sharpe']:.3f} | - | - |",
        f"| annual vol (target 20%) | - | {v['annual_vol']:.1%} | - | - |",
        f"| CAGR | - | {v['cagr']:.1%} | - | - |",
        f"| max drawdown | - | {v['max_drawdown']:.1%} | - | - |",
        "",
        ("Differences from pysystemtrade that remain: prices and multiple prices are on the NYSE sessions of the "
         "partitions (a roll on a day that is not a session is left out of the carry smoothing; pst uses every "
         "business day); a multiple-prices row without a PRICE is dropped whole, where pst averages the roll of "
         "the day's rows; the vol is the pipeline's robust vol (pst's `robust_vol_calc`, span 35); costs are the "
         "legacy `costs_analysis.csv` cash costs. `tests/test_carver_system_config.py` runs the same command and "
         "checks the Sharpe ratio within the tolerance."),
    ]
    return lines


#: pysystemtrade's first example (docs/introduction.md): EWMAC 32/128 alone on EDOLLAR, 2016 files, no costs.
EDOLLAR_CONFIG = "examples/pysystemtrade_edollar_ewmac32.yaml"
#: pysystemtrade ``docs/introduction.md`` ``accountCurve(price, forecast=ewmac).stats()``: sharpe 0.5084;
#: the issue's tolerance.
PST_EDOLLAR_SHARPE, EDOLLAR_TOLERANCE = 0.508, 0.05


def edollar_section(run: dict | None) -> list[str]:
    """The EWMAC 32/128 on EDOLLAR row: pysystemtrade's introduction beside the command-line backtest."""
    lines = ["## EWMAC 32/128 alone on EDOLLAR", ""]
    if run is None:
        return lines + [f"Not run: the data folder of `{EDOLLAR_CONFIG}` (`source.path`) is absent."]
    v = run["values"]
    holds = abs(v["sharpe"] - PST_EDOLLAR_SHARPE) <= EDOLLAR_TOLERANCE
    return lines + [
        (f"`{run['command']}` ({run['seconds']:.0f} s): pysystemtrade's first example (`docs/introduction.md`, "
         "`accountCurve(price, forecast=ewmac)`): the raw EWMAC 32/128 forecast of EDOLLAR on the 2016 legacy "
         "files, traded without costs, cap, buffer or rounding (every such setting is written in the example). "
         f"Sample {run['basis']['sample']}."),
        "",
        "| quantity | pysystemtrade | ours | tolerance | holds |",
        "|---|---|---|---|---|",
        (f"| Sharpe ratio | {PST_EDOLLAR_SHARPE:.3f} (`docs/introduction.md`, 0.5084) | {v['sharpe']:.3f} "
         f"| +/-{EDOLLAR_TOLERANCE:.2f} | {'yes' if holds else '**no**'} |"),
        f"| annual vol | 8.28% (`ann_std`, percentage of pst's notional capital) | {v['annual_vol']:.1%} | - | - |",
        "",
        ("pysystemtrade's figure ends in May 2016 (the files of its introduction), ours with the 2016 files "
         "(November 2016). `tests/test_safe_defaults_real_data.py` runs the same command and checks the Sharpe "
         "ratio within the tolerance." + (f" Note: {run['note']}." if run.get("note") else "")),
    ]


#: Issue 19's out-of-sample verdict: the traded (capped) forecast with the walk-forward scalar, at the
#: split years 1995 to 2010; trend rules 10 +/- 1, carry 7 to 11 (its level drifts with rates after 2008).
DECISION_YEARS = (1995, 2000, 2005, 2010)
DECISION_TREND, DECISION_CARRY = (9.0, 11.0), (7.0, 11.0)


def _decision_holds(rule: str, value: float) -> bool:
    lo, hi = DECISION_CARRY if rule == CARRY_RULE else DECISION_TREND
    return lo <= value <= hi


def _decision_section(res: Results) -> list[str]:
    """The out-of-sample verdict as decided: walk-forward scalar, capped forecast, split years 1995 to 2010."""
    lines = [
        "## The out-of-sample decision",
        "",
        ("The out-of-sample level is judged on the traded forecast: capped at +/-20 (the forecast combined "
         "and traded) with the walk-forward scalar (re-estimated each session from the sessions before it, as the "
         "`forecast_scalars` asset does), pooled mean |forecast| from 1 January of each split year 1995 to 2010 to "
         "the end of the data, guarded forecasts (the stale guard is on by default). The trend rules (EWMAC, "
         "breakout) must hold 10 +/- 1; carry, whose level drifts with interest rates after 2008 (the decade table "
         "above), 7 to 11. The uncapped and fixed-split variants stay in the tables above as measurements, not "
         "verdicts. `tests/test_carver_fidelity.py` checks the same on the 40 liquid markets with its own targets."),
        "",
    ]
    years = [y for y in DECISION_YEARS if y in set(res.oos_splits.index.get_level_values("split"))]
    rules = list(dict.fromkeys(res.oos_splits.index.get_level_values("rule")))
    head = " | ".join(str(y) for y in years)
    lines += [f"| instruments | rule | target | {head} | holds |", "|---" * (len(years) + 4) + "|"]
    for label, frame in (("all", res.oos_splits), ("liquid 40", res.oos_splits_liquid)):
        for rule in rules:
            values = [frame.loc[(y, rule), "wf_mean_abs_capped"] for y in years]
            ok = all(_decision_holds(rule, v) for v in values)
            target = "7 - 11" if rule == CARRY_RULE else "9 - 11"
            cells = " | ".join(f"{v:.2f}" if _decision_holds(rule, v) else f"**{v:.2f}**" for v in values)
            lines.append(f"| {label} | {rule} | {target} | {cells} | {_ok(ok)} |")
    held = sum(all(_decision_holds(r, res.oos_splits.loc[(y, r), "wf_mean_abs_capped"]) for y in years) for r in rules)
    lines += ["", f"All instruments: {held} of {len(rules)} rules hold at every split year from 1995 to 2010."]
    return lines


def defaults_run(data: Path = DEFAULT_DATA, instruments: list[str] | None = None, results: Path | None = None,
                 seconds: float | None = None) -> dict | None:
    """Every future of the 2023 set (or ``instruments``) with the defaults: symbols and capital only.

    With ``results`` (a results folder of ``trading-pipeline backtest``) its files are read; otherwise the
    CSV folders and configuration are written (``scripts/carver_pipeline.py --pysystemtrade``) and the
    backtest is run in a temporary folder. Returns the summary's performance, the worst day (portfolio
    return, date and the instrument that lost most that day), the annual cost in % of capital, the traded
    and excluded instruments, the command and the seconds; None without the data.
    """
    import os
    import subprocess
    import tempfile

    from scripts.carver_pipeline import pysystemtrade_config, write_pysystemtrade_csv

    if results is None and not (data / "adjusted_prices_daily.parquet").is_file():
        return None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="defaults-") as tmp:
        if results is None:
            folder = write_pysystemtrade_csv(Path(tmp) / "pst", data, instruments)
            config = pysystemtrade_config(Path(tmp) / "config.yaml", folder, instruments or "all")
            env = {k: v for k, v in os.environ.items() if k != "TRADING_PIPELINE_CONFIG"} | {"DAGSTER_HOME": tmp}
            done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backtest", "--config", str(config),
                                   "--out", f"{tmp}/results"], cwd=ROOT, env=env, capture_output=True, text=True,
                                  check=False, timeout=7200)
            if done.returncode != 0:
                raise RuntimeError(f"defaults backtest failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            (results,) = Path(tmp, "results").iterdir()
            seconds = time.perf_counter() - started
        out = read_results(Path(results))
    out.update(seconds=seconds, command="python scripts/carver_pipeline.py OUT --pysystemtrade && "
               "trading-pipeline backtest --config OUT/config.yaml --out DIR")
    return out


def read_results(folder: Path) -> dict:
    """The figures of a results folder this document quotes: ``values`` (summary.json performance),
    ``basis``, ``worst_day`` (date, portfolio return as a fraction of capital, the instrument with the
    largest loss that day and its loss), ``annual_costs`` (costs a year as a fraction of capital),
    ``traded`` (instruments with a trade), ``instruments`` and ``excluded`` (summary.json records)."""
    import json

    summary = json.loads((folder / "summary.json").read_text())
    curve = pd.read_csv(folder / "equity_curve.csv", index_col="session", parse_dates=True)
    daily = pd.read_csv(folder / "daily_pnl.csv", parse_dates=["session"])
    worst = curve["returns"].idxmin()
    that_day = daily[daily["session"] == worst].set_index("instrument")["pnl_net"]
    traded = daily.groupby("instrument")["trade"].apply(lambda s: bool((s.abs() > 0).any())) if "trade" in daily \
        else daily.groupby("instrument")["holding"].apply(lambda s: bool((s.abs() > 0).any()))
    years = daily["session"].nunique() / 256.0
    base = float(summary["basis"]["capital"].split()[-1].replace(",", ""))  # "fixed 50,000,000"
    return {
        "values": summary["performance"]["values"], "basis": summary["basis"],
        "worst_day": {"date": str(worst.date()), "return": float(curve["returns"].min()),
                      "instrument": str(that_day.idxmin()), "instrument_pnl": float(that_day.min())},
        "annual_costs": float(summary["performance"]["values"]["annual_cost_drag"]),
        "traded": int(traded.sum()), "instruments": len(summary["data_range"]["instruments"]),
        "excluded": summary.get("excluded_instruments", []),
        "worst_days": {str(d.date()): float(r) for d, r in curve["returns"].nsmallest(3).items()},
        "max_instrument_cost": float(daily.groupby("instrument")["cost"].sum().max() / years / base),
        "max_trade_sessions": float(daily[daily["trade"] != 0].groupby("instrument").size().max() / years),
    }


def defaults_section(run: dict | None) -> list[str]:
    """Every future of the 2023 set with the defaults: the figures and the excluded instruments."""
    lines = ["## Every future of the 2023 set with the defaults", ""]
    if run is None:
        return lines + ["Not run: the pysystemtrade 2023 set is absent."]
    v, w = run["values"], run["worst_day"]
    reasons = pd.DataFrame(run["excluded"])
    never = reasons[reasons["share"] >= 1.0] if len(reasons) else reasons
    by_reason = reasons.groupby("reason")["instrument"].nunique().to_dict() if len(reasons) else {}
    seconds = f" ({run['seconds']:.0f} s)" if run.get("seconds") else ""
    lines += [
        (f"`{run['command']}`{seconds}: pysystemtrade's CSV folders written from the 2023 set, a configuration of "
         "`instruments: all` and `portfolio.capital: 50000000`, the defaults otherwise (besides the two quality "
         "settings every futures set on other calendars needs: a missing session carries the last close, a spike "
         "warns). The defaults that make it trade sensibly: the stale-price guard (5 unchanged closes: no new "
         "forecast, position held, flat closes out of the vol), the speed limit (ST ch. 12: a rule over 0.13 SR "
         "a year is dropped for that instrument), no trading of an instrument whose SR cost per trade is above "
         "0.01 (AFTS) or that has fewer than 256 prices, no instrument weight for the sessions an instrument is "
         "not traded, and `risk.max_position` applied as production applies it. "
         f"Sample {run['basis']['sample']}; {run['basis']['costs']}."),
        "",
        "| quantity | before (issue 19) | with the defaults | required | holds |",
        "|---|---|---|---|---|",
        f"| Sharpe ratio, net | -4.30 | {v['sharpe']:.2f} | - | - |",
        (f"| worst day, % of capital | -211% (ETHANOL) | {w['return']:.1%} ({w['date']}; largest loss "
         f"{w['instrument']}) | above -10% | {_ok(w['return'] > -0.10)} |"),
        (f"| costs, % of capital a year | 892% (whole run) | {run['annual_costs']:.2%} | below 2% "
         f"| {_ok(run['annual_costs'] < 0.02)} |"),
        f"| annual vol (target 25%) | - | {v['annual_vol']:.1%} | - | - |",
        f"| max drawdown | - | {v['max_drawdown']:.1%} | - | - |",
        f"| instruments traded / in the set | - | {run['traded']} / {run['instruments']} | - | - |",
        (f"| instruments left out at some session (short history / cost per trade / stale guard) | - | "
         f"{by_reason.get('short_history', 0)} / {by_reason.get('cost_per_trade', 0)} / "
         f"{by_reason.get('stale_guard', 0)} | - | - |"),
        "",
        (f"Instruments never traded in the sample (left out on every session with a price: {len(never)}), with "
         "the reason and the value at the last session (`summary.json`: `excluded_instruments`, and the report's "
         "table, list every (instrument, reason) with its sessions):"),
        "",
        "| instrument | reason | sessions | detail |",
        "|---|---|---|---|",
    ]
    for r in never.sort_values(["reason", "instrument"]).itertuples() if len(never) else []:
        lines.append(f"| {r.instrument} | {r.reason} | {r.sessions} | {r.detail} |")
    others = ", ".join(f"{r:.1%} ({d})" for d, r in list(run.get("worst_days", {}).items())[1:])
    lines += [
        "",
        "Reading the two misses:",
        "",
        (f"- **The worst day** ({w['return']:.1%}, {w['date']}, {w['instrument']}) is a data-quality hole over a "
         "real event. BRE's closes of 12 January to 25 May 1999 (the real's devaluation) are flagged `price_spike` "
         "against the vol of the peg; with `quality.spike_severity: WARN` a flagged bar stays out of the clean set "
         "until a person releases it, and in a backtest nobody does, so the position sized at the peg was held "
         "through months without a price and the whole move was booked on the first clean close. The next worst "
         f"days: {others}. The lever is in the quality stage (a flagged bar whose level persists is the market, "
         "not a bad print), not in sizing."),
        (f"- **Costs** ({run['annual_costs']:.2%} of capital a year) are spread thin: no instrument costs more than "
         f"{run['max_instrument_cost']:.2%} of capital a year, and no rule trades above the speed limit or instrument "
         "above the 0.01 SR ceiling per trade; they add up over the traded instruments, the busiest trading on up to "
         f"{run['max_trade_sessions']:.0f} sessions a year (the 10% buffer of a small position rarely holds). Their "
         "share of the gross P&L is in the sample line above, inside Carver's one third (ST ch. 12). Below 2% needs "
         "a wider buffer or fewer fast rules on this many markets, which these defaults do not change."),
    ]
    return lines


#: How the pipeline reads pysystemtrade's data folders (fixed text, written after the numbers).
FOLDERS_SECTION = [
    "## Reading pysystemtrade's data folders",
    "",
    ("`source: {kind: pysystemtrade, path: FOLDER}` reads a pysystemtrade data folder in each of its layouts "
    "(`pipeline/adapters/sources/pysystemtrade_folder.py`, layout found by `pipeline.config.pysystemtrade_folder`): "
    "today's CSV folders (`adjusted_prices_csv/X.csv`, `multiple_prices_csv/X.csv`, `fx_prices_csv/`, `csvconfig/`), "
    "the Parquet tables this document uses, and the 2016 CSVs (`X_price.csv`, `X_carrydata.csv`, `XXXUSDfx.csv`, "
    "`instrumentconfig.csv`, `costs_analysis.csv`). Bars are daily closes of the back-adjusted price (source "
    "`pysystemtrade:adjusted`) named after the instrument (`EDOLLAR`, never the file stem `EDOLLAR_price`); the same "
    "prices read to identical bars from the three layouts (`tests/test_pysystemtrade_source.py` writes them from these "
    "tables), and `multiple_prices(instrument)` serves the carry contracts. Instruments may be given by symbol alone "
    "(`instruments: [{symbol: US10}]` or `instruments: all`): point size, currency, asset class, `sec_type: FUT`, "
    "`back_adjusted: true` and costs (SpreadCost as slippage; PerBlock, Percentage, PerTrade as commission) come from "
    "the folder's `instrumentconfig.csv` and `spreadcosts.csv`; fields written in the YAML win, and "
    "`portfolio.fx_path` defaults to the folder's FX rates."),
    "",
    ("Prices are read on pysystemtrade's business-day grid (`read_adjusted_prices`, pst `resample(\"1B\").last()`): "
    "the last row of a day, a weekend row on the Friday before, a row for every business day, NaN where there is no "
    "price. An instrument's vol and forecasts are then the same read alone or with others, because the EWMAs count the "
    "sessions of the frame they are given: EDOLLAR's EWMAC 8/32 on 2015-12-11 (2016 files, robust vol) is 0.2045 "
    "alone and among the 38 futures, where on the files' own dates it was 0.1823 alone and 0.1920 among the 38 "
    "(`tests/test_signals_company.py`). The tables above are computed on that grid. A return across a missing "
    "session is one return for the whole move (`pipeline.signals.volatility.daily_returns`; pysystemtrade's `diff` "
    "on the grid leaves it out): no move is lost, and returns depend on the instrument's own prices only."),
]


def _explanation(res: Results) -> list[str]:
    s, sl = res.scalars, res.scalars_liquid
    level = {r: s[r] / p for r, p in PUBLISHED_EWMAC.items()}
    level_l = {r: sl[r] / p for r, p in PUBLISHED_EWMAC.items()}
    brk = {r: s[r] / p for r, p in PUBLISHED_BREAKOUT.items()}
    pub_rules = list(PUBLISHED_EWMAC)
    worst_ratio = max(
        abs(o / p - 1)
        for o, p in zip(successive_ratios(s, pub_rules), successive_ratios(PUBLISHED_EWMAC, pub_rules))
    )
    return [
        f"- **The shape matches; the level sits {min(level.values()) - 1:.0%} to {max(level.values()) - 1:.0%} "
        f"above** pysystemtrade's EWMAC estimates (ratios between successive speeds agree within "
        f"{worst_ratio:.1%}). Breakout scalars sit {min(brk.values()) - 1:.0%} to {max(brk.values()) - 1:.0%} "
        "above theirs as well, and breakout does not use vol at all, so the common gap is not a vol-unit "
        "error (that would be a factor of 16 or more): our raw forecasts are on average smaller than "
        "those of Carver's pool.",
        f"- **Instrument set** explains part of it: pooled over the 40 liquid markets only, the EWMAC "
        f"gap is {min(level_l.values()) - 1:.0%} to {max(level_l.values()) - 1:.0%}. The full set adds "
        "many sector indices and minor futures whose median |forecast| is smaller; pst pools, per rule, "
        "only the instruments that trade the rule (cost filters drop fast rules on expensive markets).",
        "- **Data vintage and estimator details** are the likely rest, not isolated here: the published "
        "values come from Carver's own database at the time of that config commit, not this 2023 "
        "snapshot; the scalar is 10 / (time mean of the cross-sectional *median* of |raw|), which "
        "depends on which markets exist when; pst forward-fills forecasts of instruments that stopped "
        "reporting and resamples to every business day (holiday rows of NaN), where we count a "
        "forecast only when the instrument has a price; pst backfills the first estimate (look-ahead; "
        "we do not). The AFTS code's scalars equal pst's to the digit although AFTS computes vol "
        "differently (% returns, span 32), so they are one estimate quoted twice, not two confirmations.",
        "- The vol estimate moves EWMAC levels by only about 2% (mixed-vol column).",
        "- The FDM of the EWMAC sets is the best-matched quantity: the AFTS values imply average "
        "correlations of 0.89 (n=2) down to 0.56 (n=6), and daily capped forecasts reproduce them.",
        "- Where the uncapped pooled mean misses on the full set without the guard, the last column of "
        "the first out-of-sample table names the cause: one market whose price goes stale (flat for "
        "months, e.g. HOUSE-US, ETHANOL in this snapshot), so its robust vol sinks towards the 1e-10 "
        "floor (the 5% quantile floor decays with it) and the raw forecast explodes. A data-quality "
        "finding, not a scalar error; the stale-price guard removes it, and the `forecast_scalars` asset "
        "now estimates on the guarded forecasts too (`estimate_guarded_scalars`), as the table does.",
        f"- **With the stale-price guard** ({STALE_SESSIONS} unchanged sessions) {_guard_summary(res)}",
        *_oos_reading(res),
    ]


def _oos_reading(res: Results) -> list[str]:
    """What the out-of-sample tables show, with their numbers."""
    g = res.oos_guarded
    ewmac = g.loc[EWMAC_RULES]
    fast, carry, periods = g.loc["ewmac2_8"], g.loc[CARRY_RULE], res.carry_periods

    def count(column: str) -> int:
        return int(g[column].map(_holds).sum())

    first, last = periods.iloc[0], periods.iloc[-1]
    return [
        "- **What the estimator promises.** The scalar is 10 / (time mean of the cross-sectional "
        "*median* |raw|), pst's estimator; the check is the pooled *mean* over instrument-days. The "
        "cross-section of |forecast| is right-skewed (some markets trend more cleanly, relative to "
        "their vol, than the median one), so even in sample, with the scalar fitted on exactly those "
        f"sessions, the pooled mean of the EWMAC rules is {ewmac['in_sample_mean_abs'].min():.2f} to "
        f"{ewmac['in_sample_mean_abs'].max():.2f} (column *in sample*) while the median-based level is "
        "10 by construction. A pooled mean 10-15% above 10 is the estimator working as designed, not a "
        "stale scalar; after the split every EWMAC pooled mean is below its in-sample value "
        f"({ewmac['mean_abs'].min():.2f} to {ewmac['mean_abs'].max():.2f}).",
        f"- **ewmac2_8** ({fast['mean_abs']:.2f} after the split, {fast['in_sample_mean_abs']:.2f} in sample) "
        "has the heaviest tails of the rules. Its median-based level after the split is "
        f"{fast['median_based']:.2f}, and after the +/-20 cap {fast['mean_abs_capped']:.2f} "
        f"(walk-forward {fast['wf_mean_abs_capped']:.2f}). The cap belongs to the rule's output in pst "
        "(`forecast_cap: 20`, applied before combination) and here (`combined_forecast` reads the "
        "`capped` column of `forecasts`), so the capped level is the forecast that is combined and "
        "traded: for ewmac2_8 we rely on it, and the uncapped miss stays visible as **no**.",
        "- **carry**: the level of carry itself moved. With one fixed scalar the median-based level "
        f"falls from {first['median_based']:.2f} ({periods.index[0]}) to {last['median_based']:.2f} "
        f"({periods.index[-1]}) while the markets with carry grow from {first['instruments']:.0f} to "
        f"{last['instruments']:.0f} per session. Mostly the markets themselves: over the "
        f"{periods.index[0]} markets alone it goes from {first['median_based_first']:.2f} to "
        f"{last['median_based_first']:.2f}; the later listings (among them equity indices and LME "
        "metals, the smallest carry per unit of vol after the split) pull the median lower still. A "
        "scalar fitted before the split cannot anticipate that (pre-split "
        f"{carry['scalar']:.2f}, full sample {res.scalars[CARRY_RULE]:.2f}); the "
        f"walk-forward estimate, which keeps learning, gives {carry['wf_mean_abs']:.2f} after the split. "
        "Our carry was checked against pst's `carry` rule: annualised roll (PRICE - CARRY over the "
        "contracts' year fraction, averaged per business day) / (daily price vol x 16), smoothed with "
        "`ewm(com=90)` (pst's positional `ewm(90)`, span 181, not span 90), scalar estimated on the "
        "smoothed carry, capped only after scaling. Capping hurts carry most "
        f"({carry['mean_abs']:.2f} -> {carry['mean_abs_capped']:.2f}): its pooled mean rests on a few "
        "markets with very large carry per unit of vol (largest after the split: "
        f"{carry['worst']} {carry['worst_mean_abs']:.0f}), and the cap cuts exactly those.",
        f"- **Verdicts, 13 rules** (guarded): fixed split {count('mean_abs')} hold, walk-forward "
        f"{count('wf_mean_abs')}; capped: fixed split {count('mean_abs_capped')}, walk-forward "
        f"{count('wf_mean_abs_capped')}. The walk-forward column is the one that matches how the "
        "pipeline runs (the `forecast_scalars` asset re-estimates each session from past data only); "
        "no split date or instrument was chosen to make a rule pass.",
    ]


#: The variants of the out-of-sample level, as columns of :func:`oos_mean_abs` / :func:`oos_by_split`.
SPLIT_VARIANTS = {
    "mean_abs": "fixed split",
    "mean_abs_capped": "fixed split, capped",
    "wf_mean_abs": "walk-forward",
    "wf_mean_abs_capped": "walk-forward, capped",
    "pooled_mean_target": "pooled-mean target",
}


def _cell(value: float) -> str:
    return f"{value:.2f}" if _holds(value) else f"**{value:.2f}**"


def _split_section(res: Results) -> list[str]:
    """The out-of-sample check repeated at every split year, with what it shows."""
    full, liquid = res.oos_splits, res.oos_splits_liquid
    years = list(dict.fromkeys(full.index.get_level_values("split")))
    rules = list(dict.fromkeys(full.index.get_level_values("rule")))
    head = "| " + " | ".join(str(y) for y in years) + " |"
    lines = [
        "## Out of sample at every split year tried",
        "",
        "The check above repeated with the split on 1 January of each year below (guarded forecasts; "
        "scalars fitted on the sessions before the split; pooled mean |forecast| from the split to the "
        "end of the data). These are all the years tried. Bold: outside 10 +/- 1.",
        "",
        "Fixed split, uncapped, all instruments:",
        "",
        "| rule " + head,
        "|---" * (len(years) + 1) + "|",
    ]
    for rule in rules:
        lines.append(f"| {rule} | " + " | ".join(_cell(full.loc[(y, rule), "mean_abs"]) for y in years) + " |")
    counts = [int(sum(_holds(full.loc[(y, r), "mean_abs"]) for r in rules)) for y in years]
    lines.append("| rules holding | " + " | ".join(f"{c} / {len(rules)}" for c in counts) + " |")
    lines += [
        "",
        "The two rules that miss, every variant, on all instruments and on the 40 liquid markets "
        "(`LIQUID_40`, the set the tests use, loaded on its own). *Pooled-mean target*: the level a "
        "scalar fitted to an in-sample pooled mean of exactly 10 would give after the split, "
        "10 x (pooled mean after / pooled mean before, one scalar); it measures how far the rule's "
        "own level moved across the split, whatever the estimator.",
        "",
        "| instruments | rule | variant " + head,
        "|---" * (len(years) + 3) + "|",
    ]
    for label, frame in (("all", full), ("liquid 40", liquid)):
        for rule in ("ewmac2_8", CARRY_RULE):
            for column, variant in SPLIT_VARIANTS.items():
                cells = " | ".join(_cell(frame.loc[(y, rule), column]) for y in years)
                lines.append(f"| {label} | {rule} | {variant} | {cells} |")
    return lines + ["", *_split_reading(res, years, rules)]


def _split_reading(res: Results, years: list[int], rules: list[str]) -> list[str]:
    """What the split-year tables show, with their numbers."""
    full, liquid = res.oos_splits, res.oos_splits_liquid
    first, last = years[0], years[-1]

    def span(frame: pd.DataFrame, rule: str, column: str) -> str:
        values = frame.xs(rule, level="rule")[column]
        return f"{values.min():.2f} to {values.max():.2f}"

    def holding(frame: pd.DataFrame, column: str, year: int | None = None) -> int:
        part = frame if year is None else frame.xs(year, level="split", drop_level=False)
        return int(part[column].map(_holds).sum())

    fixed = full["mean_abs"].unstack("split")
    fell = int((fixed[last] < fixed[first]).sum())
    drift = full.xs(CARRY_RULE, level="rule")["pooled_mean_target"] / OOS_TARGET
    target = full["pooled_mean_target"]
    target_missed = sorted(set(target[~target.map(_holds)].index.get_level_values("rule")), key=rules.index)
    everywhere = [
        f"{variant} on {label}"
        for column, variant in SPLIT_VARIANTS.items()
        for label, frame in (("all instruments", full), ("the liquid 40", liquid))
        if holding(frame, column) == len(frame)
    ]
    at_headline = [
        f"{variant} on {label}"
        for column, variant in SPLIT_VARIANTS.items()
        for label, frame in (("all instruments", full), ("the liquid 40", liquid))
        if holding(frame, column, OOS_SPLIT.year) == len(rules)
    ]
    liquid_carry = [str(y) for y in years if _holds(liquid.loc[(y, CARRY_RULE), "mean_abs"])]
    n_pairs = len(full)
    return [
        "Reading the split years:",
        "",
        "- **The later the split, the fewer rules hold**: "
        + ", ".join(f"{holding(full, 'mean_abs', y)} in {y}" for y in years)
        + f" of {len(rules)} (fixed split, uncapped). For {fell} of the {len(rules)} rules the level after "
        f"a {last} split is below the level after a {first} split (breakout320 "
        f"{fixed.loc['breakout320', first]:.2f} -> {fixed.loc['breakout320', last]:.2f}, ewmac64_256 "
        f"{fixed.loc['ewmac64_256', first]:.2f} -> {fixed.loc['ewmac64_256', last]:.2f}): the recent years "
        "give every rule smaller forecasts per unit of vol than the history its scalar was fitted on.",
        f"- **carry**, all instruments: fixed {span(full, CARRY_RULE, 'mean_abs')}, capped "
        f"{span(full, CARRY_RULE, 'mean_abs_capped')}, walk-forward {span(full, CARRY_RULE, 'wf_mean_abs')}, "
        f"pooled-mean target {span(full, CARRY_RULE, 'pooled_mean_target')}. The last is the plainest: with "
        f"one scalar, carry's pooled level after the split is {drift.min():.0%} to {drift.max():.0%} of its "
        "level before, so no scalar fitted before the split can land it within 10% of the level it was "
        "fitted to. Where carry holds uncapped, it is by cancellation: the median estimator leaves its "
        f"in-sample pooled mean at {span(full, CARRY_RULE, 'in_sample_mean_abs')} (carry's cross-section is "
        "the most skewed), and the fall after the split brings that back near 10.",
        f"- **ewmac2_8**, all instruments: fixed {span(full, 'ewmac2_8', 'mean_abs')}, capped "
        f"{span(full, 'ewmac2_8', 'mean_abs_capped')}, pooled-mean target "
        f"{span(full, 'ewmac2_8', 'pooled_mean_target')}. Its level barely moves with the split; it misses "
        "uncapped because the median estimator leaves its pooled mean above 10 even in sample "
        f"({span(full, 'ewmac2_8', 'in_sample_mean_abs')}).",
        f"- **Pooled-mean target**: {int(target.map(_holds).sum())} of {n_pairs} (rule, split) pairs hold; "
        "the misses: " + (", ".join(target_missed) if target_missed else "none") + ".",
        f"- **The 40 liquid markets at {OOS_SPLIT.year}**, which the test suite asserts, hold by little "
        f"(carry {liquid.loc[(OOS_SPLIT.year, CARRY_RULE), 'mean_abs']:.2f}, ewmac2_8 "
        f"{liquid.loc[(OOS_SPLIT.year, 'ewmac2_8'), 'mean_abs']:.2f}); on those markets carry holds at "
        + (", ".join(liquid_carry) if liquid_carry else "none")
        + f" of the {len(years)} split years.",
        "- **Variants in which all 13 rules hold at every split year**: "
        + ("; ".join(everywhere) if everywhere else "none")
        + f". **At the {OOS_SPLIT.year} split alone**: "
        + ("; ".join(at_headline) if at_headline else "none")
        + ". So the check \"pooled mean |forecast| 10 +/- 1 out of sample\", with the estimator the issue "
        "prescribes (pst's cross-sectional median), needs a decision on what is judged before it can "
        "pass: carry's level is not stationary over this data, every rule's level depends on the split "
        "year, and the median estimator does not target the pooled mean.",
    ]


def _guard_summary(res: Results) -> str:
    """One sentence on what the stale-price guard changes in the out-of-sample check."""
    def held(frame: pd.DataFrame) -> list[str]:
        return [r for r, row in frame.iterrows() if _holds(row["mean_abs"])]

    plain, guarded = held(res.oos), held(res.oos_guarded)
    missed = [r for r in res.oos_guarded.index if r not in guarded]
    text = (f"{len(guarded)} of {len(res.oos_guarded)} rules hold out of sample (without it: {len(plain)}). ")
    if missed:
        text += "Still outside +/-1 with the fixed split: " + ", ".join(
            f"{r} ({res.oos_guarded.loc[r, 'mean_abs']:.2f})" for r in missed) + "; see below."
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the pysystemtrade 2023 set")
    parser.add_argument("--instruments", choices=["all", "liquid40"], default="all")
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown here instead of stdout")
    parser.add_argument("--defaults-results", type=Path, default=None,
                        help="a results folder of the 2023 set run with the defaults (else it is run, several minutes)")
    parser.add_argument("--defaults-seconds", type=float, default=None, help="the runtime of that run, for the text")
    args = parser.parse_args(argv)
    if not (args.data / "adjusted_prices_daily.parquet").is_file():
        print(f"carver_fidelity: no data at {args.data}; pass --data FOLDER (pysystemtrade 2023 set). Nothing done.")
        return 0
    instruments = LIQUID_40 if args.instruments == "liquid40" else None
    res = compute(args.data, instruments)
    res.chapter15 = chapter15_backtest()
    res.edollar = chapter15_backtest(EDOLLAR_CONFIG, lake_metrics=True)
    res.defaults = defaults_run(args.data, results=args.defaults_results, seconds=args.defaults_seconds)
    command = "python scripts/carver_fidelity.py" + (" --instruments liquid40" if instruments else "")
    if args.write:
        command += f" --write {args.write}"
    if args.defaults_results:
        command += " --defaults-results DIR" + (f" --defaults-seconds {args.defaults_seconds:g}" if args.defaults_seconds else "")
    label = "40 liquid markets" if instruments else "all instruments"
    text = markdown(res, command, label)
    if args.write:
        args.write.write_text(text)
        print(f"wrote {args.write} ({res.seconds:.0f} s)")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
