"""Configuration of the stop-and-target strategy kind (pydantic), read from ``PipelineConfig.strategy``.

The pipeline's file keeps Carver's forecast-to-position system as the default: ``strategy`` absent
(None) runs it. ``strategy: {kind: stop_target, ...}`` selects this kind; the mapping is validated
here by :func:`strategy_config` (the kernel's :mod:`pipeline.config` sits below every layer and so
holds it as a plain mapping). Fractions are fractions (``0.02`` = 2 %), as in the rest of the file.

Example (``examples/mcl_ema_atr.yaml``)::

    strategy:
      kind: stop_target
      name: mcl_ema_atr
      order_ref_prefix: mclema
      entry: {kind: ema_crossover, fast: 20, slow: 50}
      sizing: {kind: fixed_fraction, risk_fraction: 0.02}
      exits:
        stop: {kind: atr, value: 2.0}
      atr_period: 14
      max_contracts: 5
      daily_loss_limit: 0.05
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

__all__ = [
    "BreakoutEntry",
    "EmaCrossoverEntry",
    "ExitRules",
    "ExternalEntry",
    "FixedFractionSizing",
    "KellySizing",
    "StopExit",
    "StopTargetStrategy",
    "StrategyConfigError",
    "TakeProfitExit",
    "TrailingExit",
    "VolTargetSizing",
    "strategy_config",
]


class StrategyConfigError(ValueError):
    """The ``strategy`` section is invalid or names something not built; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- entry rules -------------------------------------------------------------------------------------------


class EmaCrossoverEntry(_Strict):
    """Long while the fast EMA of the close is above the slow one, short while below."""

    kind: Literal["ema_crossover"]
    fast: int = Field(20, ge=1, description="span of the fast EMA, sessions")
    slow: int = Field(50, ge=2, description="span of the slow EMA, sessions")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> EmaCrossoverEntry:
        if not self.fast < self.slow:
            raise ValueError(f"ema_crossover: fast {self.fast} must be below slow {self.slow}")
        return self


class BreakoutEntry(_Strict):
    """Donchian channel breakout on closes: long from a new ``lookback``-session high close, short
    from a new low, the state kept in between."""

    kind: Literal["breakout"]
    lookback: int = Field(20, ge=2, description="channel length, sessions")


class ExternalEntry(_Strict):
    """An entry signal fed from outside (a forecast table). Only the shape is defined: running it
    raises :class:`StrategyConfigError` until the feed is built."""

    kind: Literal["external"]
    path: str = Field(description="CSV or Parquet file with columns session, instrument and the forecast column")
    column: str = Field("forecast", description="the forecast column")
    threshold: float = Field(0.0, ge=0, description="long above +threshold, short below -threshold, else no entry")


Entry = Annotated[EmaCrossoverEntry | BreakoutEntry | ExternalEntry, Field(discriminator="kind")]


# -- sizing rules ------------------------------------------------------------------------------------------


class FixedFractionSizing(_Strict):
    """Contracts = floor(equity x risk_fraction / (stop distance x point size)) (Van Tharp's 'percent risk')."""

    kind: Literal["fixed_fraction"]
    risk_fraction: float = Field(0.02, gt=0, le=0.2, description="equity at risk to the initial stop (0.02 = 2%)")


class VolTargetSizing(_Strict):
    """Contracts = floor(equity x annual_target / (daily price vol x 16 x point size)) (Carver ST ch. 9,
    one instrument, forecast at its cap)."""

    kind: Literal["vol_target"]
    annual_target: float = Field(0.20, gt=0, le=1.0, description="annualised vol target, fraction of equity")
    vol_span: int = Field(35, ge=2, description="EWMA span of the daily price vol (pipeline.signals.volatility)")


