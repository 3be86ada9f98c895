"""Broker adapters behind one protocol (:class:`Broker`): ``paper`` here, ``ib`` separately."""

from pipeline.broker.base import WORKING_COLUMNS, Broker, BrokerError, Fill, empty_working_orders
from pipeline.broker.paper import PaperBroker, commission, paper_fill_id

__all__ = [
    "WORKING_COLUMNS",
    "Broker",
    "BrokerError",
    "Fill",
    "PaperBroker",
    "commission",
    "empty_working_orders",
    "paper_fill_id",
]
