"""The portfolio stage's public API in one namespace.

The maths lives in two modules: :mod:`pipeline.weights` (vol-normalised returns, ERC instrument
weights, risk contributions, IDM, month-end estimation) and :mod:`pipeline.sizing` (vol scalar,
optimal positions, buffer, buffered target positions). Import from either; this module only
re-exports them.
"""

from pipeline.sizing import (
    SizingError,
    TargetPositions,
    buffer_width,
    buffered_positions,
    optimal_positions,
    target_positions,
    volatility_scalar,
)
from pipeline.weights import (
    InstrumentWeights,
    WeightsError,
    erc_weights,
    estimate_instrument_weights,
    idm,
    month_end_sessions,
    risk_contributions,
    vol_normalised_returns,
    weights_on_sessions,
)

__all__ = [
    "InstrumentWeights",
    "SizingError",
    "TargetPositions",
    "WeightsError",
    "buffer_width",
    "buffered_positions",
    "erc_weights",
    "estimate_instrument_weights",
    "idm",
    "month_end_sessions",
    "optimal_positions",
    "risk_contributions",
    "target_positions",
    "vol_normalised_returns",
    "volatility_scalar",
    "weights_on_sessions",
]
