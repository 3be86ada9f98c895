"""What every broker adapter offers the order path: positions, working orders, submit, look-up.

Adapters fail closed (DESIGN rule 5; reliability.md §2): a broker that cannot answer raises
:class:`BrokerError`; it never returns an empty answer meaning "unknown", because an empty
position list read as "flat" produces ghost orders (nautilus_trader issue #4228).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import pandas as pd

if TYPE_CHECKING:
    from pipeline.orders import OrderIntent

#: Columns of :meth:`Broker.working_orders`.
WORKING_COLUMNS = ("order_ref", "instrument", "quantity")


class BrokerError(ValueError):
    """The broker did not answer, or answered something unusable; the run must stop."""


@dataclass(frozen=True)
class Fill:
    """One execution of an order (the whole order: partial fills are aggregated by the adapter).

    Attributes
    ----------
    fill_id : str
        Unique and deterministic per execution (the paper broker uses ``"paper:" + order_ref``).
    order_ref : str
        The intent's reference (``strategy:session:instrument:seq``).
    broker : str
        The broker's ``name``.
    session : pd.Timestamp
        Session the order belongs to (midnight, tz-naive).
    instrument : str
        Symbol.
    quantity : float
        Signed units filled; + bought, - sold.
    price : float
        Average fill price in price points, slippage included.
    commission : float
        Commission in the instrument's currency (>= 0).
    slippage_cost : float
        ``|quantity| x slippage x point_size`` in the instrument's currency; already inside
        ``price``, recorded so costs can be split (not to be subtracted a second time).
    filled_at : pd.Timestamp
        Execution time, tz-aware UTC.
    """

    fill_id: str
    order_ref: str
    broker: str
    session: pd.Timestamp
    instrument: str
    quantity: float
    price: float
    commission: float
    slippage_cost: float
    filled_at: pd.Timestamp


@runtime_checkable
class Broker(Protocol):
    """The broker interface the order path needs (paper and IB adapters implement it)."""

    name: str

    def positions(self) -> pd.Series:
        """Signed position in units per instrument (index ``instrument``).

        An empty Series means the account is flat, and only that. Raises :class:`BrokerError`
        when positions cannot be read.
        """
        ...

    def working_orders(self) -> pd.DataFrame:
        """Orders sent but not yet (fully) filled: columns ``WORKING_COLUMNS``, quantity the
        signed remaining units. Raises :class:`BrokerError` when they cannot be read."""
        ...

    def submit(self, intent: "OrderIntent", fill_price: float) -> Fill | None:
        """Send one order under ``intent.order_ref``. Returns the fill if it filled at once,
        None if it is working. Sending an ``order_ref`` the broker already has must not create
        a second order (return the existing fill or None). Raises :class:`BrokerError`."""
        ...

    def find_by_order_ref(self, order_ref: str) -> Fill | None:
        """The fill of an order sent earlier, or None if the broker has no fill for it.
        Raises :class:`BrokerError` when the broker cannot be asked (never None for 'unknown')."""
        ...


def empty_working_orders() -> pd.DataFrame:
    """An empty working-orders frame with the expected columns and dtypes."""
    return pd.DataFrame(
        {"order_ref": pd.Series(dtype="str"), "instrument": pd.Series(dtype="str"), "quantity": pd.Series(dtype=float)}
    )
