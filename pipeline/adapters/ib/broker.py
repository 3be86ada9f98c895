"""Interactive Brokers (TWS / IB Gateway through ib_async) as the order path's broker.

One :class:`IBBroker` session is one ``IB`` object with the trading client id of
``broker.ib``, connected on ``__enter__`` and always disconnected on ``__exit__``; every
request is bounded (``RequestTimeout``; ``RaiseRequestErrors=True``), and every failure raises
:class:`~pipeline.trading.BrokerError` (fail closed: an answer that did not arrive is never
read as "flat" or "no orders"; nautilus_trader issue #4228).

Orders are found by ``orderRef`` (and their fills by ``permId``), never by ``orderId`` alone,
which a restarted gateway may hand out again (Lean.Brokerages.InteractiveBrokers #242): a look-up
searches the open orders of *every* client (``reqAllOpenOrders``), the completed orders
(``reqCompletedOrders(apiOnly=False)``) and today's executions (``reqExecutions``), as the IB
reference notes (section 4, "Order idempotency") prescribe.

Modes (``broker.execution``): ``dry_run`` connects read-only (positions only; the order path
sends nothing; with ``broker.what_if`` read-write, for what-if checks that never trade), ``paper`` refuses a port outside ``paper_ports`` and an account that is not a
paper account (``DU...``), ``live`` needs ``live_enabled``, a port in ``live_ports`` and the
account in ``live_accounts``.

Use from synchronous code in a thread without a running event loop (a Dagster sync asset, the
CLI); ib_async's sync API cannot run inside a running loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from ib_async import IB, Bag, ComboLeg, Contract, Future, Order, Trade

from pipeline.adapters.ib.contracts import ContractCache, qualify
from pipeline.adapters.ib.errors import IBError, classify_exception
from pipeline.config import BrokerConfig, Instrument
from pipeline.trading import (
    PAPER_ACCOUNT_PREFIX,
    BrokerError,
    BrokerOrder,
    Fill,
    OrderError,
    OrderIntent,
    OrderPreview,
    empty_working_orders,
    parse_order_ref,
)

#: ib_async order statuses -> the ledger's (a Cancelled order with error 201 is REJECTED).
_STATUS = {
    "PendingSubmit": "SUBMITTED", "ApiPending": "SUBMITTED", "PendingCancel": "ACKNOWLEDGED",
    "PreSubmitted": "ACKNOWLEDGED", "Submitted": "ACKNOWLEDGED", "ApiUpdate": "ACKNOWLEDGED",
    "Filled": "FILLED", "Cancelled": "CANCELLED", "ApiCancelled": "CANCELLED", "Inactive": "CANCELLED",
}  # fmt: skip
_DONE = ("Filled", "Cancelled", "ApiCancelled", "Inactive")
#: Final statuses IB never leaves: one reported earlier wins over a stale status that arrives after
#: it (ib_async keeps whatever came last, e.g. Submitted after Filled).
_FINAL = ("Filled", "Cancelled", "ApiCancelled")
#: IB error codes that mean the broker refused an order (201 rejected, 103 duplicate id,
#: 110 price does not conform to the minimum tick, 10147-class codes are cancels).
_REJECT_CODES = frozenset({103, 110, 201, 203})
#: How a completed order's ``completedStatus`` says the broker refused it (lower case).
_REJECTED_TEXT = "rejected"
#: Errors after which TWS has lost its link to IB until 1101/1102 arrives.
_LOST_CODES = frozenset({1100, 2110})
_RESTORED_CODES = frozenset({1101, 1102})


def refuse_continuous_future(contract: Contract, order_ref: str) -> Contract:
    """``contract``, unless it is a continuous future: an order never goes to a ``CONTFUT``.

    A CONTFUT is for historical data only: IB resolves it to the front month at the time of the
    request, so an order to it lands in whatever month IB calls current and a position held through
    IB's roll is left in the old month (futures.md section 4).

    Raises
    ------
    BrokerError
        ``contract.secType`` is ``CONTFUT``; nothing is sent.
    """
    if contract.secType == "CONTFUT":
        raise BrokerError(f"{order_ref}: refusing to send an order to a continuous future (CONTFUT {contract.symbol}); "
                          "orders go to a dated contract month (FUT with lastTradeDateOrContractMonth)")
    return contract


def _family(sec_type: str) -> str:
    return "FUT" if sec_type in ("FUT", "CONTFUT") else sec_type


def _key(c: Contract) -> tuple[str, str, str]:
    return (_family(c.secType), c.symbol, c.currency)


def _ib_status(trade: Trade) -> str:
    """The trade's IB status, never moved back from a final one: statuses can arrive out of order
    (Filled, then a stale Submitted), and ib_async's ``orderStatus`` keeps the last one; its log
    keeps every status IB sent (entries without an error code; errors are ib_async's own)."""
    status = trade.orderStatus.status
    if status in _DONE:
        return status
    final = [e.status for e in trade.log if not e.errorCode and e.status in _FINAL]
    return final[-1] if final else status


def _done(trade: Trade) -> bool:
    return _ib_status(trade) in _DONE


def _units(value: Any) -> float:
    """A quantity IB sent, 0 when unset (1.797e308) or not a number."""
    try:
        x = abs(float(value))
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) and x < 1e300 else 0.0


