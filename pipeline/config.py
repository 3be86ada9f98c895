"""The pipeline's one configuration file, validated by pydantic.

The file is YAML (``pipeline/data/default_config.yaml`` is the documented default that runs the
bundled sample). It is loaded once at the edge (the Dagster resource or the CLI) and passed down
as a :class:`PipelineConfig`; nothing below reads the environment except for secrets, which come
only from environment variables (never from the file).

Every default names its source: "ST" is *Systematic Trading* (Carver 2015), "AFTS" *Advanced
Futures Trading Strategies* (Carver 2022), "pst" pysystemtrade's ``sysdata/config/defaults.yaml``.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).parent / "data" / "default_config.yaml"
CONFIG_ENV_VAR = "TRADING_PIPELINE_CONFIG"
LAKE_ENV_VAR = "TRADING_PIPELINE_LAKE"

#: Forecast scalars for EWMAC (pysystemtrade estimates, ``rob_system/config.yaml``; 2/8 from the
#: AFTS code since pst has no estimate) and breakout (pst pooled estimates), see carver.md §3.
DEFAULT_FORECAST_SCALARS: dict[str, float] = {
    "ewmac2_8": 12.1,
    "ewmac4_16": 8.53,
    "ewmac8_32": 5.95,
    "ewmac16_64": 4.10,
    "ewmac32_128": 2.79,
    "ewmac64_256": 1.91,
    "breakout10": 0.603,
    "breakout20": 0.674,
    "breakout40": 0.704,
    "breakout80": 0.726,
    "breakout160": 0.739,
    "breakout320": 0.737,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CostModel(_Strict):
    """Cash costs of one trade, in the instrument's currency (pst ``account_costs.py``).

    cost = |n| * slippage * point_size
           + max(|n| * commission_per_unit, commission_min, commission_pct * |n| * price * point_size)
    """

    slippage: float = Field(0.0, ge=0, description="half-spread plus slippage, price points per unit")
    commission_per_unit: float = Field(0.0, ge=0, description="per share / contract")
    commission_min: float = Field(0.0, ge=0, description="minimum per trade")
    commission_pct: float = Field(0.0, ge=0, description="fraction of traded notional (0.0001 = 1 bp)")


_ContractId = Annotated[str, Field(pattern=r"^\d{6}(\d{2})?$")]


class FuturesRolls(_Strict):
    """Roll parameters of a futures instrument (pysystemtrade ``rollconfig.csv`` names, see
    :mod:`pipeline.futures.rolls`), exact dates where known, and the roll-state thresholds
    (:mod:`pipeline.futures.roll_states`, :mod:`pipeline.futures.expiry`)."""

    hold_roll_cycle: str = Field(pattern="^[FGHJKMNQUVXZ]+$", description="months held, e.g. HMUZ")
    priced_roll_cycle: str = Field(pattern="^[FGHJKMNQUVXZ]+$", description="months with prices")
    roll_offset_days: int = Field(description="calendar days from expiry to the roll (< 0: before)")
    carry_offset: Literal[-1, 1] = Field(-1, description="-1: carry is the priced contract before the held one")
    expiry_offset: int = Field(description="approximate expiry: day 1 of the contract month + this many days")
    expiries: dict[_ContractId, dt.date] = Field(
        default_factory=dict, description="exact expiry (last trading day) by contract YYYYMM"
    )
    close_outs: dict[_ContractId, dt.date] = Field(
        default_factory=dict, description="exact close-out date (first notice / first position day) by contract YYYYMM"
    )
    force_sessions: int = Field(10, ge=1, description="Force the roll this many sessions before the close-out")
    outright_after: int = Field(3, ge=1, description="sessions of an unfilled Force spread before Force_Outright")
    expiry_guard_sessions: int = Field(5, ge=0, description="block and alert a contract held this close to close-out")

    @model_validator(mode="after")
    def _hold_within_priced(self) -> FuturesRolls:
        extra = sorted(set(self.hold_roll_cycle) - set(self.priced_roll_cycle))
        if extra:
            raise ValueError(f"hold_roll_cycle months {''.join(extra)} are not in priced_roll_cycle")
        return self


class Instrument(_Strict):
    """One tradable instrument of the universe."""

    symbol: str
    sec_type: Literal["STK", "ETF", "IND", "CASH", "FUT"] = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    point_size: float = Field(1.0, gt=0, description="currency per price point per unit (multiplier)")
    asset_class: str = "equity"
    calendar: str = Field("XNYS", description="exchange_calendars code of the listing exchange")
    back_adjusted: bool = Field(False, description="back-adjusted futures may have prices <= 0")
    long_only: bool = Field(False, description="forecasts floored at 0: never short (pst forecast_floor)")
    costs: CostModel = CostModel()
    rolls_per_year: float = Field(
        0.0, ge=0, description="futures rolls a year; each costs two trades of holding cost (pst, carver.md §2.10)"
    )
    missing_bar_policy: Literal["block", "carry", "omit"] | None = Field(
        None,
        description="a session with no bar for this instrument: block the run, carry the last close forward "
        "(flagged stale) or leave the instrument out that session; None = quality.missing_bar_policy",
    )
    settlement: Literal["physical", "cash"] | None = Field(
        None,
        description="futures: physical (out before first notice / first position day, IB closes out) or cash "
        "(held to the last trading day); None = not a futures contract with a close-out",
    )
    rolls: FuturesRolls | None = Field(None, description="futures: roll parameters and roll-state thresholds")
    rate_differential: float | str | None = Field(
        None,
        description="spot FX carry: the pair's annual interest-rate differential, base minus quote currency, as a "
        "decimal (0.015 = 1.5% a year), or the path of a CSV of it through time (DATETIME,differential); the "
        "rules.carry variations then forecast this pair (pipeline/signals/carry.py: fx_carry); None = no FX carry",
    )

    @model_validator(mode="after")
    def _rate_differential_is_fx(self) -> Instrument:
        if self.rate_differential is not None and self.sec_type != "CASH" and self.asset_class != "fx":
            raise ValueError(f"{self.symbol}: rate_differential is the carry of a spot FX pair; give it to an "
                             "instrument with sec_type CASH or asset_class fx")
        return self


class CarryVariation(_Strict):
    """One variation of Carver's carry rule (pst ``systems/provided/rules/carry.py: carry``)."""

    smooth_days: float = Field(
        90.0, gt=0,
        description="pst smooth_days: the raw carry is smoothed with pandas ewm(smooth_days), i.e. com=smooth_days "
        "(90: the decay of span 181)",
    )


