"""What the fake gateway knows about one contract: the fields its contract details and bars answer with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeContract:
    """A contract the fake knows. ``sec_type`` is IB's (STK, CASH, FUT, CONTFUT, IND).

    For a dated future (``FUT``), ``last_trade`` is the last trading day (``YYYYMMDD``),
    ``contract_month`` the contract month (``YYYYMM``; it may differ from the last trading day's
    month: micro WTI's December contract stops trading in November) and ``real_expiration`` the
    expiry date (``YYYYMMDD``); both default to what ``last_trade`` implies.
    """

    symbol: str
    sec_type: str
    exchange: str
    currency: str
    con_id: int
    local_symbol: str = ""
    primary_exchange: str = ""
    trading_class: str = ""
    multiplier: str = ""
    last_trade: str = ""
    long_name: str = ""
    #: IANA zone of the exchange; the fake converts endDateTime to this zone's date.
    time_zone: str = "America/New_York"
    min_tick: float = 0.01
    contract_month: str = ""
    real_expiration: str = ""

    @property
    def month(self) -> str:
        """The contract month ``YYYYMM`` (``contract_month``, else the last trading day's month)."""
        return self.contract_month or self.last_trade[:6]

    @property
    def expiration(self) -> str:
        """The expiry ``YYYYMMDD`` (``real_expiration``, else the last trading day)."""
        return self.real_expiration or self.last_trade

    def fields(self) -> list[str]:
        """The 12 contract fields of the wire (conId, symbol, secType, lastTradeDateOrContractMonth,
        strike, right, multiplier, exchange, primaryExchange, currency, localSymbol, tradingClass)."""
        return [
            str(self.con_id), self.symbol, self.sec_type, self.last_trade, "0", "", self.multiplier,
            self.exchange, self.primary_exchange, self.currency, self.local_symbol or self.symbol, self.trading_class,
        ]  # fmt: skip
