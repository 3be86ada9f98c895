"""Broker adapters behind one protocol (:class:`Broker`): ``paper`` (simulated) and ``ib``
(:mod:`pipeline.broker.ib`, imported on use so the paper path never loads ib_async)."""

from pipeline.broker.base import (
    BROKER_STATUSES,
    FINAL_STATUSES,
    WORKING_COLUMNS,
    Broker,
    BrokerError,
    BrokerOrder,
    Fill,
    OrderPreview,
    empty_working_orders,
)
from pipeline.broker.paper import PaperBroker, commission, paper_fill_id

__all__ = [
    "BROKER_STATUSES",
    "FINAL_STATUSES",
    "WORKING_COLUMNS",
    "Broker",
    "BrokerError",
    "BrokerOrder",
    "Fill",
    "OrderPreview",
    "PaperBroker",
    "commission",
    "empty_working_orders",
    "paper_fill_id",
]
