"""Instrument configuration -> ib_async contracts, bar types, and qualification with a conId cache.

Mapping (IB contract conventions; reference ib.md section 4 "whatToShow per secType"):

========  ==============================================  ============
sec_type  contract                                        bars
========  ==============================================  ============
STK, ETF  ``Stock(symbol, "SMART", currency)`` (+ primary  TRADES
          exchange when the config names one)
CASH      ``Forex`` on IDEALPRO (``EURUSD``, ``EUR.USD``   MIDPOINT
          or ``EUR`` with currency USD)
FUT       ``ContFuture(symbol, exchange, currency)``       TRADES
IND       ``Index(symbol, exchange, currency)``            TRADES
========  ==============================================  ============

Stocks use TRADES, not ADJUSTED_LAST: IB only serves ADJUSTED_LAST with ``endDateTime=''`` (so a
bounded, incremental range cannot be asked) and re-adjusts its whole history after every dividend
or split, which breaks an append-only raw store; raw TRADES are stored and adjusted downstream.
Forex has no TRADES (IB answers 162), so it uses MIDPOINT.

The ``ContFuture`` is for bars and for mapping positions to the symbol only: orders of a future
with roll parameters go to a dated month (``FUT`` with ``lastTradeDateOrContractMonth``, a ``BAG``
of two for a calendar spread; ``IBBroker._order_contract``), and the broker refuses any order to a
``CONTFUT`` (``refuse_continuous_future``).
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Sequence

from ib_async import IB, ContFuture, Contract, Forex, Index, Stock

from pipeline.adapters.ib.errors import IBUnknownContract, classify_exception
from pipeline.config import Instrument

#: Bar type (IB ``whatToShow``) per configured sec_type.
WHAT_TO_SHOW: dict[str, str] = {
    "STK": "TRADES",
    "ETF": "TRADES",
    "CASH": "MIDPOINT",
    "FUT": "TRADES",
    "IND": "TRADES",
}


def ib_contract(instrument: Instrument) -> Contract:
    """The unqualified ib_async contract for a configured instrument (see the module table).

    Raises
    ------
    IBUnknownContract
        A CASH symbol that is not a currency pair (``EURUSD``, ``EUR.USD``, ``EUR/USD`` or a
        3-letter base currency with ``currency`` as the quote).
    """
    st, sym = instrument.sec_type, instrument.symbol
    if st in ("STK", "ETF"):
        primary = "" if instrument.exchange.upper() == "SMART" else instrument.exchange
        return Stock(sym, "SMART", instrument.currency, primaryExchange=primary)
    if st == "CASH":
        pair = re.sub(r"[./]", "", sym).upper()
        if len(pair) == 3:
            pair += instrument.currency.upper()
        if not re.fullmatch(r"[A-Z]{6}", pair):
            raise IBUnknownContract(
                f"instrument {sym}: a CASH symbol must be a currency pair such as EURUSD or "
                "EUR.USD (or the base currency with `currency` as the quote); fix the config"
            )
        return Forex(pair, exchange="IDEALPRO")
    if st == "FUT":
        return ContFuture(sym, instrument.exchange, currency=instrument.currency)
    if st == "IND":
        return Index(sym, instrument.exchange, instrument.currency)
    raise IBUnknownContract(f"instrument {sym}: sec_type {st!r} has no IB mapping")


def what_to_show(instrument: Instrument) -> str:
    """IB ``whatToShow`` for the daily bars of ``instrument`` (TRADES, or MIDPOINT for CASH)."""
    return WHAT_TO_SHOW[instrument.sec_type]


class ContractCache:
    """Qualified contracts by instrument symbol, so each is looked up at IB once per process.

    Continuous futures are not cached: IB resolves a CONTFUT to the current front month, whose
    conId changes at each roll.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_symbol: dict[str, Contract] = {}

    def get(self, symbol: str) -> Contract | None:
        with self._lock:
            c = self._by_symbol.get(symbol)
            return None if c is None else copy.copy(c)

    def put(self, symbol: str, contract: Contract) -> None:
        if contract.secType == "CONTFUT":
            return
        with self._lock:
            self._by_symbol[symbol] = copy.copy(contract)

    def __len__(self) -> int:
        return len(self._by_symbol)


def qualify(
    ib: IB,
    instruments: Sequence[Instrument],
    cache: ContractCache | None = None,
    before_request: Callable[[Instrument], object] | None = None,
) -> dict[str, Contract]:
    """Qualified contracts (with conId) of ``instruments``, keyed by symbol.

    Parameters
    ----------
    ib : IB
        A connected ib_async client (``RaiseRequestErrors=True`` so IB errors raise).
    instruments : sequence of Instrument
    cache : ContractCache, optional
        Contracts already qualified are taken from it; new ones are added.
    before_request : callable, optional
        Called with each instrument before its contract-details request (pacing hook).

    Raises
    ------
    IBUnknownContract
        IB answered 200, or no / several contracts match (the message names the instrument).
    IBTimeout, IBConnectivityLost, IBRequestFailed
        The request failed otherwise (see :mod:`pipeline.adapters.ib.errors`).
    """
    out: dict[str, Contract] = {}
    for inst in instruments:
        cached = cache.get(inst.symbol) if cache is not None else None
        if cached is not None:
            out[inst.symbol] = cached
            continue
        contract = ib_contract(inst)
        where = f"qualify {inst.symbol} ({inst.sec_type} {inst.exchange} {inst.currency})"
        if before_request is not None:
            before_request(inst)
        try:
            result = ib.qualifyContracts(contract)
        except Exception as exc:  # ib_async raises RequestError / TimeoutError / ConnectionError
            raise classify_exception(exc, where) from exc
        if not result or result[0] is None or not contract.conId:
            raise IBUnknownContract(
                f"{where}: IB found no unique contract; fix symbol, sec_type, exchange or "
                "currency of the instrument in the config"
            )
        out[inst.symbol] = contract
        if cache is not None:
            cache.put(inst.symbol, contract)
    return out