class RulesConfig(_Strict):
    """Trading rule variations and their forecast scalars (carver.md §2.2-2.5)."""

    ewmac: list[tuple[int, int]] = Field(
        default_factory=lambda: [(2, 8), (4, 16), (8, 32), (16, 64)],
        description="(fast, slow) EWMA spans in sessions; ST uses slow = 4 x fast",
    )
    breakout: list[int] = Field(
        default_factory=lambda: [10, 20, 40, 80, 160, 320], description="lookbacks in sessions"
    )
    carry: dict[str, CarryVariation] = Field(
        default_factory=dict,
        description="carry variations by name (pst names: carry, carry10, ...) with their parameters, e.g. "
        "{carry: {smooth_days: 90}}; computed for every instrument whose source has multiple prices (a "
        "pysystemtrade source); give each a forecast scalar (ST: 30)",
    )
    forecast_scalars: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FORECAST_SCALARS))
    forecast_cap: float = Field(20.0, gt=0, description="ST ch. 7: forecasts are capped at +/-20")
    scalars: Literal["fixed", "estimate"] = Field(
        "fixed",
        description="fixed: forecast_scalars; estimate: pooled expanding estimates (pst), with the "
        "fixed value until min_scalar_periods sessions exist (no backfill, so no look-ahead)",
    )
    min_scalar_periods: int = Field(500, ge=20, description="sessions before an estimated scalar is used")

    @field_validator("ewmac")
    @classmethod
    def _fast_below_slow(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for fast, slow in v:
            if not 0 < fast < slow:
                raise ValueError(f"ewmac variation ({fast}, {slow}): need 0 < fast < slow")
        return v

    @field_validator("carry")
    @classmethod
    def _carry_names(cls, v: dict[str, CarryVariation]) -> dict[str, CarryVariation]:
        bad = [name for name in v if not name.startswith("carry")]
        if bad:
            raise ValueError(f"carry variations {bad}: names must start with 'carry' (pst: carry, carry10, ...)")
        return v

    @property
    def rule_names(self) -> list[str]:
        """Names of the rule variations, e.g. ``ewmac8_32``, ``breakout40``, ``carry``."""
        return [f"ewmac{f}_{s}" for f, s in self.ewmac] + [f"breakout{n}" for n in self.breakout] + list(self.carry)

    @model_validator(mode="after")
    def _every_rule_has_a_scalar(self) -> RulesConfig:
        missing = [r for r in self.rule_names if r not in self.forecast_scalars]
        if missing:
            raise ValueError(f"no forecast scalar for rule variations {missing} (rules.forecast_scalars; carry: 30 "
                             "in ST and pst's chapter-15 system)")
        return self


class CombinationConfig(_Strict):
    """Forecast combination (carver.md §2.6)."""

    forecast_weights: dict[str, float] | dict[str, dict[str, float]] | None = Field(
        None, description="weight per rule variation, for every instrument ({ewmac16_64: 0.5, carry: 0.5}), or per "
        "instrument ({CORN: {ewmac16_64: 0.5, carry: 0.5}, US10: {...}}: pst's per-instrument form; every instrument "
        "of the universe listed); None = equal weights"
    )
    fdm: float | Literal["estimate"] = Field(
        "estimate",
        description="a fixed forecast diversification multiplier, or 'estimate' from the pooled "
        "correlation of forecasts (expanding window, floored at 0, capped at fdm_cap)",
    )
    fdm_cap: float = Field(2.5, ge=1.0, description="pst dm_max")
    forecast_weights_method: Literal["fixed", "equal", "handcraft", "bootstrap"] = Field(
        "fixed",
        description="fixed: forecast_weights (null = equal); equal; handcraft: correlation clusters "
        "(rule families until weights_min_sessions); bootstrap: long-only max-Sharpe weights averaged "
        "over block-bootstrap draws of the rules' returns net of SR costs; both re-estimated at each "
        "year end on an expanding window (pst forecast_weight_estimate)",
    )
    weights_min_sessions: int = Field(
        512, ge=20, description="sessions of forecasts before estimated weights replace the fallback"
    )
    bootstrap_draws: int = Field(100, ge=1, description="bootstrap resamples per estimate")
    bootstrap_block: int = Field(64, ge=1, description="block length in sessions of the bootstrap")
    bootstrap_seed: int = Field(0, description="random seed, so an estimate is reproducible")
    forecast_weight_ewma_span: int | None = Field(
        125,
        ge=1,
        description="pst forecast_weight_ewma_span: estimated forecast weights are smoothed through time "
        "with an EWMA of this span in sessions and re-normalised; None = change in one step",
    )
    apply_speed_limit: bool = Field(
        True,
        description="exclude, per instrument, a rule whose annual SR cost exceeds speed_limit "
        "(its forecast weight set to 0, the rest renormalised); on by default: ST ch. 12 excludes every rule "
        "costing more than 0.13 SR units a year",
    )
    speed_limit: float = Field(0.13, gt=0, description="annual SR cost ceiling per rule (ST ch. 12)")
    cost_window: int = Field(256, ge=20, description="sessions of price and vol averaged for SR costs")
    sr_cost_trade_size: Literal["average_position", "one_unit"] = Field(
        "average_position",
        description="trade the SR cost per trade is priced on: average_position (Carver, ST ch. 12: one "
        "average position of an equally weighted instrument at portfolio.capital and vol_target, so a "
        "minimum commission is spread over a realistic trade) or one_unit (one share / contract)",
    )
    max_sr_cost_per_trade: float | None = Field(
        0.01, gt=0,
        description="an instrument whose SR cost of one trade (sr_cost_trade_size, means over cost_window) is "
        "above this is not traded that session (combined forecast 0, position closed): AFTS (selecting instruments) "
        "leaves out markets costing more than 0.01 SR units per trade; None = off",
    )
    min_history_sessions: int | None = Field(
        256, ge=1,
        description="an instrument with fewer prices than this is not traded yet (combined forecast 0): one "
        "year (256 sessions, Carver's year, the default cost_window over which the SR cost per trade is "
        "averaged); None = off",
    )

    @property
    def needs_prices(self) -> bool:
        """Whether the combination needs closes and vol: for SR costs (the speed limit, the cost
        ceiling per trade, estimated weights) or the history count of ``min_history_sessions``."""
        return (self.apply_speed_limit or self.forecast_weights_method in ("handcraft", "bootstrap")
                or self.max_sr_cost_per_trade is not None or self.min_history_sessions is not None)


    @property
    def per_instrument_weights(self) -> bool:
        """Whether ``forecast_weights`` is pst's per-instrument form ({instrument: {rule: weight}})."""
        return bool(self.forecast_weights) and all(isinstance(v, dict) for v in self.forecast_weights.values())

class KellyConfig(_Strict):
    """Kelly instrument weights (``instrument_weights_method: kelly``; :mod:`pipeline.portfolio.optimisers`).

    ``f = fraction x Σ⁻¹μ`` (joint) or ``fraction x μ_i / σ_i²`` (per instrument) on the annualised moments of
    each window's vol-normalised returns, capped, then normalised to shares of the risk budget (``Σ|f| = 1``):
    the vol target and the IDM still set the total risk. Thorp (2006), "The Kelly criterion in blackjack,
    sports betting and the stock market"; ST ch. 9 (half Kelly).
    """

    fraction: float = Field(
        ..., gt=0, le=1.0, description="Kelly multiplier, required: 1 = full Kelly, 0.5 = half Kelly (Carver's "
        "advice, ST ch. 9)",
    )
    long_only: bool = Field(
        ..., description="required: true keeps every fraction >= 0 (the box-constrained optimum); false lets "
        "a fraction go negative, which in this system trades against the instrument's forecast",
    )
    joint: bool = Field(True, description="true: Σ⁻¹μ with the window's correlations; false: μ_i/σ_i² each")
    max_instrument_leverage: float | None = Field(
        None, gt=0, description="cap on |f_i| (annual vol held in one instrument, 1.0 = 100%); None = no cap",
    )
    max_gross_leverage: float | None = Field(
        None, gt=0, description="cap on Σ|f_i|, applied by scaling every fraction down; None = no cap",
    )


class MeanVarianceConfig(_Strict):
    """Mean-variance instrument weights through skfolio's ``MeanRisk`` (``instrument_weights_method:
    mean_variance``, and the optimisation step of ``black_litterman``). Markowitz (1952)."""

    objective: Literal["max_sharpe", "max_utility", "min_variance"] = Field(
        ..., description="required: max_sharpe (μ'w / sqrt(w'Σw)), max_utility (μ'w - risk_aversion x w'Σw) or "
        "min_variance (w'Σw)",
    )
    budget: float = Field(..., gt=0, description="required: Σ w_i, the instrument weights' sum (1 = the whole risk budget)")
    min_weight: float = Field(..., ge=-1.0, description="required: lower bound of each weight (0 = long-only)")
    max_weight: float = Field(..., gt=0, description="required: upper bound of each weight")
    risk_aversion: float = Field(1.0, gt=0, description="λ of max_utility (annualised moments); ignored otherwise")

    @model_validator(mode="after")
    def _bounds_hold_the_budget(self) -> MeanVarianceConfig:
        if self.min_weight > self.max_weight:
            raise ValueError(f"mean_variance: min_weight {self.min_weight} is above max_weight {self.max_weight}")
        return self


class BlackLittermanConfig(_Strict):
    """Black-Litterman expected returns (skfolio ``BlackLitterman``) fed to the mean-variance step
    (``instrument_weights_method: black_litterman``; the objective and constraints are ``mean_variance``'s).
    Black & Litterman (1992); He & Litterman (1999), "The intuition behind Black-Litterman model portfolios"."""

    views: list[str] = Field(
        ..., description="required (may be empty): views on annualised expected returns of positions at 100% "
        "annual vol (i.e. Sharpe ratios), e.g. 'SP500 - US10 == 0.02' or 'KO == 0.3'; a view naming an instrument "
        "without enough history at an estimate is left out of that estimate",
    )
    view_confidences: list[float] | None = Field(
        None, description="Idzorek confidences in [0, 1], one per view; None = Ω = diag(τ PΣP') (He & Litterman)",
    )
    tau: float = Field(0.05, gt=0, description="τ, the uncertainty of the prior (skfolio's and He-Litterman's 0.05)")
    risk_aversion: float = Field(
        2.5, gt=0, description="δ of the equilibrium prior π = δ Σ w_ref (He & Litterman's 2.5)",
    )
    reference_weights: Literal["erc", "equal"] = Field(
        "erc", description="w_ref of the prior: the window's ERC weights (risk parity as the equilibrium) or 1/n",
    )

    @model_validator(mode="after")
    def _one_confidence_per_view(self) -> BlackLittermanConfig:
        if self.view_confidences is not None and len(self.view_confidences) != len(self.views):
            raise ValueError(f"black_litterman: {len(self.view_confidences)} view_confidences for "
                             f"{len(self.views)} views; give one per view or none")
        return self


class OptimiserConfig(_Strict):
    """Settings of the optimiser methods of ``portfolio.instrument_weights_method`` (docs/strategies.md,
    "Portfolio optimisers"); each is needed only by its method."""

    kelly: KellyConfig | None = None
    mean_variance: MeanVarianceConfig | None = None
    black_litterman: BlackLittermanConfig | None = None
    frontier_points: int = Field(
        30, ge=3, description="points of the efficient frontier drawn in report.html (last estimation window)",
    )


class PortfolioConfig(_Strict):
    """Sizing, instrument weights and buffering (carver.md §2.7-2.9)."""

    @model_validator(mode="before")
    @classmethod
    def _capital_from_account(cls, data: Any) -> Any:
        """``capital: account`` is short for ``capital_source: account`` (capital keeps its default)."""
        if isinstance(data, dict) and data.get("capital") == "account":
            data = {k: v for k, v in data.items() if k != "capital"} | {"capital_source": "account"}
        return data

    capital: float = Field(
        1_000_000.0, gt=0,
        description="notional trading capital, base currency; with capital_source account, the capital of the "
        "sessions before the first one recorded from the account. `capital: account` in the file is short for "
        "capital_source: account with this default",
    )
    capital_source: Literal["config", "account"] = Field(
        "config",
        description="config: size with `capital`; account: with the broker's NetLiquidation (IB, base currency; "
        "the paper broker: capital plus its P&L) times capital_fraction, read by each daily run for its session "
        "and recorded in the ledger's capital table",
    )
    capital_fraction: float = Field(1.0, gt=0, le=1.0, description="share of the account's value traded")
    max_capital_change: float | None = Field(
        0.2, gt=0,
        description="a capital read from the account more than this fraction away from the last recorded one "
        "halts trading (kill switch HALTED, alert) and the session is sized with the last recorded capital "
        "(reliability.md: a broken account value must not resize the book); None = no check",
    )
    base_currency: str = "USD"
    fx_path: str | None = Field(
        None,
        description="folder (or file) of pysystemtrade FX rates XXXUSD (DATETIME,PRICE); needed when an "
        "instrument's currency is not base_currency",
    )
    vol_target: float = Field(0.25, gt=0, le=1.0, description="annualised, as a fraction (0.25 = 25%)")
    idm: float | Literal["estimate"] = Field(
        "estimate",
        description="pst instrument_div_multiplier: a fixed instrument diversification multiplier (>= 1), or "
        "'estimate': 1/sqrt(w'Hw) of the weights in force and the correlation of vol-normalised returns at each "
        "month end (pst use_instrument_div_mult_estimates), capped at idm_cap",
    )
    idm_cap: float = Field(2.5, ge=1.0, description="pst dm_max for the IDM")
    weights_lookback_years: float = Field(
        5.0, gt=0, description="history used for the ERC covariance at each month end"
    )
    weights_min_sessions: int = Field(
        126, ge=20, description="sessions of history an instrument needs before it gets weight"
    )
    max_weight_concentration: float | None = Field(
        20.0,
        gt=1.0,
        description="an estimated (erc, handcraft) instrument weight above this multiple of the equal share "
        "1/n fails the blocking check weights_not_concentrated (ERROR alert, no orders) until a person "
        "releases it (trading-pipeline release ESTIMATED_AT INSTRUMENT weight_concentration --reason ...); "
        "a weight that large is the mark of a broken vol estimate, not of diversification (the bundled "
        "sample's ERC weights reach 6.0x at most, 1986-2022; on pysystemtrade's 2023 futures set with the "
        "defaults the largest is V2X at 12.1x of 1/195, a real diversifier, where the stale HOUSE-US series "
        "reached 86.8x before untraded markets lost their weight); None = off",
    )
    instrument_weights_method: Literal["erc", "equal", "fixed", "handcraft", "kelly", "mean_variance",
                                       "black_litterman"] = Field(
        "erc",
        description="erc: equal risk contribution; equal: 1/n; fixed: instrument_weights re-normalised over "
        "the instruments with data; handcraft: Carver's handcrafting on the correlation of returns; kelly, "
        "mean_variance, black_litterman: the optimisers configured under `optimiser`. The IDM "
        "is computed from the chosen weights",
    )
    optimiser: OptimiserConfig = Field(
        default_factory=OptimiserConfig,
        description="settings of the kelly, mean_variance and black_litterman methods (black_litterman also "
        "needs mean_variance: its objective and constraints)",
    )
    instrument_weights: dict[str, float] | None = Field(
        None, description="fixed instrument weights (any scale, >= 0) for instrument_weights_method: fixed"
    )
    buffer: float = Field(0.10, ge=0, lt=1, description="pst buffer_size: the half-width of the no-trade zone")
    buffer_method: Literal["forecast", "position"] = Field(
        "forecast",
        description="pst buffer_method: forecast = buffer x the average position (|vol scalar x weight x IDM|, "
        "pst's default, AFTS ch. 8); position = buffer x |optimal position| (ST ch. 11). Either way a position "
        "outside the zone trades to its nearest edge (pst buffer_trade_to_edge: True)",
    )
    round_positions: bool = Field(True, description="whole shares / contracts")

    @model_validator(mode="after")
    def _optimiser_configured(self) -> PortfolioConfig:
        """An optimiser method needs its settings (and black_litterman the mean_variance step's)."""
        needs = {"kelly": ["kelly"], "mean_variance": ["mean_variance"],
                 "black_litterman": ["black_litterman", "mean_variance"]}.get(self.instrument_weights_method, [])
        missing = [n for n in needs if getattr(self.optimiser, n) is None]
        if missing:
            raise ValueError(f"instrument_weights_method {self.instrument_weights_method!r} needs "
                             f"{', '.join('portfolio.optimiser.' + n for n in missing)} (docs/strategies.md)")
        return self

    @field_validator("idm")
    @classmethod
    def _idm_at_least_one(cls, v: float | str) -> float | str:
        if v != "estimate" and not v >= 1.0:
            raise ValueError(f"idm {v!r}: a fixed instrument diversification multiplier must be >= 1 (pst "
                             "instrument_div_multiplier), or 'estimate'")
        return v


class QualityConfig(_Strict):
    """Data-quality rules for clean_bars (carver.md §2.11, reliability.md §4)."""

    max_price_spike: float = Field(8.0, gt=0, description="pst: spike if |change| > 8 vol units")
    spike_vol_span: int = Field(500, gt=1, description="EWMA span of |daily change| for spikes")
    spike_regime_sessions: int | None = Field(
        5, ge=1,
        description="after this many sessions in a row with a flagged (or quarantined) spike, the next bar far "
        "outside the reference starts a new regime: accepted (WARN spike_regime) and the reference restarts "
        "from it (a de-pegged currency keeps moving; pipeline/quality/rules.py: spike_flags); None = never",
    )
    spike_severity: Literal["ERROR", "WARN"] = Field(
        "ERROR",
        description="ERROR: a spike is quarantined and blocks the run until released (pysystemtrade, "
        "futures); WARN: flagged, alerted and held out of the clean set (so out of vol) and the instrument not "
        "traded that session, without blocking the others, until released (single stocks gap on earnings). "
        "Moves of x8 or /8 on positive series are quarantined (impossible_move) whatever this says",
    )
    stale_sessions: int = Field(10, ge=2, description="WARN if the close is unchanged this long")
    missing_bar_policy: Literal["block", "carry", "omit"] = Field(
        "block",
        description="a listed instrument with no bar on a session of the run: block (bars_complete fails, as "
        "before), carry (the last close is carried forward, flagged stale) or omit (left out that session); "
        "per instrument: instruments[].missing_bar_policy",
    )
    series_ended_after: int = Field(
        10,
        ge=1,
        description="an instrument with no bar for more than this many sessions up to the run's last session "
        "(while the source has bars for others) is reported as ended and left out, never blocking",
    )


class StaleGuardConfig(_Strict):
    """Stale-price guard of the signal stage (``pipeline/quality/stale.py``)."""

    sessions: int | None = Field(
        5,
        ge=1,
        description="an instrument whose close has not changed for this many sessions gets no new "
        "forecast (position held) and its unchanged closes leave its vol; None = off. On by default at 5: "
        "a week of identical closes is a feed that stopped, not a market (0.3% of the instrument-days of "
        "pysystemtrade's 2023 futures set; docs/carver_fidelity.md)",
    )


class RegimeConfig(_Strict):
    """The ML regime model (scikit-learn)."""

    horizon: int = Field(21, ge=1, description="sessions ahead the regime label looks")
    retrain_every: int = Field(252, ge=21, description="walk-forward refit interval, sessions")
    min_train: int = Field(756, ge=100, description="sessions before the first fit")
    use_as_risk_scale: bool = Field(False, description="scale target positions by the regime")
    high_vol_scale: float = Field(
        0.5, gt=0, le=1, description="position scale when P(high-vol regime) = 1"
    )
    require_oos_evidence: bool = Field(
        True,
        description="apply the risk scale only while the walk-forward evidence so far shows a higher "
        "out-of-sample Sharpe than the simple rule (bootstrap interval above 0)",
    )
    evidence_ci: float = Field(0.90, gt=0, lt=1, description="coverage of the Sharpe-difference interval")
    min_oos_sessions: int = Field(252, ge=21, description="out-of-sample sessions before the evidence can count")
    pinned_version: str | None = Field(
        None, description="model registry version to use for the latest session; None = latest approved"
    )


class VolForecastConfig(_Strict):
    """Next-month realised vol forecasts (scikit-learn), judged against the sizing vol."""

    horizon: int = Field(21, ge=2, description="sessions of the realised-vol target")
    retrain_every: int = Field(252, ge=21, description="walk-forward refit interval, sessions")
    min_train: int = Field(756, ge=100, description="sessions before the first fit")
    train_stride: int = Field(10, ge=1, description="train on every k-th session (targets overlap)")
    margin: float = Field(0.05, ge=0, description="relative out-of-sample QLIKE gain required to size with a model")
    use_for_sizing: bool = Field(False, description="size with the winning model's forecast (only if it wins)")


class RiskLimits(_Strict):
    """Pre-trade gate limits (reliability.md §1). Denials are recorded with their reason."""

    max_order_quantity: float = Field(100_000, gt=0, description="units per order")
    max_order_quantity_by_instrument: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="units per order for the named instruments, instead of max_order_quantity (a share, a "
        "futures contract and a unit of currency are different sizes; RTS 6 Art. 15 maximum order volume)",
    )
    max_order_notional: float = Field(500_000, gt=0, description="base currency per order")
    max_position: float = Field(200_000, gt=0, description="absolute units per instrument")
    price_collar: float = Field(0.10, gt=0, description="max |limit/reference - 1|")
    max_orders_per_window: int = Field(
        100, ge=1, description="order-rate throttle: orders sent within order_window_seconds (nautilus 100/1 s)"
    )
    order_window_seconds: float = Field(1.0, gt=0, description="window of the order-rate throttle, seconds")
    max_trades_per_session: int | None = Field(
        None, ge=1,
        description="orders sent for one session at most (RTS 6 Art. 15(3) repeated executions; pysystemtrade "
        "trade limits); None = no limit",
    )
    max_daily_loss: float | None = Field(
        None, gt=0, description="circuit breaker: a daily P&L below -max_daily_loss (base currency) "
        "sets HALTED; None = off",
    )

    def order_quantity_limit(self, instrument: str) -> float:
        """Units one order of ``instrument`` may have: its ``max_order_quantity_by_instrument``
        entry, else ``max_order_quantity``."""
        return self.max_order_quantity_by_instrument.get(instrument, self.max_order_quantity)


