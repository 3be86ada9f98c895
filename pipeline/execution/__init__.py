"""Execution: order intents, reconciliation, submission, market fallback and cancellation behind the
pre-trade gate; the paper broker.

The order path's public API is imported from here (``from pipeline.execution import execute_orders``);
each job lives in its own module of this package.
"""

from pipeline.execution.cancel import cancel_orders
from pipeline.execution.intents import (
    PLAN_COLUMNS,
    plan_orders,
    record_intents_without_sending,
)
from pipeline.execution.lock import OrderRunLocked, order_run_lock
from pipeline.execution.policy import OrderPolicy
from pipeline.execution.report import ExecutionReport
from pipeline.execution.submit import execute_orders

__all__ = [
    "PLAN_COLUMNS",
    "ExecutionReport",
    "OrderPolicy",
    "OrderRunLocked",
    "cancel_orders",
    "execute_orders",
    "order_run_lock",
    "plan_orders",
    "record_intents_without_sending",
]
