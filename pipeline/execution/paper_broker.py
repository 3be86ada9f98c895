"""A simulated broker: immediate fills with costs, state kept in the ledger's ``fills`` table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from pipeline.config import CostModel, Instrument
from pipeline.instruments import point_sizes
from pipeline.store.ledger import Ledger, LedgerError
from pipeline.trading import (
    BrokerError,
    BrokerOrder,
    Fill,
    OrderIntent,
    empty_working_orders,
)


def paper_fill_id(order_ref: str) -> str:
    """The paper broker's fill id of an order: deterministic, so an order fills at most once."""
    return f"paper:{order_ref}"


def commission(quantity: float, price: float, point_size: float, costs: CostModel) -> float:
    """Commission of one trade, in the instrument's currency (``CostModel`` docstring; pst
    ``account_costs.py``).

    ``max(|n| x commission_per_unit, commission_min, commission_pct x |n| x price x point_size)``
    with ``n`` signed units and ``price`` in price points (the pre-slippage price).
    """
    n = abs(quantity)
    return max(n * costs.commission_per_unit, costs.commission_min, costs.commission_pct * n * price * point_size)


class PaperBroker:
    """Fills every order at once at ``fill_price`` plus or minus the slippage, and charges the
    instrument's commission.

    Parameters
    ----------
    ledger : Ledger
        Where the fills are kept; the broker's positions are the sum of its fills there.
    costs : dict[str, CostModel]
        Cost model per instrument (``Instrument.costs``).
    point_sizes : dict[str, float]
        Currency per price point per unit, per instrument.

    Notes
    -----
    A buy pays ``fill_price + slippage``, a sell receives ``fill_price - slippage`` (price
    points). The fill id is ``"paper:" + order_ref``: submitting an order_ref again returns the
    fill already stored instead of filling twice (the ledger's primary key backs this up).
    """

    name = "paper"

    def __init__(self, ledger: Ledger, costs: dict[str, CostModel], point_sizes: dict[str, float],
                 capital: float | None = None) -> None:
        self.ledger = ledger
        self.costs = dict(costs)
        self.point_sizes = dict(point_sizes)
        self.capital = capital

    @classmethod
    def for_universe(cls, ledger: Ledger, instruments: Sequence[Instrument], capital: float | None = None) -> PaperBroker:
        """A paper broker over the configured universe: its cost models and point sizes; ``capital``
        is the paper account's starting value (for :meth:`net_liquidation`)."""
        return cls(ledger, costs={i.symbol: i.costs for i in instruments},
                   point_sizes=point_sizes(instruments).to_dict(), capital=capital)

    def net_liquidation(self, prices: pd.Series, base_currency: str = "USD") -> float:
        """The paper account's value: its starting capital plus the P&L of its fills marked at
        ``prices`` (index instrument, price points), net of commissions and slippage; base currency
        (the paper broker trades instruments priced in it).

        Raises
        ------
        BrokerError
            No starting capital was given, the ledger cannot be read, or a held instrument has no price.
        """
        if self.capital is None:
            raise BrokerError("paper broker: no starting capital, so no account value (PaperBroker(capital=...))")
        try:
            fills = self.ledger.fills(broker=self.name)
        except LedgerError as exc:
            raise BrokerError(f"paper broker: fills unreadable from {self.ledger.path}: {exc}") from exc
        if fills.empty:
            return float(self.capital)
        size = fills["instrument"].map(self.point_sizes).astype(float)
        cash = -(fills["quantity"] * fills["price"] * size).sum() - fills["commission"].sum() - fills["slippage_cost"].sum()
        held = fills.assign(units=fills["quantity"] * size).groupby("instrument")["units"].sum()
        held = held[held != 0]
        missing = [i for i in held.index if not pd.notna(prices.get(i))]
        if missing:
            raise BrokerError(f"paper broker: no price to mark {missing}; the account value is unknown")
        return float(self.capital + cash + (held * prices.reindex(held.index).astype(float)).sum())

    def positions(self) -> pd.Series:
        """Signed units per instrument (index ``instrument``): the sum of this broker's fills.

        Instruments netting to zero are dropped, so an empty Series means flat (the ledger was
        read). Raises :class:`BrokerError` if the ledger cannot be read.
        """
        try:
            net = self.ledger.net_fills(broker=self.name)
        except LedgerError as exc:
            raise BrokerError(f"paper broker: positions unreadable from {self.ledger.path}: {exc}") from exc
        return net[net != 0]

    def contract_positions(self) -> pd.Series:
        """Signed units per (instrument, contract) (MultiIndex): the sum of this broker's fills per
        dated contract (the instrument's symbol for fills without one); two months of one future
        are two positions. Zeros dropped. Raises :class:`BrokerError` if the ledger cannot be read."""
        try:
            net = self.ledger.net_fills(broker=self.name, by_contract=True)
        except LedgerError as exc:
            raise BrokerError(f"paper broker: positions unreadable from {self.ledger.path}: {exc}") from exc
        return net[net != 0]

    def working_orders(self) -> pd.DataFrame:
        """Always empty: paper orders fill at once (columns ``order_ref, instrument, quantity``)."""
        return empty_working_orders()

    def __enter__(self) -> "PaperBroker":
        """No connection to open (the ledger is opened per call); for symmetry with IB."""
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def lookup(self, order_ref: str) -> BrokerOrder | None:
        """The paper order of ``order_ref`` (always FILLED: paper orders fill at once), or None.
        Raises :class:`BrokerError` if the ledger cannot be read."""
        fills = self.fills_of(order_ref)
        return _filled(fills) if fills else None

    def cancel(self, order_ref: str) -> None:
        """Nothing to cancel: paper orders never rest. Returns None."""
        return None

    def find_by_order_ref(self, order_ref: str) -> Fill | None:
        """The (first) stored paper fill of ``order_ref``, or None. Raises :class:`BrokerError` if
        the ledger cannot be read."""
        fills = self.fills_of(order_ref)
        return fills[0] if fills else None

    def fills_of(self, order_ref: str) -> list[Fill]:
        """Every stored paper fill of ``order_ref`` (one; a calendar spread's two legs), oldest first.
        Raises :class:`BrokerError` if the ledger cannot be read."""
        try:
            df = self.ledger.fills(broker=self.name, order_ref=order_ref)
        except LedgerError as exc:
            raise BrokerError(f"paper broker: fills unreadable from {self.ledger.path}: {exc}") from exc
        return [
            Fill(
                fill_id=str(row["fill_id"]), order_ref=str(row["order_ref"]), broker=str(row["broker"]),
                session=pd.Timestamp(row["session"]), instrument=str(row["instrument"]),
                quantity=float(row["quantity"]), price=float(row["price"]), commission=float(row["commission"]),
                slippage_cost=float(row["slippage_cost"]), filled_at=pd.Timestamp(row["filled_at"]).tz_convert("UTC"),
                contract=str(row["contract"]) if pd.notna(row["contract"]) else None,
            )
            for _, row in df.sort_values("fill_id").iterrows()  # one or two fills
        ]

    def submit(self, intent: OrderIntent, fill_price: float) -> BrokerOrder:
        """Fill ``intent`` at once and store the fill (which also marks the intent FILLED).

        Parameters
        ----------
        intent : OrderIntent
            Uses ``order_ref``, ``session``, ``instrument``, signed ``quantity`` (units) and
            ``contract``; a calendar spread (``spread_contract``) fills as two legs, ``-quantity``
            of ``contract`` at ``contract_price`` and ``+quantity`` of ``spread_contract`` at
            ``contract_price + fill_price`` (fill ids ``paper:REF:1`` and ``paper:REF:2``), each
            with its slippage and commission.
        fill_price : float
            Price in price points before slippage (e.g. the next open or the reference close; a
            spread's price for a spread).

        Returns
        -------
        BrokerOrder
            FILLED with the new fill, or with the one already stored for this ``order_ref``.

        Raises
        ------
        BrokerError
            Zero or non-finite quantity, non-finite price, an instrument with no cost model or
            point size, or a ledger that cannot be written.
        """
        existing = self.fills_of(intent.order_ref)
        if existing:
            return _filled(existing)
        qty = float(intent.quantity)
        if not math.isfinite(qty) or qty == 0:
            raise BrokerError(f"paper broker: {intent.order_ref} has quantity {qty!r}; nothing to fill")
        if not math.isfinite(fill_price):
            raise BrokerError(f"paper broker: {intent.order_ref} fill price {fill_price!r} is not finite")
        if intent.instrument not in self.costs or intent.instrument not in self.point_sizes:
            raise BrokerError(
                f"paper broker: no cost model or point size for {intent.instrument!r} "
                f"(order {intent.order_ref}); add the instrument to the configured universe"
            )
        costs, point_size = self.costs[intent.instrument], float(self.point_sizes[intent.instrument])
        if intent.is_spread:
            leg = intent.contract_price if intent.contract_price is not None else math.nan
            if not math.isfinite(leg):
                raise BrokerError(f"paper broker: spread {intent.order_ref} has no finite priced-leg price")
            legs = [(f"{paper_fill_id(intent.order_ref)}:1", intent.contract, -qty, leg),
                    (f"{paper_fill_id(intent.order_ref)}:2", intent.spread_contract, qty, leg + fill_price)]
        else:
            legs = [(paper_fill_id(intent.order_ref), intent.contract, qty, fill_price)]
        fills = [
            Fill(
                fill_id=fill_id, order_ref=intent.order_ref, broker=self.name, session=pd.Timestamp(intent.session),
                instrument=intent.instrument, quantity=q, price=price + math.copysign(costs.slippage, q),
                commission=commission(q, price, point_size, costs), slippage_cost=abs(q) * costs.slippage * point_size,
                filled_at=pd.Timestamp.now(tz="UTC"), contract=contract,
            )
            for fill_id, contract, q, price in legs
        ]
        try:
            inserted = [self.ledger.record_fill(fill) for fill in fills]
        except LedgerError as exc:
            raise BrokerError(f"paper broker: fill of {intent.order_ref} not stored: {exc}") from exc
        if not all(inserted):  # another process filled it between the look-up and the write
            return _filled(self.fills_of(intent.order_ref) or fills)
        return _filled(fills)


def _filled(fills: list[Fill]) -> BrokerOrder:
    """FILLED with ``fills``; a spread's filled quantity is its forward leg's (the last fill)."""
    return BrokerOrder(fills[0].order_ref, "FILLED", tuple(fills), filled=fills[-1].quantity, remaining=0.0)