class BacktestConfig(_Strict):
    """How the backtest trades the target positions (:func:`pipeline.research.backtest.simulate`).

    The defaults keep the original simulation: market orders filled at the next session's close,
    shorts allowed at no borrow cost, no limits beyond the production sizing.
    """

    fill: Literal["next_close", "next_open"] = Field(
        "next_close", description="a target decided at the close of d trades at d+1's close, or its open where opens exist"
    )
    order_type: Literal["market", "limit"] = Field(
        "market", description="limit: a buy fills only if the session's low reaches the limit, a sell if its high does"
    )
    limit_offset: float = Field(
        0.01, ge=0, lt=1, description="limit orders: this fraction better than the decision close (0.01 = 1%)"
    )
    allow_short: bool = Field(True, description="portfolio-wide switch; False = long-only (per instrument: long_only)")
    borrow_rate: float = Field(0.0, ge=0, description="annual fraction of short notional, accrued per calendar day (ACT/365)")
    max_gross_exposure: float | None = Field(None, gt=0, description="sum |notional| / capital; None = no limit")
    max_net_exposure: float | None = Field(None, gt=0, description="|sum notional| / capital; None = no limit")
    pre_trade_gate: bool = Field(
        False, description="deny simulated orders that break the risk: limits, as production does; with "
        "risk.max_daily_loss, a session losing more halts the orders of the next session (circuit breaker)",
    )
    capital_method: Literal["fixed", "full", "half"] = Field(
        "fixed",
        description="fixed: returns on the same capital every session (Carver); full: capital compounds with "
        "the P&L and positions scale with it; half: losses cut the capital, gains restore it up to the "
        "starting capital only (pysystemtrade syscore/capital.py)",
    )
    results_dir: str = Field(
        "results/backtests",
        description="where backfills write results folders; relative = beside the lake folder "
        "(the working directory for the default data_lake); the CLI's --out is relative to the working directory",
    )
    name: str | None = Field(None, description="name of the results folders; None = broker.strategy")
    results_on_daily_runs: bool = Field(
        False, description="also write a results folder on every daily run (backfills and the CLI always write one)"
    )