class KellySizing(_Strict):
    """Leverage = min(fraction x mu / sigma^2, cap) of the strategy's past trade returns per unit of
    notional; contracts = floor(leverage x equity / (|price| x point size)) (Kelly 1956, Thorp 2006)."""

    kind: Literal["kelly"]
    fraction: float = Field(0.5, gt=0, le=1.0, description="fractional Kelly multiplier (0.5 = half Kelly)")
    cap: float = Field(2.0, gt=0, description="largest leverage (notional / equity) Kelly may ask for")
    min_trades: int = Field(20, ge=2, description="closed trades (all instruments) before the estimate is used")
    warmup_contracts: int = Field(1, ge=0, description="contracts per entry until min_trades trades have closed")


Sizing = Annotated[FixedFractionSizing | VolTargetSizing | KellySizing, Field(discriminator="kind")]


# -- exits -------------------------------------------------------------------------------------------------


class StopExit(_Strict):
    """A fixed stop at the entry price minus (long) / plus (short) a distance decided at the signal's close."""

    kind: Literal["percent", "amount", "atr"]
    value: float = Field(gt=0, description="percent: fraction of the close (0.02); amount: price points; "
                                           "atr: multiple of ATR")


class TrailingExit(_Strict):
    """A trailing stop ``value`` ATRs (or a fraction of the close) behind the best close; it only moves in
    the position's favour and is updated from each close."""

    kind: Literal["atr", "percent"]
    value: float = Field(gt=0)


class TakeProfitExit(_Strict):
    """A target at the entry price plus (long) / minus (short) a distance decided at the signal's close."""

    kind: Literal["percent", "atr"]
    value: float = Field(gt=0)


class ExitRules(_Strict):
    """Exits besides the signal reversing (which always closes a position)."""

    stop: StopExit | None = None
    trailing: TrailingExit | None = None
    take_profit: TakeProfitExit | None = None
    time_stop: int | None = Field(None, ge=1, description="close after this many sessions held, at the next open")


# -- the strategy ------------------------------------------------------------------------------------------


class StopTargetStrategy(_Strict):
    """The stop-and-target strategy kind (``strategy.kind: stop_target``); see ``docs/strategies.md``."""

    kind: Literal["stop_target"]
    name: str = Field("stop_target", pattern=r"^[A-Za-z0-9_-]+$", description="names the results folder")
    order_ref_prefix: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        description="first field of this strategy's orderRefs: several strategies share an account, each with "
                    "its own prefix",
    )
    entry: Entry
    sizing: Sizing
    exits: ExitRules = ExitRules()
    atr_period: int = Field(14, ge=1, description="Wilder's ATR period, sessions (Wilder 1978: 14)")
    max_contracts: int = Field(5, ge=1, description="largest position per instrument, contracts")
    daily_loss_limit: float | None = Field(
        None, gt=0, lt=1,
        description="after a session whose net P&L is below -daily_loss_limit x the equity at the session before, "
                    "no new entry at the next session's open (exits still trade); None = off",
    )
    allow_short: bool = Field(True, description="False: short signals open nothing")

    @model_validator(mode="after")
    def _risk_needs_a_stop(self) -> StopTargetStrategy:
        if self.sizing.kind == "fixed_fraction" and self.exits.stop is None and self.exits.trailing is None:
            raise ValueError("sizing fixed_fraction risks a fraction of equity to the stop: give exits.stop or "
                             "exits.trailing")
        return self


def strategy_config(cfg: PipelineConfig) -> StopTargetStrategy | None:
    """The validated strategy of a configuration, or None for Carver's system (the default).

    Parameters
    ----------
    cfg : PipelineConfig
        Its ``strategy`` mapping (None when the file has no ``strategy:``).

    Returns
    -------
    StopTargetStrategy or None

    Raises
    ------
    StrategyConfigError
        ``strategy.kind`` is not ``stop_target``, or a field fails validation (each failing field named
        as ``strategy.<path>``).
    """
    raw: Any = cfg.strategy
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("kind") != "stop_target":
        kind = raw.get("kind") if isinstance(raw, dict) else raw
        raise StrategyConfigError(f"strategy.kind {kind!r}: the only strategy kind besides Carver's system (no "
                                  "strategy section) is 'stop_target'")
    try:
        return StopTargetStrategy.model_validate(raw)
    except ValidationError as exc:
        lines = [f"strategy.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise StrategyConfigError("; ".join(lines)) from None