def _ib_filled(trade: Trade) -> float:
    """Units IB says the order filled: its order status, or a completed order's filledQuantity."""
    return max(_units(trade.orderStatus.filled), _units(getattr(trade.order, "filledQuantity", None)))


def _fills_pending(trade: Trade) -> bool:
    """A commission report, or an execution IB's filled quantity promises, has not arrived yet (a
    combo's filled units arrive as executions of each leg)."""
    legs = len(trade.contract.comboLegs or ()) if trade.contract.secType == "BAG" else 0
    shares = sum(_units(f.execution.shares) for f in trade.fills) / max(legs, 1)
    return any(not f.commissionReport.execId for f in trade.fills) or shares < _ib_filled(trade) - 1e-9


class IBBroker:
    """The :class:`~pipeline.trading.Broker` protocol over one ib_async session.

    Parameters
    ----------
    instruments : sequence of Instrument
        The configured universe: positions and orders of other contracts are not the
        strategy's and are left out.
    config : BrokerConfig
        ``ib`` (host, port, client id, timeout, account), ``effective_execution`` and the order
        policy (``time_in_force``, ``order_timeout``, ``fill_wait``, ports and accounts).
    ib_factory : callable
        Builds the ib_async client (tests pass one that keeps a reference to it).
    cache : ContractCache, optional
        Qualified contracts shared with other sessions of the process.

    Examples
    --------
    >>> with IBBroker(cfg.instruments, cfg.broker) as broker:   # doctest: +SKIP
    ...     broker.positions()
    """

    name = "ib"
    #: Orders a second the order path sends at most: TWS rejects more than 50 API messages a
    #: second (error 100) and ib_async queues beyond 45 (reference/ib.md); 40 leaves room for the
    #: requests around the orders.
    max_order_rate = 40.0

    def __init__(
        self,
        instruments: Sequence[Instrument],
        config: BrokerConfig,
        *,
        ib_factory: Callable[[], IB] = IB,
        cache: ContractCache | None = None,
    ) -> None:
        self.instruments = {i.symbol: i for i in instruments}
        self.config = config
        self.execution = config.effective_execution
        self.account: str | None = None
        self._ib_factory = ib_factory
        self._cache = cache if cache is not None else ContractCache()
        self._ib: IB | None = None
        self._contracts: dict[str, Contract] = {}
        self._by_con_id: dict[int, str] = {}
        self._by_key: dict[tuple[str, str, str], str] = {}
        self._min_tick: dict[str, float] = {}
        self._snapshot: dict[str, BrokerOrder] | None = None
        self._link_down = False
        #: permId -> ``completedStatus`` of completed orders (IB's words, e.g. "Order rejected -
        #: reason:..."); ib_async keeps only the status ("Cancelled") on the Trade it builds.
        self._completed_status: dict[int, str] = {}
        self._trades: dict[str, Trade] = {}
        #: futures instruments with roll parameters: positions, orders and fills per contract month
        self._rolled = {i.symbol for i in instruments if i.sec_type == "FUT" and i.rolls is not None}
        #: conId -> contract month (``YYYYMM``, IB's ``contractMonth``) of the dated months met
        self._month_by_con_id: dict[int, str] = {}
        #: (symbol, month) -> the qualified dated contract
        self._dated: dict[tuple[str, str], Contract] = {}

    @property
    def where(self) -> str:
        c = self.config.ib
        return f"IB at {c.host}:{c.port} (client id {c.client_id})"

    # -- session ------------------------------------------------------------------------------

    def __enter__(self) -> IBBroker:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect, check the mode against port and account, and qualify the universe.

        Raises
        ------
        BrokerError
            A running event loop in this thread; a port not allowed for the mode; TWS / IB
            Gateway not reachable (the message names host, port and client id); an account
            that is not managed by the login, not a paper account in paper mode, or not on the
            live allow-list; a contract IB does not know. Nothing was sent in any case.
        """
        cfg = self.config.ib
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise BrokerError(
                "IBBroker uses ib_async's synchronous API, which cannot run inside a running event "
                "loop; call it from a sync asset or a worker thread"
            )
        self._check_port()
        ib = self._ib_factory()
        ib.RaiseRequestErrors = True  # an IB error raises instead of looking like an empty answer
        ib.RequestTimeout = cfg.timeout  # bounds every sync call
        ib.errorEvent += self._on_error
        self._keep_completed_status(ib)
        self._ib = ib
        try:
            try:
                ib.connect(
                    cfg.host, cfg.port, clientId=cfg.client_id, timeout=cfg.timeout,
                    readonly=self.execution == "dry_run" and not self.config.what_if, account=cfg.account or "",
                    raiseSyncErrors=True,
                )  # fmt: skip
            except Exception as exc:
                err = classify_exception(exc, f"connect to {self.where}", cfg.timeout)
                raise BrokerError(
                    f"{err}. Is TWS / IB Gateway running with the API enabled on this port, and is "
                    f"client id {cfg.client_id} free? No order was sent."
                ) from exc
            self.account = self._check_account(ib.managedAccounts())
            try:
                self._contracts = qualify(ib, list(self.instruments.values()), self._cache)
            except IBError as exc:
                raise BrokerError(f"{self.where}: {exc}") from exc
            for symbol, c in self._contracts.items():
                self._by_con_id[c.conId] = symbol
                self._by_key[_key(c)] = symbol
        except BaseException:
            self.close()
            raise

    def _keep_completed_status(self, ib: IB) -> None:
        """Keep each completed order's ``completedStatus``, which ib_async's wrapper drops.

        A reject that reached the gateway while this client was away (a dropped connection, a
        crash) is known afterwards only from the completed orders: status ``Cancelled`` with
        ``completedStatus`` "Order rejected - reason:..." and no error 201 in the Trade's log.
        """
        wrapper = ib.wrapper
        original = wrapper.completedOrder

        def completed_order(contract: Contract, order: Order, state: Any) -> None:
            if order.permId and getattr(state, "completedStatus", ""):
                self._completed_status[int(order.permId)] = str(state.completedStatus)
            original(contract, order, state)

        wrapper.completedOrder = completed_order

    def close(self) -> None:
        """Disconnect (idempotent)."""
        ib, self._ib = self._ib, None
        if ib is not None:
            ib.errorEvent -= self._on_error
            ib.disconnect()

    def _on_error(self, req_id: int, code: int, text: str, contract: Contract | None) -> None:
        if code in _LOST_CODES:
            self._link_down = True
        elif code in _RESTORED_CODES:
            self._link_down = False

    def _check_port(self) -> None:
        port = self.config.ib.port
        if self.execution == "paper" and port not in self.config.paper_ports:
            raise BrokerError(
                f"execution is paper but port {port} is not a paper port {self.config.paper_ports} "
                "(IB Gateway paper 4002, TWS paper 7497); refusing to connect"
            )
        if self.execution == "live" and port not in self.config.live_ports:
            raise BrokerError(
                f"execution is live but port {port} is not a live port {self.config.live_ports}; refusing to connect"
            )

    def _check_account(self, managed: list[str]) -> str:
        wanted = self.config.ib.account
        if wanted is None:
            if len(managed) != 1:
                raise BrokerError(
                    f"{self.where} manages accounts {managed}; set broker.ib.account to the one to trade"
                )
            wanted = managed[0]
        if wanted not in managed:
            raise BrokerError(f"{self.where}: account {wanted} is not managed by this login (it manages {managed})")
        if self.execution == "paper" and not wanted.startswith(PAPER_ACCOUNT_PREFIX):
            raise BrokerError(
                f"execution is paper but account {wanted} is not a paper account ({PAPER_ACCOUNT_PREFIX}...); "
                "refusing to trade"
            )
        if self.execution == "live" and (not self.config.live_enabled or wanted not in self.config.live_accounts):
            raise BrokerError(
                f"execution is live but account {wanted} is not on broker.live_accounts "
                f"{self.config.live_accounts} (or live_enabled is false); refusing to trade"
            )
        return wanted

    def _live(self, what: str) -> IB:
        """The connected client, or BrokerError: an unknown answer is never an empty one."""
        ib = self._ib
        if ib is None or not ib.isConnected():
            raise BrokerError(
                f"{self.where}: not connected, so {what} is unknown (not empty); the step fails "
                "closed and the next run reconciles"
            )
        if self._link_down:
            raise BrokerError(
                f"{self.where}: TWS reported lost connectivity to IB (1100), so {what} is unknown; "
                "retry once it is restored"
            )
        return ib

    def _request(self, what: str, call: Callable[[IB], Any]) -> Any:
        ib = self._live(what)
        try:
            out = call(ib)
        except Exception as exc:
            raise BrokerError(f"{classify_exception(exc, f'{what} from {self.where}', self.config.ib.timeout)}") from exc
        self._live(what)  # a connection that dropped while answering leaves the answer incomplete
        return out

    def _instrument(self, c: Contract) -> str | None:
        return self._by_con_id.get(c.conId) or self._by_key.get(_key(c))

    # -- Broker protocol ----------------------------------------------------------------------

    def positions(self) -> pd.Series:
        """Signed units per configured instrument (index ``instrument``), fresh from
        ``reqPositions``; flat instruments are left out.

        Raises
        ------
        BrokerError
            Not connected, connectivity lost (1100), or the request failed or timed out.
        """
        rows = self._request("positions", lambda ib: ib.reqPositions())
        held: dict[str, float] = {}
        for p in rows:
            if p.account != self.account:
                continue
            symbol = self._instrument(p.contract)
            if symbol is not None and p.position != 0:
                held[symbol] = held.get(symbol, 0.0) + float(p.position)
        out = pd.Series(held, dtype=float, name="position")
        out.index.name = "instrument"
        return out.sort_index()

    def contract_positions(self) -> pd.Series:
        """Signed units per (instrument, contract) of the configured universe, fresh from
        ``reqPositions`` (IB reports one position per conId).

        Returns
        -------
        pd.Series
            MultiIndex ``(instrument, contract)``: for a futures instrument with roll parameters the
            contract month (``YYYYMM``, the ``contractMonth`` of the conId's contract details:
            ``lastTradeDateOrContractMonth`` is the last trading day, whose month differs from the
            contract month for products that stop trading the month before, e.g. MCLF4 expires
            20231218), so two months are two positions; else the instrument's symbol (its months
            summed, as :meth:`positions`). Flat positions left out.

        Raises
        ------
        BrokerError
            As :meth:`positions`, or a held month IB gives no contract details for.
        """
        rows = self._request("positions", lambda ib: ib.reqPositions())
        held: dict[tuple[str, str], float] = {}
        for p in rows:
            if p.account != self.account:
                continue
            symbol = self._instrument(p.contract)
            if symbol is None or p.position == 0:
                continue
            key = (symbol, self._month(p.contract) if symbol in self._rolled else symbol)
            held[key] = held.get(key, 0.0) + float(p.position)
        index = pd.MultiIndex.from_tuples(sorted(held), names=["instrument", "contract"]) if held else \
            pd.MultiIndex.from_arrays([[], []], names=["instrument", "contract"])
        return pd.Series([held[k] for k in sorted(held)], index=index, dtype=float, name="position")

    def working_orders(self) -> pd.DataFrame:
        """Open orders of every client on configured instruments: ``order_ref``, ``instrument``,
        signed remaining ``quantity`` and ``contract`` (the month of a futures instrument with roll
        parameters, else the symbol). A calendar spread (BAG) is one row per leg (the legs net to
        zero for the instrument). Raises :class:`BrokerError` as :meth:`positions`."""
        trades = self._request("open orders", lambda ib: ib.reqAllOpenOrders())
        rows = []
        for t in trades:
            combo = t.contract.secType == "BAG"
            symbol = self._by_key.get(("FUT", t.contract.symbol, t.contract.currency)) if combo else self._instrument(t.contract)
            if symbol is None or t.orderStatus.status in _DONE or t.order.account not in ("", self.account):
                continue
            remaining = t.orderStatus.remaining if t.orderStatus.status else float(t.order.totalQuantity)
            sign = 1.0 if t.order.action == "BUY" else -1.0
            if combo:  # a few legs
                for leg in t.contract.comboLegs:
                    side = 1.0 if leg.action == "BUY" else -1.0
                    rows.append({"order_ref": t.order.orderRef, "instrument": symbol,
                                 "quantity": sign * side * float(leg.ratio or 1) * float(remaining),
                                 "contract": self._month(Contract(conId=leg.conId))})
                continue
            contract = self._month(t.contract) if symbol in self._rolled else symbol
            rows.append({"order_ref": t.order.orderRef, "instrument": symbol, "quantity": sign * float(remaining),
                         "contract": contract})
        if not rows:
            return empty_working_orders().assign(contract=pd.Series(dtype="str"))
        return pd.DataFrame(rows).astype({"order_ref": "str", "instrument": "str", "quantity": float, "contract": "str"})

    def lookup(self, order_ref: str) -> BrokerOrder | None:
        """The order with ``order_ref`` at the broker (open at any client, completed, or
        executed today), with its fills; None when the broker has none.

        Raises
        ------
        BrokerError
            The broker cannot be asked, or holds two different orders (permIds) under the
            ref (a duplicate submission: trading stops for a person to look).
        """
        if self._snapshot is None:
            self._snapshot = self._orders_by_ref()
        return self._snapshot.get(order_ref)

    def submit(self, intent: OrderIntent, fill_price: float) -> BrokerOrder:
        """Place ``intent`` (orderRef, account and tif set explicitly) unless the broker
        already has an order under its ref; wait for the acknowledgement and, for a market
        order, up to ``fill_wait`` seconds for the fills.

        Returns
        -------
        BrokerOrder
            What the broker knows after the wait (REJECTED with IB's text when refused).

        Raises
        ------
        BrokerError
            Not allowed in ``dry_run``; not connected; the connection dropped after the order
            went out or no acknowledgement came within ``order_timeout`` (the outcome is
            unknown: never resend, the next run reconciles by orderRef).
        """
        if self.execution == "dry_run":
            raise BrokerError(f"{intent.order_ref}: broker.execution is dry_run, nothing may be sent")
        existing = self.lookup(intent.order_ref)
        if existing is not None:
            return existing
        contract, order = self._order_contract(intent), self._order(intent)
        ib = self._live(f"the outcome of {intent.order_ref}")
        try:
            trade = ib.placeOrder(contract, order)
            self._wait(trade, intent.order_ref)
        except BrokerError:
            self._snapshot = None  # unknown outcome: ask the broker again next time
            raise
        except Exception as exc:
            self._snapshot = None
            raise BrokerError(f"placeOrder of {intent.order_ref} to {self.where} failed: {exc!r}") from exc
        self._trades[intent.order_ref] = trade
        outcome = self._from_trade(trade, intent.order_ref)
        # The order-run lock keeps other runs of the strategy from placing orders meanwhile, so
        # the snapshot taken before stays complete once this order is added to it.
        self._snapshot[intent.order_ref] = outcome
        return outcome

    def what_if(self, intent: OrderIntent) -> OrderPreview:
        """IB's what-if check of ``intent`` (``whatIfOrder``: the order as :meth:`submit` would
        send it, flagged what-if, so IB only answers with its margin and commission impact).

        Allowed in every mode (nothing trades); the connection must not be read-only
        (``broker.what_if`` makes the dry-run connection read-write).

        Raises
        ------
        BrokerError
            Not connected, IB refused the check (an IB error) or gave no answer in time.
        """
        contract, order = self._order_contract(intent), self._order(intent)
        state = self._request(f"the what-if check of {intent.order_ref}", lambda ib: ib.whatIfOrder(contract, order))
        if not state or not getattr(state, "status", None):
            raise BrokerError(f"{intent.order_ref}: {self.where} gave no what-if answer")

        def amount(value: Any) -> float:
            try:
                x = float(value)
            except (TypeError, ValueError):
                return math.nan
            return x if math.isfinite(x) and abs(x) < 1e300 else math.nan  # IB's unset is 1.797e308

        return OrderPreview(
            order_ref=intent.order_ref, init_margin_change=amount(state.initMarginChange),
            maint_margin_change=amount(state.maintMarginChange), equity_with_loan_after=amount(state.equityWithLoanAfter),
            commission=amount(state.commission), currency=str(state.commissionCurrency or ""),
            warning=str(state.warningText or ""),
        )  # fmt: skip

    def cancel(self, order_ref: str) -> BrokerOrder | None:
        """Cancel the open order with ``order_ref`` (this client's); None if none is open.
        Raises :class:`BrokerError` when the broker cannot be asked or does not confirm within
        ``order_timeout``."""
        trades = self._request("open orders", lambda ib: ib.reqAllOpenOrders())
        live = [t for t in trades if t.order.orderRef == order_ref and t.orderStatus.status not in _DONE]
        if not live:
            return None
        trade = live[0]
        ib = self._live(f"the cancel of {order_ref}")
        self._snapshot = None
        ib.cancelOrder(trade.order)
        deadline = time.monotonic() + self.config.order_timeout
        while not _done(trade) and time.monotonic() < deadline:
            self._pause(0.02, order_ref)
        if not _done(trade):
            raise BrokerError(f"{order_ref}: cancel not confirmed within {self.config.order_timeout:g} s")
        return self._from_trade(trade, order_ref)

    def wait_for_fills(self, order_refs: Sequence[str], seconds: float) -> dict[str, BrokerOrder]:
        """Wait up to ``seconds`` for the orders this session placed under ``order_refs`` to be
        done (filled, cancelled), keeping the socket serviced; returns what IB then says of each
        (orders not placed by this session are left out: look them up).

        Raises
        ------
        BrokerError
            The connection dropped while waiting (the orders' state is unknown).
        """
        trades = {ref: self._trades[ref] for ref in order_refs if ref in self._trades}
        deadline = time.monotonic() + max(0.0, seconds)
        while any(not _done(t) for t in trades.values()) and time.monotonic() < deadline:
            self._pause(0.02, ", ".join(trades))
        until = time.monotonic() + 1.0  # the commission report follows each execution
        while any(_fills_pending(t) for t in trades.values()) and time.monotonic() < until:
            self._pause(0.01, ", ".join(trades))
        if trades:
            self._snapshot = None  # fills arrived meanwhile: ask the broker again on the next look-up
        return {ref: self._from_trade(t, ref) for ref, t in trades.items()}

    def daily_pnl(self) -> float | None:
        """Today's P&L of the account in its base currency (``reqPnL``), None if IB sends none
        within the timeout. Raises :class:`BrokerError` when not connected."""
        ib = self._live("the daily P&L")
        pnl = ib.reqPnL(self.account or "")
        try:
            deadline = time.monotonic() + self.config.ib.timeout
            while math.isnan(pnl.dailyPnL) and time.monotonic() < deadline:
                self._pause(0.02, "the daily P&L request")
        finally:
            ib.cancelPnL(self.account or "")
        return None if math.isnan(pnl.dailyPnL) else float(pnl.dailyPnL)

    def net_liquidation(self, prices: pd.Series | None = None, base_currency: str = "USD") -> float:
        """The account's net liquidation value in ``base_currency`` (tag ``NetLiquidation`` of the
        account updates IB streams after connecting; ``prices`` is unused: IB marks the account).

        Raises
        ------
        BrokerError
            Not connected, or IB sent no NetLiquidation in ``base_currency`` (or ``BASE``) for the
            account: an unknown account value never sizes a book (fail closed).
        """
        ib = self._live("the account value")
        for value in ib.accountValues(self.account or ""):
            if value.tag == "NetLiquidation" and value.currency in (base_currency, "BASE"):
                try:
                    return float(value.value)
                except ValueError:
                    break
        raise BrokerError(
            f"IB sent no NetLiquidation in {base_currency} for account {self.account} at {self.where}; "
            "the capital cannot be read from the account (portfolio.capital: account)"
        )

    # -- internals ----------------------------------------------------------------------------

    def _trading_contract(self, symbol: str) -> Contract:
        c = self._contracts.get(symbol)
        if c is None:
            raise BrokerError(f"{symbol} is not in the configured universe; no order sent")
        if c.secType == "CONTFUT":  # history uses the continuous future; orders go to the resolved month
            return Contract(
                secType="FUT", conId=c.conId, symbol=c.symbol, exchange=c.exchange, currency=c.currency,
                lastTradeDateOrContractMonth=c.lastTradeDateOrContractMonth, multiplier=c.multiplier,
                localSymbol=c.localSymbol, tradingClass=c.tradingClass,
            )  # fmt: skip
        return c

    def _month(self, contract: Contract) -> str:
        """The contract month (``YYYYMM``) of a dated future, by conId: IB's ``contractMonth``
        from its contract details (asked once per conId), or a six-digit ``lastTradeDateOrContractMonth``.

        Raises
        ------
        BrokerError
            IB gives no contract details for the conId (a position nobody can place is not guessed).
        """
        con_id = int(contract.conId or 0)
        if con_id in self._month_by_con_id:
            return self._month_by_con_id[con_id]
        last = str(contract.lastTradeDateOrContractMonth or "")
        if not con_id and len(last) == 6:
            return last
        details = self._request(f"contract details of conId {con_id}",
                                lambda ib: ib.reqContractDetails(Contract(conId=con_id, includeExpired=True)))
        month = str(details[0].contractMonth or "") if details else ""
        if len(month) != 6:
            raise BrokerError(f"{self.where}: no contract month for conId {con_id} ({contract.localSymbol or contract.symbol}); "
                              "a futures position is kept per contract month, so it cannot be read")
        self._month_by_con_id[con_id] = month
        return month

    def _dated_contract(self, symbol: str, month: str) -> Contract:
        """The qualified dated future ``symbol`` ``month`` (``FUT`` with ``lastTradeDateOrContractMonth``
        = the month, IB's convention for a contract month), cached per session.

        Raises
        ------
        BrokerError
            IB does not list the month (expired, not yet listed, unknown).
        """
        key = (symbol, month)
        if key not in self._dated:
            inst = self.instruments[symbol]
            c = Future(symbol, month, inst.exchange, currency=inst.currency)
            got = self._request(f"the contract {symbol} {month}", lambda ib: ib.qualifyContracts(c))
            if not got or got[0] is None or not c.conId:
                raise BrokerError(f"{self.where} lists no contract {symbol} {month} ({inst.exchange}); no order sent")
            self._dated[key] = c
            self._month_by_con_id[int(c.conId)] = month[:6]
        return self._dated[key]

    def _order_contract(self, intent: OrderIntent) -> Contract:
        """The IB contract ``intent`` goes to: its dated month (``FUT``), a calendar spread's
        ``BAG`` of two dated months (sell the priced, buy the forward; the order's side reverses
        both), or, for an instrument without roll parameters, its configured contract.

        Raises
        ------
        BrokerError
            A futures instrument with roll parameters and no contract month on the intent, or a
            contract that would be a ``CONTFUT`` (:func:`refuse_continuous_future`).
        """
        symbol = intent.instrument
        if symbol not in self.instruments:
            raise BrokerError(f"{symbol} is not in the configured universe; no order sent")
        if intent.contract is None:
            if symbol in self._rolled:
                raise BrokerError(f"{intent.order_ref}: {symbol} trades dated contract months (it has roll parameters) "
                                  "but the intent names none; no order sent")
            return refuse_continuous_future(self._trading_contract(symbol), intent.order_ref)
        priced = refuse_continuous_future(self._dated_contract(symbol, intent.contract), intent.order_ref)
        if not intent.is_spread:
            return priced
        forward = refuse_continuous_future(self._dated_contract(symbol, intent.spread_contract), intent.order_ref)
        return Bag(symbol=symbol, exchange=priced.exchange, currency=priced.currency, comboLegs=[
            ComboLeg(conId=priced.conId, ratio=1, action="SELL", exchange=priced.exchange),
            ComboLeg(conId=forward.conId, ratio=1, action="BUY", exchange=forward.exchange),
        ])

    def _order(self, intent: OrderIntent) -> Order:
        """The IB order of ``intent``: orderRef, account and tif set explicitly; a limit on the
        contract's tick grid."""
        order = Order(
            action="BUY" if intent.quantity > 0 else "SELL",
            totalQuantity=abs(float(intent.quantity)),
            orderType=intent.order_type,
            tif=self.config.time_in_force,
            account=self.account or "",
            orderRef=intent.order_ref,
            transmit=True,
        )
        if intent.order_type == "LMT":
            if intent.limit_price is None or not math.isfinite(intent.limit_price):
                raise BrokerError(f"{intent.order_ref}: a limit order needs a finite limit price")
            order.lmtPrice = self._round_to_tick(intent.instrument, intent.limit_price, intent.quantity > 0)
        return order

    def _round_to_tick(self, symbol: str, price: float, buy: bool) -> float:
        """The limit on the contract's tick grid, never beyond the intended price (a buy rounds
        down, a sell up)."""
        if symbol not in self._min_tick:
            details = self._request(f"contract details of {symbol}", lambda ib: ib.reqContractDetails(self._contracts[symbol]))
            self._min_tick[symbol] = float(details[0].minTick) if details and details[0].minTick else 0.01
        tick = self._min_tick[symbol]
        steps = math.floor(price / tick + 1e-9) if buy else math.ceil(price / tick - 1e-9)
        return round(steps * tick, 10)

    def _pause(self, seconds: float, order_ref: str) -> None:
        """``ib.sleep`` (keeps the socket serviced); a dropped connection is an unknown outcome."""
        ib = self._ib
        try:
            ib.sleep(seconds)
        except ConnectionError:
            pass
        if not ib.isConnected():
            raise BrokerError(
                f"{order_ref}: the connection to {self.where} dropped while waiting for IB's answer; "
                "the outcome is unknown, so nothing is resent: the next run reconciles by orderRef"
            )

    def _wait(self, trade: Trade, order_ref: str) -> None:
        """Wait for the acknowledgement (or a final status), then briefly for fills."""
        cfg = self.config
        deadline = time.monotonic() + cfg.order_timeout
        while trade.orderStatus.status in ("PendingSubmit", "ApiPending", "") and time.monotonic() < deadline:
            self._pause(0.01, order_ref)
        if trade.orderStatus.status in ("PendingSubmit", "ApiPending", ""):
            raise BrokerError(
                f"{order_ref}: no acknowledgement from {self.where} within {cfg.order_timeout:g} s; the "
                "outcome is unknown, so nothing is resent: the next run reconciles by orderRef"
            )
        until = time.monotonic() + (cfg.fill_wait if trade.order.orderType == "MKT" else 0.0)
        while not _done(trade) and time.monotonic() < until:
            self._pause(0.01, order_ref)
        until = time.monotonic() + 1.0  # the commission report (and the execution) follow the status
        while _fills_pending(trade) and time.monotonic() < until:
            self._pause(0.01, order_ref)

    def _fill(self, f: Any, order_ref: str) -> Fill:
        ex = f.execution
        sign = 1.0 if ex.side == "BOT" else -1.0
        known = self._ib.wrapper.fills.get(ex.execId) if self._ib is not None else None
        report = (known or f).commissionReport
        when = pd.Timestamp(ex.time)
        when = when.tz_localize("UTC") if when.tz is None else when.tz_convert("UTC")
        try:
            session = parse_order_ref(order_ref).session
        except OrderError:
            session = when.tz_localize(None).normalize()
        instrument = self._instrument(f.contract) or f.contract.symbol
        return Fill(
            fill_id=ex.execId, order_ref=order_ref, broker=self.name, session=session,
            instrument=instrument, quantity=sign * float(ex.shares),
            price=float(ex.price), commission=float(report.commission or 0.0), slippage_cost=0.0,
            filled_at=when, perm_id=int(ex.permId) or None,
            contract=self._month(f.contract) if instrument in self._rolled else None,
        )  # fmt: skip

    def _from_trade(self, trade: Trade, order_ref: str, fills: Sequence[Any] = ()) -> BrokerOrder:
        """What IB says of ``trade``: its status (never moved back from a final one), the fills
        of its executions (``fills``: those of reqExecutions, merged by execId), the ids.

        An order IB reports Filled or Cancelled with more units filled than its executions show
        is reported PARTIALLY_FILLED, not final: the executions answer is incomplete, so the
        ledger keeps the intent open and the next look-up asks again, rather than closing it
        without the fills the positions show (a break nothing would ever clear) or sizing a
        market fallback from the fills it lacks.
        """
        status = _STATUS.get(_ib_status(trade), "ACKNOWLEDGED")
        codes = [e for e in trade.log if e.errorCode in _REJECT_CODES]
        reason = codes[-1].message if codes else None
        completed = self._completed_status.get(int(trade.order.permId or trade.orderStatus.permId or 0), "")
        if status == "CANCELLED" and not codes and _REJECTED_TEXT in completed.lower():
            reason = completed  # rejected while this client was not listening (e.g. after a reconnect)
        if status == "CANCELLED" and reason is not None:
            status = "REJECTED"
        by_exec = {f.execution.execId: f for f in [*trade.fills, *fills]}
        mine = tuple(self._fill(f, order_ref) for f in by_exec.values())
        sign = 1.0 if trade.order.action == "BUY" else -1.0
        legs = len(trade.contract.comboLegs or ()) if trade.contract.secType == "BAG" else 0
        # a combo fills leg by leg: its filled units are the legs' shares over the number of legs (ratio 1)
        filled = sign * sum(abs(f.quantity) for f in mine) / legs if legs else sum(f.quantity for f in mine)
        if status == "ACKNOWLEDGED" and filled:
            status = "PARTIALLY_FILLED"
        if status in ("FILLED", "CANCELLED") and abs(filled) < _ib_filled(trade) - 1e-9:
            status = "PARTIALLY_FILLED"  # executions missing from the answer: not final yet
        remaining = 0.0 if status in ("FILLED", "CANCELLED", "REJECTED") else sign * float(trade.orderStatus.remaining or 0.0)
        return BrokerOrder(
            order_ref=order_ref, status=status, fills=mine, filled=filled, remaining=remaining,
            perm_id=int(trade.order.permId or trade.orderStatus.permId) or None,
            order_id=int(trade.order.orderId) or None, reason=reason,
        )  # fmt: skip

    def _orders_by_ref(self) -> dict[str, BrokerOrder]:
        """Every order the broker knows, by orderRef: open (all clients), completed, executed."""
        open_trades = self._request("open orders", lambda ib: ib.reqAllOpenOrders())
        completed = self._request("completed orders", lambda ib: ib.reqCompletedOrders(apiOnly=False))
        executions = self._request("executions", lambda ib: ib.reqExecutions())
        executions = list({f.execution.execId: f for f in executions}.values())  # one per execId
        trades: dict[int, Trade] = {}
        for t in [*completed, *open_trades]:  # open last: its live status wins
            if t.order.orderRef and t.order.permId:
                trades[t.order.permId] = t
        fills_by_perm: dict[int, list[Any]] = {}
        for f in executions:
            fills_by_perm.setdefault(f.execution.permId, []).append(f)
        out: dict[str, BrokerOrder] = {}
        perms: dict[str, int] = {}
        for perm, t in trades.items():
            ref = t.order.orderRef
            if ref in perms and perms[ref] != perm:
                raise BrokerError(
                    f"{self.where} holds two orders under orderRef {ref} (permIds {perms[ref]} and {perm}); "
                    "a duplicate submission: stop trading (kill switch HALTED) and resolve it by hand"
                )
            perms[ref] = perm
            out[ref] = self._from_trade(t, ref, fills_by_perm.get(perm, ()))
        for perm, fs in fills_by_perm.items():  # executions whose order is in neither list
            ref = fs[0].execution.orderRef
            if ref and ref not in out:
                mine = tuple(self._fill(f, ref) for f in fs)
                out[ref] = BrokerOrder(ref, "PARTIALLY_FILLED", mine, filled=sum(x.quantity for x in mine), perm_id=perm)
        return out