class IBConnection(_Strict):
    """How to reach TWS / IB Gateway for bar data (no secrets: the account is not one).

    Defaults: IB Gateway paper port 4002 on the local host (IB docs: Gateway 4001 live / 4002
    paper, TWS 7496 / 7497).
    """

    host: str = "127.0.0.1"
    port: int = Field(4002, ge=1, le=65535)
    client_id: int = Field(
        101, ge=1, description="unique per live connection; 0 is avoided (it binds manual TWS orders)"
    )
    timeout: float = Field(30.0, gt=0, description="seconds for connect and for each request")
    account: str | None = Field(None, description="managed account to check for; None = any")
    pacing_retries: int = Field(3, ge=1, description="tries of a request refused for pacing")
    pacing_backoff: float = Field(
        10.0, ge=0, description="seconds before the first retry after a pacing violation (doubles)"
    )


#: IB's default API ports: IB Gateway 4002 / TWS 7497 for paper, 4001 / 7496 for live.
PAPER_PORTS = (4002, 7497)
LIVE_PORTS = (4001, 7496)


class BrokerConfig(_Strict):
    """Where orders go and how (the order path's safety settings; README "Connecting to
    Interactive Brokers").

    ``execution`` None means the broker's safe default: ``paper`` for the simulated paper broker
    (its fills are simulated anyway), ``dry_run`` for IB (intents and checks, nothing sent).
    """

    mode: Literal["paper", "ib"] = Field("paper", description="paper: simulated fills; ib: TWS / IB Gateway")
    strategy: str = Field("carver", description="first field of every orderRef")
    execution: Literal["dry_run", "paper", "live"] | None = Field(
        None, description="dry_run: intents and checks only; paper: a paper account; live: real money"
    )
    ib: IBConnection = Field(
        default_factory=lambda: IBConnection(client_id=201),
        description="the trading connection (its own client id, apart from the data steps')",
    )
    order_type: Literal["MKT", "LMT"] = Field("MKT", description="LMT: limit at limit_offset from the reference")
    limit_offset: float = Field(
        0.001, ge=0, lt=0.5, description="LMT: fraction of the reference price a limit may pay (buy above, sell below)"
    )
    time_in_force: Literal["DAY", "GTC", "OPG"] = Field("DAY", description="IB tif of every order")
    live_enabled: bool = Field(False, description="must be true for execution: live")
    live_accounts: list[str] = Field(default_factory=list, description="accounts live orders may go to")
    paper_ports: list[int] = Field(default_factory=lambda: list(PAPER_PORTS), description="ports allowed in paper")
    live_ports: list[int] = Field(default_factory=lambda: list(LIVE_PORTS), description="ports allowed in live")
    order_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for IB to acknowledge an order (then: reconcile, never resend)"
    )
    fill_wait: float = Field(
        2.0, ge=0, description="seconds to wait for a market order's fills after it is acknowledged"
    )
    market_fallback_after: float | None = Field(
        None, gt=0,
        description="LMT: seconds to wait for a limit order's fills before cancelling its unfilled residual "
        "and sending that as a market order (its own intent and orderRef); null = no fallback",
    )
    what_if: bool = Field(
        False,
        description="dry_run: record IB's what-if margin and commission preview with each accepted intent of "
        "the latest session (the API must not be read-only: the dry-run connection is then read-write, and "
        "only what-if orders, which never trade, are sent)",
    )

    @property
    def effective_execution(self) -> str:
        """``execution``, or the broker's default when unset (paper: ``paper``, ib: ``dry_run``)."""
        if self.execution is not None:
            return self.execution
        return "dry_run" if self.mode == "ib" else "paper"

    @model_validator(mode="after")
    def _live_needs_the_flag(self) -> "BrokerConfig":
        if self.execution == "live":
            if self.mode != "ib":
                raise ValueError("execution: live needs mode: ib (the paper broker only simulates)")
            if not self.live_enabled or not self.live_accounts:
                raise ValueError("execution: live needs live_enabled: true and a non-empty live_accounts allow-list")
        return self


