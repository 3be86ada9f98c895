"""Interactive Brokers plumbing shared by the IB bar source and the IB broker.

``contracts``: configured instrument -> ib_async contract, bar type, qualification with a conId
cache. ``pacing``: the process-wide budget that keeps historical requests within IB's pacing
rules. ``errors``: IB error codes and texts -> typed exceptions. ``fake_gateway``: a fake TWS /
IB Gateway speaking the wire protocol (tests and offline rehearsals; imported on its own).
"""

from pipeline.adapters.ib.contracts import (
    WHAT_TO_SHOW,
    ContractCache,
    ib_contract,
    qualify,
    what_to_show,
)
from pipeline.adapters.ib.errors import (
    IBConnectivityLost,
    IBError,
    IBNoData,
    IBPacingViolation,
    IBRequestFailed,
    IBTimeout,
    IBUnknownContract,
    classify_error,
    classify_exception,
)
from pipeline.adapters.ib.pacing import (
    HistoricalRequest,
    PacingBudget,
    PacingBudgetExceeded,
    shared_budget,
)

__all__ = [
    "WHAT_TO_SHOW",
    "ContractCache",
    "HistoricalRequest",
    "IBConnectivityLost",
    "IBError",
    "IBNoData",
    "IBPacingViolation",
    "IBRequestFailed",
    "IBTimeout",
    "IBUnknownContract",
    "PacingBudget",
    "PacingBudgetExceeded",
    "classify_error",
    "classify_exception",
    "ib_contract",
    "qualify",
    "shared_budget",
    "what_to_show",
]
