"""Dated futures at the fake gateway: the months it lists, their expiries, and each month's daily bars.

A :class:`FutureSpec` is one futures instrument as IB lists it (symbol, exchange, multiplier, the
listed month cycle, the settlement and the exchange's last-trading-day rule). From it the fake
builds its **months** (:func:`month_table`): one conId per contract month, the last trading day
(``lastTradeDateOrContractMonth``, also ``realExpirationDate``) and the close-out date (the first
session a position may no longer be held: the business day before the contract month for a
physically delivered future, IB closing out before first notice; the last trading day for a
cash-settled one). Each month's **daily bars** come either from pysystemtrade multiple prices
(:func:`multiple_prices_bars`) or from a deterministic random walk with a term structure
(:func:`generated_bars`). :class:`FuturesListing` answers which months are listed, which have
expired and which the fake still serves at a session.

For rehearsals of rolls, :func:`rehearsal_months` lists an instrument's months around a rehearsal:
on the exchange's own rules, or on a **compressed calendar** where, from the rehearsal's first
session, each next month of the cycle expires ``every`` sessions after the one before (a month
that lives ~10 sessions instead of one to three months), so many rolls pass in few sessions.

Built-in instruments: :data:`MCL` (micro WTI, NYMEX, monthly, cash-settled, multiplier 100),
:data:`GC` (gold, COMEX, GJMQVZ, physically delivered, multiplier 100) and :data:`ES` (E-mini
S&P 500, CME, HMUZ, cash-settled, multiplier 50).

Sessions and business days are those of exchange_calendars' ``CMES`` calendar (CME Globex: it
closes on New Year's Day, Good Friday and Christmas only), so the last trading days are the
exchange rules applied to that calendar, not the exchanges' published expiry calendars.
Sources: CME rulebooks (E-mini S&P 500 ch. 358: trading terminates on the third Friday of the
contract month; COMEX gold ch. 113: on the third last business day of the contract month, first
notice on the last business day of the month before; micro WTI ch. 1250: one business day before
CL, whose trading terminates 3 business days before the 25th calendar day of the month before the
contract month, 4 if the 25th is not a business day); IB's futures close-out rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.adapters.ib.fake_gateway.contract import FakeContract
from pipeline.calendar import non_session_weekdays, sessions

__all__ = [
    "BUILTIN_FUTURES",
    "ES",
    "GC",
    "MCL",
    "MONTH_LETTERS",
    "SERVED_AFTER_EXPIRY",
    "FutureSpec",
    "FuturesListing",
    "FuturesMonth",
    "close_out_days",
    "contract_months",
    "generated_bars",
    "last_trading_days",
    "month_table",
    "multiple_prices_bars",
    "rehearsal_months",
]

#: Futures month codes, January .. December (CME / IB convention).
MONTH_LETTERS = "FGHJKMNQUVXZ"
#: IB serves expired futures (details and history) for about two years after expiry.
SERVED_AFTER_EXPIRY = pd.Timedelta(days=730)
#: Generated prices: the spot walk starts on this session and equals ``FutureSpec.price`` on the
#: anchor session, so a month's bars do not depend on which other months are generated.
WALK_START, WALK_ANCHOR = pd.Timestamp("2000-01-03"), pd.Timestamp("2023-01-03")

LastTradeRule = Literal["third_friday", "third_last_business_day", "micro_wti"]


@dataclass(frozen=True)
class FutureSpec:
    """One futures instrument as the fake lists it.

    ``cycle`` holds the listed months' letters (``F``..``Z``); ``listed`` is how many of the next
    unexpired months are listed at any session. ``price``, ``daily_vol`` (of log prices, per
    session), ``carry`` (annual log basis: a month expiring ``tau`` years after a session is priced
    ``exp(carry * tau)`` times the spot) and ``history_days`` (calendar days of bars before a
    month's last trading day) shape the generated bars only.
    """

    symbol: str
    exchange: str
    currency: str
    multiplier: float
    cycle: str
    settlement: Literal["cash", "physical"]
    last_trade_rule: LastTradeRule
    long_name: str = ""
    min_tick: float = 0.01
    time_zone: str = "America/Chicago"
    listed: int = 6
    calendar: str = "CMES"
    price: float = 100.0
    daily_vol: float = 0.01
    carry: float = 0.0
    history_days: int = 400

    def __post_init__(self) -> None:
        bad = sorted(set(self.cycle) - set(MONTH_LETTERS))
        if not self.cycle or bad:
            raise ValueError(f"{self.symbol}: cycle {self.cycle!r} must be month letters of {MONTH_LETTERS}")
        if self.settlement not in ("cash", "physical"):
            raise ValueError(f"{self.symbol}: settlement must be cash or physical, not {self.settlement!r}")


MCL = FutureSpec(
    "MCL", "NYMEX", "USD", 100, MONTH_LETTERS, "cash", "micro_wti", long_name="Micro WTI Crude Oil",
    listed=12, price=75.0, daily_vol=0.02, carry=-0.06,
)  # fmt: skip
GC = FutureSpec(
    "GC", "COMEX", "USD", 100, "GJMQVZ", "physical", "third_last_business_day", long_name="Gold",
    min_tick=0.1, listed=6, price=1900.0, daily_vol=0.01, carry=0.05,
)  # fmt: skip
ES = FutureSpec(
    "ES", "CME", "USD", 50, "HMUZ", "cash", "third_friday", long_name="E-mini S&P 500",
    min_tick=0.25, listed=4, price=4500.0, daily_vol=0.012, carry=0.01,
)  # fmt: skip
#: The built-in instruments by IB symbol.
BUILTIN_FUTURES = {s.symbol: s for s in (MCL, GC, ES)}


@lru_cache(maxsize=4)
def _business_days(code: str) -> np.busdaycalendar:
    """Weekdays less the exchange's non-session weekdays (holidays)."""
    return np.busdaycalendar(holidays=np.array(non_session_weekdays("1990-01-01", code), dtype="datetime64[D]"))


def _month_starts(months: Iterable[str]) -> np.ndarray:
    labels = [str(m) for m in months]
    bad = [m for m in labels if len(m) != 6 or not m.isdigit() or not 1 <= int(m[4:]) <= 12]
    if bad:
        raise ValueError(f"contract months must be YYYYMM, got {bad[:3]}")
    return pd.to_datetime(labels, format="%Y%m").values.astype("datetime64[D]")


def contract_months(spec: FutureSpec, first: str, last: str) -> list[str]:
    """The contract months (``YYYYMM``) of ``spec``'s cycle from month ``first`` to ``last`` (inclusive,
    ``YYYY-MM`` or ``YYYYMM``): ``contract_months(ES, "2023-01", "2023-12")`` -> 202303, 202306, 202309, 202312."""
    periods = pd.period_range(pd.Period(first, "M"), pd.Period(last, "M"), freq="M")
    wanted = [MONTH_LETTERS.index(letter) + 1 for letter in spec.cycle]
    return [p.strftime("%Y%m") for p in periods[np.isin(periods.month, wanted)]]


def last_trading_days(spec: FutureSpec, months: Sequence[str]) -> pd.DatetimeIndex:
    """The last trading day of each contract month of ``spec`` (exchange rule on the CMES business days).

    ``third_friday``: the contract month's third Friday, moved back to a business day;
    ``third_last_business_day``: the third last business day of the contract month;
    ``micro_wti``: 4 business days before the 25th of the month before the contract month (5 if the
    25th is not a business day): one business day before CL. Raises ValueError for a month not ``YYYYMM``.
    """
    start = _month_starts(months)
    cal = _business_days(spec.calendar)
    if spec.last_trade_rule == "third_friday":
        friday = np.busday_offset(start, 2, roll="forward", weekmask="Fri")
        out = np.busday_offset(friday, 0, roll="backward", busdaycal=cal)
    elif spec.last_trade_rule == "third_last_business_day":
        next_month = (start.astype("datetime64[M]") + 1).astype("datetime64[D]")
        out = np.busday_offset(next_month, -3, roll="forward", busdaycal=cal)
    else:  # micro_wti: "roll backward" counts a 25th that is no business day as one day further back
        the_25th = (start.astype("datetime64[M]") - 1).astype("datetime64[D]") + 24
        out = np.busday_offset(the_25th, -4, roll="backward", busdaycal=cal)
    return pd.DatetimeIndex(out.astype("datetime64[ns]"))


def close_out_days(spec: FutureSpec, months: Sequence[str], last_trade: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The first session a position in each month may no longer be held: cash-settled, its last
    trading day; physically delivered, the business day before the contract month's first business
    day (first notice day; IB closes positions out before it), never after the last trading day."""
    if spec.settlement == "cash":
        return pd.DatetimeIndex(last_trade)
    cal = _business_days(spec.calendar)
    first_business = np.busday_offset(_month_starts(months), 0, roll="forward", busdaycal=cal)
    notice = np.busday_offset(first_business, -1, busdaycal=cal).astype("datetime64[ns]")
    return pd.DatetimeIndex(np.minimum(notice, last_trade.values.astype("datetime64[ns]")))


def _con_id(spec: FutureSpec, month: str) -> int:
    """A stable made-up conId per (symbol, exchange, month), in IB's range of nine digits."""
    digest = hashlib.sha256(f"{spec.symbol}:{spec.exchange}:{month}".encode()).hexdigest()
    return 100_000_000 + int(digest[:8], 16) % 800_000_000


def month_table(spec: FutureSpec, months: Sequence[str]) -> pd.DataFrame:
    """One row per contract month of ``spec``: columns ``contract`` (``YYYYMM``), ``con_id``,
    ``local_symbol`` (``ESH4``), ``last_trade`` and ``close_out`` (datetime64), sorted by last trade."""
    months = sorted({str(m) for m in months})
    last_trade = last_trading_days(spec, months)
    year_digit = [m[3] for m in months]
    letters = [MONTH_LETTERS[int(m[4:]) - 1] for m in months]
    return pd.DataFrame({
        "contract": months,
        "con_id": [_con_id(spec, m) for m in months],
        "local_symbol": [f"{spec.symbol}{letter}{y}" for letter, y in zip(letters, year_digit, strict=True)],
        "last_trade": last_trade,
        "close_out": close_out_days(spec, months, last_trade),
    }).sort_values("last_trade", ignore_index=True)  # fmt: skip


def rehearsal_months(spec: FutureSpec, history_start: object, start: object, end: object,
                     every: int | None = None, close_out_lead: int = 2) -> pd.DataFrame:
    """The months of ``spec`` a rehearsal from session ``start`` to ``end`` lists: a :func:`month_table`.

    Months on the exchange's rules (``last_trade``, ``close_out``) are those expiring from
    ``history_start`` on. Without ``every`` they run to a year past ``end``. With ``every`` (the
    compressed calendar) they stop at the last month expiring before ``start``; the next months of
    the cycle then expire every ``every`` sessions (of ``spec.calendar``) from ``start`` (the
    first on the ``every``-th session after it), as many as cover ``end`` plus ``spec.listed``,
    and a physically delivered one closes out ``close_out_lead`` sessions before its last trading
    day (cash-settled: on it).

    Raises
    ------
    ValueError
        ``every`` or ``close_out_lead`` not positive (``every`` must exceed ``close_out_lead``),
        or dates outside the calendar.
    """
    first, begin, finish = pd.Timestamp(history_start), pd.Timestamp(start), pd.Timestamp(end)
    if every is None:
        months = contract_months(spec, first.strftime("%Y-%m"), (finish + pd.DateOffset(years=1)).strftime("%Y-%m"))
        table = month_table(spec, months)
        return table[table["last_trade"] >= first].reset_index(drop=True)
    if every < 1 or close_out_lead < 1 or every <= close_out_lead:
        raise ValueError(f"{spec.symbol}: a compressed calendar needs every > close_out_lead >= 1 "
                         f"(got every={every}, close_out_lead={close_out_lead})")
    real = month_table(spec, contract_months(spec, first.strftime("%Y-%m"), (begin + pd.DateOffset(years=1)).strftime("%Y-%m")))
    real = real[(real["last_trade"] >= first) & (real["last_trade"] < begin)]
    days = sessions(begin, finish + pd.Timedelta(days=10 * every + 400), spec.calendar)
    count = int(np.ceil(len(days[days <= finish]) / every)) + spec.listed
    after = (real["contract"].iloc[-1] if len(real) else (begin - pd.DateOffset(months=1)).strftime("%Y%m"))
    cycle = contract_months(spec, (pd.Period(after, "M") + 1).strftime("%Y-%m"),
                            (pd.Period(after, "M") + 12 * (count // len(spec.cycle) + 2)).strftime("%Y-%m"))[:count]
    position = np.arange(1, len(cycle) + 1) * every
    last_trade = days[position]
    close_out = days[position - close_out_lead] if spec.settlement == "physical" else last_trade
    compressed = pd.DataFrame({
        "contract": cycle, "con_id": [_con_id(spec, m) for m in cycle],
        "local_symbol": month_table(spec, cycle)["local_symbol"].to_numpy(),
        "last_trade": pd.DatetimeIndex(last_trade), "close_out": pd.DatetimeIndex(close_out),
    })  # fmt: skip
    return pd.concat([real, compressed], ignore_index=True)


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _ticks(x: np.ndarray, tick: float) -> np.ndarray:
    """Prices on the tick grid, as the shortest floats (``4512.25``, not ``4512.250000000001``)."""
    return np.round(np.round(x / tick) * tick, 10)


def generated_bars(spec: FutureSpec, months: pd.DataFrame) -> pd.DataFrame:
    """Daily bars of each month of ``months`` (a :func:`month_table`): a deterministic random walk
    with a term structure.

    A spot walk ``S_t = price * exp(W_t - W_anchor)``, ``W`` the cumulated ``N(0, daily_vol)`` draws
    over the CMES sessions from :data:`WALK_START` (seeded by the symbol; ``S`` equals ``price`` on
    :data:`WALK_ANCHOR`); month ``m`` closes at ``S_t * exp(carry * tau + e_mt)`` with ``tau`` the
    years to its last trading day and ``e_mt`` its own noise (``N(0, daily_vol / 10)``, seeded by
    the month), on the tick grid, from ``history_days`` before its last trading day to that day.
    Open is the previous close; high and low add half a daily move around open and close; volume
    falls with ``tau``. A month's bars depend only on ``spec`` and the month.

    Returns
    -------
    pd.DataFrame
        Columns ``con_id, session, open, high, low, close, volume`` (prices in price points).

    Raises
    ------
    ValueError
        A month whose history would start before :data:`WALK_START`.
    """
    first = months["last_trade"].min() - pd.Timedelta(days=spec.history_days)
    if first < WALK_START:
        raise ValueError(f"{spec.symbol}: generated bars start on {WALK_START.date()}; the first month's "
                         f"history would start on {first.date()}")
    days = sessions(WALK_START, max(months["last_trade"].max(), WALK_ANCHOR), spec.calendar)
    rng = np.random.default_rng(_seed(spec.symbol, spec.exchange))
    walk = pd.Series(np.cumsum(rng.normal(0.0, spec.daily_vol, len(days))), index=days)
    spot = spec.price * np.exp(walk - walk.asof(WALK_ANCHOR))
    frames = []
    for m in months.itertuples(index=False):  # one frame per contract month (tens), not per row
        own = days[(days > m.last_trade - pd.Timedelta(days=spec.history_days)) & (days <= m.last_trade)]
        draws = np.random.default_rng(_seed(spec.symbol, m.contract)).normal(0.0, 1.0, (3, len(own)))
        frames.append(pd.DataFrame({"con_id": m.con_id, "session": own,
                                    "tau": (m.last_trade - own).days.to_numpy() / 365.25,
                                    "walk": draws[0] * spec.daily_vol / 10,
                                    "up": np.abs(draws[1]) * spec.daily_vol / 2,
                                    "down": np.abs(draws[2]) * spec.daily_vol / 2}))
    bars = pd.concat(frames, ignore_index=True)
    raw = spot.reindex(bars["session"]).to_numpy() * np.exp(spec.carry * bars["tau"] + bars["walk"])
    close = _ticks(raw.to_numpy(), spec.min_tick)
    opened = bars.assign(close=close).groupby("con_id")["close"].shift(1).fillna(pd.Series(close)).to_numpy()
    return pd.DataFrame({
        "con_id": bars["con_id"].to_numpy(),
        "session": bars["session"].to_numpy(),
        "open": opened,
        "high": _ticks(np.maximum(opened, close) * (1 + bars["up"].to_numpy()), spec.min_tick),
        "low": _ticks(np.minimum(opened, close) * (1 - bars["down"].to_numpy()), spec.min_tick),
        "close": close,
        "volume": np.round(20_000 * np.exp(-4 * bars["tau"].to_numpy())),
    })  # fmt: skip


def multiple_prices_bars(multiple: pd.DataFrame) -> pd.DataFrame:
    """Daily bars of each contract in pysystemtrade multiple prices.

    A contract's series is the ``PRICE`` column while it is the priced contract, ``FORWARD`` while
    it is the forward and ``CARRY`` while it is the carry contract (on a day it holds two roles, the
    first of that order); blank prices are no bar. Reference: pysystemtrade
    ``sysobjects/multiple_prices.py`` (the columns), ``sysinit/futures/`` (how they are built).

    Parameters
    ----------
    multiple : pd.DataFrame
        As :func:`pipeline.futures.read_multiple_prices` returns it: a DatetimeIndex (a time of day
        is dropped) and ``PRICE, PRICE_CONTRACT``, optional ``FORWARD, FORWARD_CONTRACT, CARRY,
        CARRY_CONTRACT``; contracts ``YYYYMMDD`` integers with ``DD = 00`` (monthly) or ``YYYYMM``.

    Returns
    -------
    pd.DataFrame
        Columns ``contract`` (``YYYYMM``), ``session``, ``open, high, low, close`` (all the close:
        multiple prices hold one price a day), ``volume`` (0), ``role`` (PRICE / FORWARD / CARRY),
        sorted by contract and session.

    Raises
    ------
    ValueError
        No ``PRICE`` / ``PRICE_CONTRACT`` column, or a contract id that is neither ``YYYYMM`` nor
        ``YYYYMM00`` (weekly contracts are not served).
    """
    if not {"PRICE", "PRICE_CONTRACT"} <= set(multiple.columns):
        raise ValueError(f"multiple prices need PRICE and PRICE_CONTRACT columns, got {list(multiple.columns)}")
    session = pd.DatetimeIndex(multiple.index).normalize()
    roles = [r for r in ("PRICE", "FORWARD", "CARRY") if {r, f"{r}_CONTRACT"} <= set(multiple.columns)]
    long = pd.concat(
        [pd.DataFrame({"session": session, "contract": pd.to_numeric(multiple[f"{r}_CONTRACT"]).astype("Float64"),
                       "close": pd.to_numeric(multiple[r]).astype(float), "rank": i, "role": r})
         for i, r in enumerate(roles)],
        ignore_index=True,
    ).dropna(subset=["contract", "close"])
    number = long["contract"].astype("int64")
    number = np.where(number < 1_000_000, number * 100, number)  # YYYYMM -> YYYYMM00
    if (number % 100 != 0).any():
        bad = int(number[number % 100 != 0][0])
        raise ValueError(f"multiple prices: contract {bad} has a day; only monthly contracts (YYYYMM00) are served")
    long["contract"] = (number // 100).astype(str)
    long = long.sort_values(["contract", "session", "rank"]).drop_duplicates(["contract", "session"])
    close = long["close"].to_numpy()
    return pd.DataFrame({
        "contract": long["contract"].to_numpy(), "session": long["session"].to_numpy(),
        "open": close, "high": close, "low": close, "close": close, "volume": 0.0, "role": long["role"].to_numpy(),
    })  # fmt: skip


@dataclass(frozen=True)
class FuturesMonth:
    """One listed contract month: its instrument, ``contract`` (``YYYYMM``), conId, last trading day
    and close-out date (midnight timestamps)."""

    spec: FutureSpec
    contract: str
    con_id: int
    local_symbol: str
    last_trade: pd.Timestamp
    close_out: pd.Timestamp

    def fake_contract(self) -> FakeContract:
        """The month as the fake's contract details answer it (``secType`` FUT)."""
        s = self.spec
        return FakeContract(
            s.symbol, "FUT", s.exchange, s.currency, self.con_id, local_symbol=self.local_symbol,
            trading_class=s.symbol, multiplier=f"{s.multiplier:g}", last_trade=self.last_trade.strftime("%Y%m%d"),
            long_name=s.long_name or s.symbol, time_zone=s.time_zone, min_tick=s.min_tick,
            contract_month=self.contract, real_expiration=self.last_trade.strftime("%Y%m%d"),
        )  # fmt: skip


class FuturesListing:
    """The dated futures months the fake knows, and which of them a session lists or still serves."""

    def __init__(self) -> None:
        self.months: dict[int, FuturesMonth] = {}

    def add(self, spec: FutureSpec, table: pd.DataFrame) -> list[FuturesMonth]:
        """Register the months of ``table`` (a :func:`month_table` of ``spec``); returns them."""
        added = [
            FuturesMonth(spec, r.contract, int(r.con_id), r.local_symbol, pd.Timestamp(r.last_trade),
                         pd.Timestamp(r.close_out))
            for r in table.itertuples(index=False)
        ]  # fmt: skip
        self.months.update({m.con_id: m for m in added})
        return added

    def get(self, con_id: int) -> FuturesMonth | None:
        return self.months.get(con_id)

    def of(self, symbol: str) -> list[FuturesMonth]:
        """The months of ``symbol``, by last trading day."""
        return sorted((m for m in self.months.values() if m.spec.symbol == symbol), key=lambda m: m.last_trade)

    def visible(self, con_id: int, session: pd.Timestamp, include_expired: bool) -> bool:
        """Whether the fake answers for month ``con_id`` at ``session``: a listed month (one of the
        next ``listed`` unexpired months of its instrument), or with ``include_expired`` a month
        whose last trading day passed less than two years ago. Contracts not registered here: True."""
        m = self.months.get(con_id)
        if m is None:
            return True
        if m.last_trade < session:
            return include_expired and session - m.last_trade <= SERVED_AFTER_EXPIRY
        live = [x.con_id for x in self.of(m.spec.symbol) if x.last_trade >= session]
        return con_id in live[: m.spec.listed]

    def front(self, symbol: str, session: pd.Timestamp) -> FuturesMonth | None:
        """The nearest unexpired month of ``symbol`` at ``session`` (what a CONTFUT resolves to)."""
        return next((m for m in self.of(symbol) if m.last_trade >= session), None)

    def expired(self, session: pd.Timestamp) -> list[FuturesMonth]:
        """The months whose last trading day is before ``session``."""
        return [m for m in self.months.values() if m.last_trade < session]