class SourceConfig(_Strict):
    kind: Literal["sample", "files", "ib", "pysystemtrade"] = "sample"
    path: str | None = Field(
        None, description="folder of CSV/Parquet bars for kind 'files'; a pysystemtrade data folder (legacy "
        "X_price.csv files, adjusted_prices_csv/ and multiple_prices_csv/, or the Parquet tables) for kind "
        "'pysystemtrade', whose configuration fills instruments given by symbol alone",
    )
    ib: IBConnection = IBConnection()


# -- pysystemtrade data folders: where their files are, and instruments given by symbol alone -------------

#: Files of each layout of a pysystemtrade data folder (:func:`pysystemtrade_folder`).
PST_ADJUSTED_CSV = "adjusted_prices_csv"
PST_MULTIPLE_CSV = "multiple_prices_csv"
PST_FX_CSV = "fx_prices_csv"
PST_ADJUSTED_PARQUET = "adjusted_prices_daily.parquet"
PST_MULTIPLE_PARQUET = "multiple_prices_daily.parquet"
PST_CONFIG_FOLDER = "csvconfig"
#: Instrument fields taken from pysystemtrade's configuration (the YAML's own fields win).
PST_FIELDS = ("sec_type", "currency", "point_size", "asset_class", "back_adjusted", "costs")


@dataclass(frozen=True)
class PysystemtradeFolder:
    """Where the files of a pysystemtrade data folder are (see :func:`pysystemtrade_folder`).

    Attributes
    ----------
    root : Path
        The folder (absolute).
    layout : str
        ``"csv"`` (today's ``adjusted_prices_csv/X.csv``, ``multiple_prices_csv/X.csv``),
        ``"parquet"`` (long tables ``adjusted_prices_daily.parquet``, ``multiple_prices_daily.parquet``)
        or ``"legacy"`` (the 2016 ``X_price.csv``, ``X_carrydata.csv`` in ``root``).
    adjusted : Path
        The adjusted prices: a folder of ``X.csv``, the Parquet table, or ``root`` (``X_price.csv``).
    multiple, fx, instrument_config, costs : Path or None
        Multiple prices (folder or table), FX rates (a folder of ``XXXUSD.csv`` / ``XXXUSDfx.csv``),
        ``instrumentconfig.csv`` and the cost file (``spreadcosts.csv``, legacy ``costs_analysis.csv``);
        None where the folder has none.
    """

    root: Path
    layout: str
    adjusted: Path
    multiple: Path | None
    fx: Path | None
    instrument_config: Path | None
    costs: Path | None

    def symbols(self) -> list[str]:
        """Sorted names of the instruments with adjusted prices: ``EDOLLAR`` for ``EDOLLAR_price.csv``
        (legacy) or ``adjusted_prices_csv/EDOLLAR.csv``, the ``instrument`` column of the Parquet table.

        Raises
        ------
        ValueError
            The Parquet table cannot be read or has no ``instrument`` column (file named).
        """
        if self.layout == "legacy":
            return sorted(f.name[: -len("_price.csv")] for f in self.adjusted.glob("*_price.csv"))
        if self.layout == "csv":
            return sorted(f.stem for f in self.adjusted.glob("*.csv"))
        import pyarrow.compute as pc  # only for this layout
        import pyarrow.parquet as pq

        try:
            column = pq.read_table(self.adjusted, columns=["instrument"]).column("instrument")
        except Exception as exc:  # any reader failure: name the file
            raise ValueError(f"pysystemtrade: cannot read the instrument column of {self.adjusted}: {exc}") from exc
        return sorted(str(v) for v in pc.unique(column).to_pylist() if v is not None)


def pysystemtrade_folder(path: str | Path) -> PysystemtradeFolder:
    """Detect the layout of a pysystemtrade data folder and locate its files.

    Parameters
    ----------
    path : str or Path
        The folder (relative paths resolve against the working directory). Looked for, in this
        order: ``adjusted_prices_csv/`` (layout ``csv``), ``adjusted_prices_daily.parquet``
        (``parquet``), ``*_price.csv`` (``legacy``). Configuration: ``csvconfig/instrumentconfig.csv``
        with ``csvconfig/spreadcosts.csv``, else ``instrumentconfig.csv`` with ``costs_analysis.csv`` (or
        ``spreadcosts.csv``) in the folder itself. FX: ``fx_prices_csv/``, else the folder when it
        holds ``XXXUSDfx.csv`` files.

    Returns
    -------
    PysystemtradeFolder

    Raises
    ------
    ValueError
        The folder does not exist or holds none of the three layouts (the message says what was
        looked for).

    Notes
    -----
    Layouts: pysystemtrade ``data/futures/adjusted_prices_csv``, ``multiple_prices_csv``,
    ``fx_prices_csv``, ``csvconfig`` (``sysdata/csv/``); the legacy 2016 files of its first release.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"pysystemtrade: data folder {root} does not exist; set source.path to a pysystemtrade "
                         "data folder")

    def found(name: str, is_dir: bool = False) -> Path | None:
        candidate = root / name
        return candidate if (candidate.is_dir() if is_dir else candidate.is_file()) else None

    if (adjusted := found(PST_ADJUSTED_CSV, is_dir=True)) is not None:
        layout, multiple = "csv", found(PST_MULTIPLE_CSV, is_dir=True)
    elif (adjusted := found(PST_ADJUSTED_PARQUET)) is not None:
        layout, multiple = "parquet", found(PST_MULTIPLE_PARQUET)
    elif any(root.glob("*_price.csv")):
        layout, adjusted = "legacy", root
        multiple = root if any(root.glob("*_carrydata.csv")) else None
    else:
        raise ValueError(
            f"pysystemtrade: {root} holds no pysystemtrade prices (looked for {PST_ADJUSTED_CSV}/, "
            f"{PST_ADJUSTED_PARQUET} and X_price.csv files)"
        )
    config = root / PST_CONFIG_FOLDER if (root / PST_CONFIG_FOLDER / "instrumentconfig.csv").is_file() else root
    costs = next((config / n for n in ("spreadcosts.csv", "costs_analysis.csv") if (config / n).is_file()), None)
    fx = found(PST_FX_CSV, is_dir=True) or (root if any(root.glob("*USDfx.csv")) else None)
    instrument_config = config / "instrumentconfig.csv"
    return PysystemtradeFolder(
        root=root, layout=layout, adjusted=adjusted, multiple=multiple, fx=fx,
        instrument_config=instrument_config if instrument_config.is_file() else None, costs=costs,
    )


def _pst_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [{str(k).strip(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in csv.DictReader(fh)]


def _pst_number(row: dict[str, str], column: str, path: Path, line: int, default: float | None = 0.0) -> float:
    text = row.get(column, "")
    if text == "" and default is not None:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"pysystemtrade: {path}, line {line}: {column} {text!r} of {row.get('Instrument')} is not a number"
        ) from None


def pysystemtrade_instrument_fields(folder: PysystemtradeFolder) -> dict[str, dict[str, Any]]:
    """Instrument fields of every instrument in the folder's configuration, by symbol.

    Parameters
    ----------
    folder : PysystemtradeFolder

    Returns
    -------
    dict symbol -> dict of :class:`Instrument` fields
        ``sec_type`` "FUT", ``back_adjusted`` True, ``point_size`` = Pointsize (currency per price
        point per contract), ``currency``, ``asset_class`` (pysystemtrade's names: Bond, Equity,
        Ags, ...) and ``costs``: ``slippage`` = SpreadCost (``spreadcosts.csv``) or Slippage (legacy
        ``costs_analysis.csv``) in price points, ``commission_per_unit`` = PerBlock,
        ``commission_pct`` = Percentage, ``commission_min`` = PerTrade (the cost file's value where it
        gives one, else ``instrumentconfig.csv``'s; blank or absent = 0). The same mapping as
        :func:`pipeline.adapters.pysystemtrade.to_instruments`.

    Raises
    ------
    ValueError
        No ``instrumentconfig.csv``; a missing Instrument / Pointsize / Currency / AssetClass column;
        a non-numeric value (file and line named).

    Notes
    -----
    Source: pysystemtrade ``data/futures/csvconfig/instrumentconfig.csv``, ``spreadcosts.csv``; cost
    model carver.md §2.10. Read with the csv module here because the configuration is validated
    below every other layer (:mod:`pipeline.adapters.pysystemtrade` reads the same files into frames).
    """
    path = folder.instrument_config
    if path is None:
        raise ValueError(f"pysystemtrade: {folder.root} has no instrumentconfig.csv (looked in "
                         f"{PST_CONFIG_FOLDER}/ and the folder itself)")
    rows = _pst_rows(path)
    missing = [c for c in ("Instrument", "Pointsize", "Currency", "AssetClass") if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"pysystemtrade: {path} has no column {', '.join(missing)}")
    costs: dict[str, tuple[dict[str, str], int]] = {}
    if folder.costs is not None:
        costs = {r.get("Instrument", ""): (r, i + 2) for i, r in enumerate(_pst_rows(folder.costs))}
    out: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        symbol, line = row["Instrument"], i + 2
        extra, extra_line = costs.get(symbol, ({}, 0))

        def cost(*names: str, row=row, line=line, extra=extra, extra_line=extra_line) -> float:
            for name in names:  # the cost file wins where it has a value
                if extra.get(name, "") != "":
                    return _pst_number(extra, name, folder.costs, extra_line)
            return _pst_number(row, names[-1], path, line)

        out[symbol] = {
            "sec_type": "FUT", "back_adjusted": True, "currency": row["Currency"], "asset_class": row["AssetClass"],
            "point_size": _pst_number(row, "Pointsize", path, line, default=None),
            "costs": {"slippage": cost("SpreadCost", "Slippage"), "commission_per_unit": cost("PerBlock"),
                      "commission_pct": cost("Percentage"), "commission_min": cost("PerTrade")},
        }
    return out


def resolve_instruments(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill the instruments of a raw configuration from its pysystemtrade source folder.

    With ``source: {kind: pysystemtrade, path: FOLDER}``, ``instruments`` may list symbols alone
    (``[{symbol: EDOLLAR}, US10]``) or be ``all`` (every instrument with adjusted prices in the
    folder). Each is completed from the folder's configuration (:func:`pysystemtrade_instrument_fields`):
    fields given in the file win (``costs`` merged key by key). ``portfolio.fx_path`` defaults to the
    folder's FX rates. Other sources: returned unchanged (``instruments: all`` is an error).

    Parameters
    ----------
    raw : dict
        The parsed YAML mapping (not modified).

    Returns
    -------
    dict
        A new mapping with ``instruments`` a list of complete instrument mappings.

    Raises
    ------
    ValueError
        One line: the folder cannot be read, a symbol the folder has no prices for (lists near
        names), a symbol without a row in ``instrumentconfig.csv``, ``all`` with another source.
    """
    source = raw.get("source") or {}
    entries = raw.get("instruments")
    if not isinstance(source, dict) or source.get("kind") != "pysystemtrade":
        if entries == "all":
            raise ValueError("instruments: all needs source.kind: pysystemtrade (the folder lists the instruments)")
        return raw
    if not source.get("path"):
        raise ValueError("source.kind is 'pysystemtrade' but source.path is not set; set it to a pysystemtrade "
                         "data folder")
    folder = pysystemtrade_folder(source["path"])
    held = folder.symbols()
    fields = pysystemtrade_instrument_fields(folder)
    if entries == "all":
        entries = [{"symbol": s} for s in held]
    elif not isinstance(entries, list):
        return raw  # pydantic reports the type
    entries = [{"symbol": e} if isinstance(e, str) else e for e in entries]
    symbols = [str(e.get("symbol")) for e in entries if isinstance(e, dict)]
    unknown = [s for s in symbols if s not in set(held)]
    if unknown:
        raise ValueError(f"instruments {unknown} have no prices in the pysystemtrade folder {folder.root} "
                         f"({folder.layout} layout, {len(held)} instruments: {', '.join(held[:12])}"
                         f"{', ...' if len(held) > 12 else ''})")
    unconfigured = [s for s in symbols if s not in fields]
    if unconfigured:
        where = folder.instrument_config or folder.root
        raise ValueError(f"instruments {unconfigured} have no row in {where}: give their point_size, currency "
                         "and asset_class in the configuration or add the rows")
    resolved = []
    for entry in entries:
        if not isinstance(entry, dict):
            resolved.append(entry)
            continue
        base = fields[str(entry["symbol"])]
        given_costs = entry.get("costs") if isinstance(entry.get("costs"), dict) else {}
        resolved.append(base | entry | {"costs": base["costs"] | given_costs})
    out = dict(raw) | {"instruments": resolved}
    portfolio = raw.get("portfolio") or {}
    if isinstance(portfolio, dict) and portfolio.get("fx_path") is None and folder.fx is not None:
        out["portfolio"] = dict(portfolio) | {"fx_path": str(folder.fx)}
    return out


class VolConfig(_Strict):
    """The volatility estimator of the signal stage (pst ``volatility_calculation``; carver.md §2.1).

    ``robust``: pst's legacy ``robust_vol_calc`` (EWMA std with a rolling 5% quantile floor over
    500 sessions), this project's default; ``ewma``: the same EWMA std without the floor
    (pst ``simple_ewvol_calc``); ``mixed``: pst's current default ``mixed_vol_calc`` (the fast
    EWMA std blended with its own slow EWMA). ``pipeline/signals/volatility.py: estimate_vol``.
    """

    estimator: Literal["robust", "ewma", "mixed"] = Field(
        "robust", description="robust (pst robust_vol_calc, with the vol floor), ewma (no floor) or mixed "
        "(pst mixed_vol_calc, its current default)")
    span: int = Field(35, ge=2, description="EWMA span of daily price changes, sessions (pst days: 35)")
    min_periods: int = Field(10, ge=1, description="price changes before the first vol (pst min_periods: 10)")
    floor_min_quantile: float = Field(0.05, ge=0, le=1, description="robust: quantile of past vols used as the "
                                      "floor (pst vol_floor_min_quantile 0.05)")
    floor_days: int = Field(500, ge=2, description="robust: window of the floor, sessions (pst vol_floor_days 500)")
    floor_min_periods: int = Field(100, ge=1, description="robust: vols before the floor applies (pst 100)")
    slow_vol_years: float = Field(10.0, gt=0, description="mixed: span of the slow vol's EWMA in years of 256 "
                                  "sessions (pst defaults.yaml 10; Carver's own config 20)")
    proportion_of_slow_vol: float = Field(0.3, ge=0, le=1, description="mixed: weight of the slow vol (pst "
                                          "defaults.yaml 0.3; Carver's own config 0.35)")

    @model_validator(mode="after")
    def _floor_window(self) -> VolConfig:
        if self.floor_days < self.floor_min_periods:
            raise ValueError(f"vol.floor_days {self.floor_days} is shorter than vol.floor_min_periods "
                             f"{self.floor_min_periods}")
        return self


class VolBoundsConfig(_Strict):
    """Bounds on the vol the signal stage passes on (``pipeline/signals/volatility.py: bounded_vol``):
    an estimate far outside its anchors is broken data, not a market."""

    floor_vs_class: float | None = Field(
        0.1, gt=0, lt=1,
        description="a vol below this fraction of its asset class's median vol that session (or of its own "
        "long-run vol when the class has fewer than 3 instruments) is raised to it: a flat, stale series "
        "cannot size a huge position; None = off",
    )
    ceiling_vs_long_run: float | None = Field(
        10.0, gt=1,
        description="a vol above this multiple of the larger of its own long-run vol and its class's median "
        "is refused: no vol that session, so the instrument keeps its position and leaves the weight "
        "estimate; None = off",
    )
    long_run_sessions: int = Field(2560, ge=256, description="window of the long-run median vol (10 years)")


class PipelineConfig(_Strict):
    """The whole configuration; see ``pipeline/data/default_config.yaml`` for documentation."""

    lake_root: str = Field("data_lake", description="Parquet lake + warehouse.duckdb; relative to cwd")
    state_root: str | None = Field(None, description="local folder of warehouse.duckdb (order ledger, kill "
                                   "switch, alerts), the order-run locks and the model registry; None: lake_root "
                                   "(required when lake_root is an object-store URL)")
    calendar: str = Field("XNYS", description="exchange calendar of the daily partitions")
    history_start: str = Field("1990-01-02", description="first session of the partitions")
    source: SourceConfig = SourceConfig()
    instruments: list[Instrument]
    rules: RulesConfig = RulesConfig()
    combination: CombinationConfig = CombinationConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    quality: QualityConfig = QualityConfig()
    stale_guard: StaleGuardConfig = StaleGuardConfig()
    vol: VolConfig = VolConfig()
    vol_bounds: VolBoundsConfig = VolBoundsConfig()
    regime: RegimeConfig = RegimeConfig()
    vol_forecast: VolForecastConfig = VolForecastConfig()
    risk: RiskLimits = RiskLimits()
    broker: BrokerConfig = BrokerConfig()
    backtest: BacktestConfig = BacktestConfig()
    strategy: dict[str, Any] | None = Field(
        None,
        description="None (the default): Carver's forecast-to-position system. {kind: stop_target, ...}: the "
        "stop-and-target strategy kind, validated where it runs by pipeline.strategies.config.strategy_config "
        "(kept a mapping here: this module is below every layer); docs/strategies.md",
    )

    @field_validator("instruments")
    @classmethod
    def _unique_symbols(cls, v: list[Instrument]) -> list[Instrument]:
        seen: set[str] = set()
        dupes = {i.symbol for i in v if i.symbol in seen or seen.add(i.symbol)}
        if dupes:
            raise ValueError(f"instrument symbols listed twice: {sorted(dupes)}")
        if not v:
            raise ValueError("the universe is empty: list at least one instrument")
        return v

    @model_validator(mode="after")
    def _forecast_weights_per_instrument(self) -> PipelineConfig:
        if self.combination.per_instrument_weights:
            given, symbols = set(self.combination.forecast_weights), {i.symbol for i in self.instruments}
            if given != symbols:
                raise ValueError(
                    "combination.forecast_weights per instrument must list every instrument of the universe and no "
                    f"other: missing {sorted(symbols - given)}, not in the universe {sorted(given - symbols)}")
        return self

    @model_validator(mode="after")
    def _pysystemtrade_instruments_resolved(self) -> PipelineConfig:
        if self.source.kind == "pysystemtrade":
            bare = [i.symbol for i in self.instruments if i.model_fields_set <= {"symbol"}]
            if bare:
                raise ValueError(f"instruments {bare} are given by symbol alone: load the file with load_config "
                                 "(or pass the mapping through resolve_instruments) to fill them from source.path")
        return self

    @model_validator(mode="after")
    def _order_limits_name_listed_instruments(self) -> PipelineConfig:
        unknown = sorted(set(self.risk.max_order_quantity_by_instrument) - set(self.symbols))
        if unknown:
            raise ValueError(f"risk.max_order_quantity_by_instrument names instruments not in the universe: {unknown}")
        return self

    @property
    def symbols(self) -> list[str]:
        return [i.symbol for i in self.instruments]

    def instrument(self, symbol: str) -> Instrument:
        for i in self.instruments:
            if i.symbol == symbol:
                return i
        raise KeyError(f"instrument {symbol!r} is not in the configured universe")

    @property
    def lake_path(self) -> Path:
        return Path(os.environ.get(LAKE_ENV_VAR) or self.lake_root).resolve()


class ConfigError(ValueError):
    """The configuration file is missing or invalid; the message names the file and the field."""


def config_file(path: str | Path | None = None) -> Path:
    """The configuration file :func:`load_config` reads: ``path``; else ``$TRADING_PIPELINE_CONFIG``;
    else the bundled default."""
    return Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def read_config_file(path: str | Path) -> Any:
    """The YAML content of the configuration file ``path`` (``{}`` for an empty file).

    Raises:
        ConfigError: the file does not exist or is not YAML (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Load and validate the configuration.

    Resolution order: ``path``; else ``$TRADING_PIPELINE_CONFIG``; else the bundled default.
    ``$TRADING_PIPELINE_LAKE`` overrides ``lake_root``. With a ``pysystemtrade`` source,
    instruments given by symbol alone (or ``instruments: all``) are first filled from the
    folder's configuration (:func:`resolve_instruments`).

    Raises:
        ConfigError: the file does not exist, is not YAML, or fails validation (the message
            names the file and each failing field).
    """
    path = config_file(path)
    raw = read_config_file(path)
    try:
        raw = resolve_instruments(raw) if isinstance(raw, dict) else raw
    except (ValueError, OSError) as exc:  # one line, the file named
        raise ConfigError(f"config file {path}: {exc}") from exc
    try:
        return PipelineConfig.model_validate(raw)
    except Exception as exc:  # pydantic.ValidationError, re-raised with the file named
        raise ConfigError(f"config file {path} is invalid:\n{exc}") from exc
