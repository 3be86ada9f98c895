"""Interactive Brokers (TWS / IB Gateway through ib_async) as a source of raw daily bars.

One :class:`IBSource.fetch` opens one read-only API session with its own client id, qualifies the
contracts (conIds cached for the process), asks IB for exactly the sessions requested, in chunks
of at most one year, under the shared pacing budget of :mod:`pipeline.adapters.ib.pacing`, and always
disconnects. Failures are typed (:mod:`pipeline.adapters.ib.errors`): an empty answer is
:class:`~pipeline.adapters.ib.errors.IBNoData`, never "no bars"; a pacing violation is retried with
back-off a bounded number of times; a silent server ends in
:class:`~pipeline.adapters.ib.errors.IBTimeout` after the configured timeout.

A daily bar of a session that is still open is partial (IB reference notes, section 4): it is
dropped, so ingestion never stores it; the next fetch after the close gets the final bar.

Futures: the bars of an instrument (``fetch``) are those of its continuous future (front months, not
adjusted); :meth:`IBSource.contract_prices` serves the daily bars of each dated contract month
(``FUT`` with ``lastTradeDateOrContractMonth``, expired months with ``includeExpired``), from
which :mod:`pipeline.futures.from_contracts` builds pysystemtrade's multiple prices.

IB's pacing rules hold per TWS / Gateway login: every source of the process shares one budget,
except for a gateway given its own with :func:`gateway_pacing` (a rehearsal's fake gateway, whose
sessions pass in fast forward, paces on its own clock).

Use from synchronous code in a thread without a running event loop (a Dagster sync asset, the
CLI); ib_async's sync API cannot run inside a running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import pandas as pd
from ib_async import IB, Contract, Future

from pipeline.adapters.ib.contracts import ContractCache, qualify, what_to_show
from pipeline.adapters.ib.errors import (
    IBConnectivityLost,
    IBError,
    IBNoData,
    IBPacingViolation,
    IBTimeout,
    classify_exception,
)
from pipeline.adapters.ib.pacing import HistoricalRequest, PacingBudget, shared_budget
from pipeline.bars import (
    SourceError,
    as_fetched_at,
    check_range,
    conform_bars,
    empty_bars,
    unknown_instruments_error,
    utc_now,
)
from pipeline.calendar import exchange_calendar, exchange_timezone
from pipeline.config import IBConnection, Instrument

#: Longest span of one historical request: IB documents "1 Y" of daily bars as a valid request
#: and answers it with predictable latency; longer ranges are split.
MAX_CHUNK_DAYS = 365
#: Error codes after which the link to IB is down until one of RESTORED_CODES arrives.
_LOST_CODES = frozenset({1100, 2110})
_RESTORED_CODES = frozenset({1101, 1102})
#: Columns of :meth:`IBSource.contract_prices`.
CONTRACT_PRICE_COLUMNS = ("instrument", "contract", "con_id", "last_trade", "session", "open", "high", "low",
                          "close", "volume")
#: Pacing budgets of particular gateways, by (host, port); see :func:`gateway_pacing`.
_GATEWAY_BUDGETS: dict[tuple[str, int], PacingBudget] = {}


@contextlib.contextmanager
def gateway_pacing(host: str, port: int, budget: PacingBudget) -> Iterator[PacingBudget]:
    """Within the block, IB sources connecting to ``host:port`` pace their historical requests on
    ``budget`` instead of the process-wide one (IB counts pacing per login, so another gateway is
    another budget). A rehearsal passes a budget whose clock moves a day per session it plays."""
    key = (host, int(port))
    _GATEWAY_BUDGETS[key] = budget
    try:
        yield budget
    finally:
        _GATEWAY_BUDGETS.pop(key, None)


def _budget_of(connection: IBConnection) -> PacingBudget:
    """The pacing budget of the gateway ``connection`` names (:func:`gateway_pacing`), else the shared one."""
    return _GATEWAY_BUDGETS.get((connection.host, int(connection.port))) or shared_budget()


class IBSource:
    """Raw daily bars from Interactive Brokers; implements :class:`~pipeline.bars.BarSource`.

    Parameters
    ----------
    instruments : list of Instrument
        The configured universe; ``fetch`` accepts only these symbols.
    connection : IBConnection
    pacing : PacingBudget, optional
        Default: the process-wide :func:`~pipeline.adapters.ib.pacing.shared_budget`.
    cache : ContractCache, optional
        Qualified contracts; default a cache private to this source.
    clock : callable
        Current UTC time (decides which session is still open and stamps ``fetched_at``).
    sleep : callable, optional
        Used for pacing waits and back-off; default ``IB.sleep`` (keeps the socket serviced).
    ib_factory : callable
        Builds the ib_async client (tests pass one that keeps a reference to it).
    """

    name = "ib"

    def __init__(
        self,
        instruments: Sequence[Instrument],
        connection: IBConnection,
        *,
        pacing: PacingBudget | None = None,
        cache: ContractCache | None = None,
        clock: Callable[[], pd.Timestamp] = utc_now,
        sleep: Callable[[float], object] | None = None,
        ib_factory: Callable[[], IB] = IB,
    ):
        self.instruments = {i.symbol: i for i in instruments}
        self.connection = connection
        self._pacing = pacing if pacing is not None else _budget_of(connection)
        self._cache = cache if cache is not None else ContractCache()
        self._clock = clock
        self._sleep = sleep
        self._ib_factory = ib_factory

    # -- BarSource ------------------------------------------------------------------------------

    def fetch(self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Raw daily bars of ``instruments`` for sessions in ``[start, end]``; see ``BarSource``.

        Returns
        -------
        DataFrame
            :data:`~pipeline.bars.BAR_COLUMNS`; prices in IB's price points, volume as
            IB reports it (NaN for MIDPOINT bars, where IB sends -1); ``source`` is
            ``"ib:<whatToShow>"``. A bar of today's session is left out while the session is
            open. Empty only when every bar IB returned was such an open-session bar.

        Raises
        ------
        SourceError
            Unknown symbol or ``start`` after ``end``.
        IBNoData
            IB answered with no bars in the range (162 "no data", or an empty list).
        IBUnknownContract, IBPacingViolation, IBConnectivityLost, IBTimeout, IBRequestFailed
            See :mod:`pipeline.adapters.ib.errors`; the session is disconnected in every case.
        """
        s, e = check_range(start, end)
        insts = self._resolve(instruments)
        now = as_fetched_at(self._clock())
        frames: list[pd.DataFrame] = []
        with self._session() as (ib, link):
            contracts = qualify(ib, insts, self._cache)
            for inst in insts:
                frames.append(
                    self._instrument_bars(ib, link, inst, contracts[inst.symbol], s, e, now)
                )
        frames = [f for f in frames if not f.empty]
        if not frames:
            return empty_bars()
        return conform_bars(pd.concat(frames, ignore_index=True), fetched_at=now)

    def last_session(self, instruments: Sequence[str]) -> pd.Timestamp | None:
        """Latest closed session with a bar for ANY of ``instruments`` (looks back 14 days).

        Instruments without bars in the last 14 days do not count; None if none has any.

        Raises
        ------
        SourceError, IBError
            As :meth:`fetch`, except that "no data" for an instrument is not an error here.
        """
        insts = self._resolve(instruments)
        now = as_fetched_at(self._clock())
        latest: pd.Timestamp | None = None
        with self._session() as (ib, link):
            contracts = qualify(ib, insts, self._cache)
            for inst in insts:
                today = _local_date(now, inst)
                try:
                    bars = self._instrument_bars(
                        ib, link, inst, contracts[inst.symbol], today - pd.Timedelta(days=14), today, now
                    )
                except IBNoData:
                    continue
                if not bars.empty:
                    last = pd.Timestamp(bars["session"].max())
                    latest = last if latest is None else max(latest, last)
        return latest

    def contract_prices(self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Daily bars of every dated contract month of the futures ``instruments`` in ``[start, end]``.

        The months come from IB's contract details of the future (``includeExpired``: months that
        expired in the last two years too); each month whose bars can fall in the range is asked for
        at most a year of bars up to its last trading day (one request a month; a forward or carry
        contract is priced within a year of its expiry). A month with no bar in its range is left out.

        Returns
        -------
        DataFrame
            :data:`CONTRACT_PRICE_COLUMNS`: ``contract`` the month ``YYYYMM`` (str), ``con_id``,
            ``last_trade`` (datetime64, the month's last trading day), ``session`` and the bar
            (prices in IB's price points, volume NaN where IB has none); sorted by instrument,
            contract and session.

        Raises
        ------
        SourceError
            Unknown symbol, an instrument that is not a future (``sec_type: FUT``), or ``start`` after ``end``.
        IBUnknownContract, IBPacingViolation, IBConnectivityLost, IBTimeout, IBRequestFailed
            As :meth:`fetch`.
        """
        s, e = check_range(start, end)
        insts = self._resolve(instruments)
        not_futures = [i.symbol for i in insts if i.sec_type != "FUT"]
        if not_futures:
            raise SourceError(f"contract prices: {not_futures} are not futures (sec_type FUT); only futures have "
                              "dated contract months")
        now = as_fetched_at(self._clock())
        frames: list[pd.DataFrame] = []
        with self._session() as (ib, link):
            for inst in insts:  # a handful of futures, a few dozen months each
                for contract, month, last_trade in self._months(ib, inst):
                    first, last = max(s, last_trade - pd.Timedelta(days=MAX_CHUNK_DAYS - 1)), min(e, last_trade)
                    if first > last:
                        continue
                    try:
                        bars = self._instrument_bars(ib, link, inst, contract, first, last, now)
                    except IBNoData:
                        continue
                    frames.append(bars.drop(columns=["source"]).assign(
                        contract=month, con_id=int(contract.conId), last_trade=last_trade))
        if not frames:
            return pd.DataFrame(columns=list(CONTRACT_PRICE_COLUMNS))
        out = pd.concat(frames, ignore_index=True)[list(CONTRACT_PRICE_COLUMNS)]
        return out.sort_values(["instrument", "contract", "session"], ignore_index=True)

    def _months(self, ib: IB, inst: Instrument) -> list[tuple[Contract, str, pd.Timestamp]]:
        """``(contract, YYYYMM, last trading day)`` of every month IB lists for the future ``inst``,
        expired ones included; each contract keeps ``includeExpired`` for its history requests."""
        cfg = self.connection
        where = f"contract months of {inst.symbol} ({inst.exchange} {inst.currency})"
        try:
            details = ib.reqContractDetails(Future(inst.symbol, exchange=inst.exchange, currency=inst.currency,
                                                   includeExpired=True))
        except Exception as exc:
            raise classify_exception(exc, where, cfg.timeout) from exc
        out = []
        for d in details:  # one per month
            c = d.contract
            c.includeExpired = True  # details answer without it; an expired month's history needs it
            month = (d.contractMonth or c.lastTradeDateOrContractMonth)[:6]
            out.append((c, month, pd.Timestamp(c.lastTradeDateOrContractMonth[:8]).normalize()))
        return out

    # -- internals ------------------------------------------------------------------------------

    def _resolve(self, symbols: Sequence[str]) -> list[Instrument]:
        wanted = list(dict.fromkeys(symbols))
        missing = [s for s in wanted if s not in self.instruments]
        if missing:
            raise unknown_instruments_error(self.name, missing, sorted(self.instruments))
        return [self.instruments[s] for s in wanted]

    @contextlib.contextmanager
    def _session(self) -> Iterator[tuple[IB, _LinkWatch]]:
        cfg = self.connection
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no running loop: the sync API of ib_async can run its own
        else:
            raise IBError(
                "IBSource uses ib_async's synchronous API, which cannot run inside a running "
                "event loop (an async Dagster asset, a notebook); call it from a sync asset or "
                "from a worker thread"
            )
        ib = self._ib_factory()
        ib.RaiseRequestErrors = True  # an IB error must raise, not look like an empty answer
        ib.RequestTimeout = cfg.timeout  # bounds every sync call
        link = _LinkWatch()
        ib.errorEvent += link
        where = f"IB at {cfg.host}:{cfg.port} (client id {cfg.client_id})"
        try:
            try:
                ib.connect(
                    cfg.host,
                    cfg.port,
                    clientId=cfg.client_id,
                    timeout=cfg.timeout,
                    readonly=True,
                    account=cfg.account or "",
                    raiseSyncErrors=True,
                )
            except Exception as exc:
                raise classify_exception(exc, f"connect to {where}", cfg.timeout) from exc
            if cfg.account and cfg.account not in ib.managedAccounts():
                raise IBError(
                    f"{where}: account {cfg.account} is not managed by this login (it manages "
                    f"{', '.join(ib.managedAccounts())}); fix source.ib.account"
                )
            yield ib, link
        finally:
            ib.errorEvent -= link
            ib.disconnect()

    def _instrument_bars(
        self,
        ib: IB,
        link: _LinkWatch,
        inst: Instrument,
        contract: Contract,
        start: pd.Timestamp,
        end: pd.Timestamp,
        now: pd.Timestamp,
    ) -> pd.DataFrame:
        what = what_to_show(inst)
        today = _local_date(now, inst)
        if start > today:
            raise IBNoData(
                f"historical bars of {inst.symbol}: range {start.date()}..{end.date()} starts after "
                f"today ({today.date()} on {inst.calendar}); there is nothing to ask IB for"
            )
        end = min(end, today)
        frames = []
        for chunk_start, chunk_end, end_text, duration in _requests(inst, contract, start, end, now):
            bars = self._request(ib, link, inst, contract, what, end_text, duration)
            # IB may pad a request with earlier sessions; chunks must not overlap.
            frames.append(bars[(bars["session"] >= chunk_start) & (bars["session"] <= chunk_end)])
        out = pd.concat(frames, ignore_index=True)
        if out.empty:
            raise IBNoData(
                f"historical bars of {inst.symbol} ({what}): IB returned no bar in "
                f"{start.date()}..{end.date()}; check the range (sessions of {inst.calendar}) "
                "and the market-data permissions"
            )
        out = out[~_open_session(out["session"], now, inst)].reset_index(drop=True)
        out.insert(1, "instrument", inst.symbol)
        out["source"] = f"ib:{what}"
        return out

    def _request(
        self,
        ib: IB,
        link: _LinkWatch,
        inst: Instrument,
        contract: Contract,
        what: str,
        end_text: str,
        duration: str,
    ) -> pd.DataFrame:
        cfg = self.connection
        sleep = self._sleep or ib.sleep
        where = f"historical bars of {inst.symbol} ({what}, {duration} to {end_text or 'now'})"
        key = HistoricalRequest(
            contract=contract.conId or inst.symbol,
            exchange=contract.exchange,
            what_to_show=what,
            detail=(end_text, duration, "1 day", True),
        )
        for attempt in range(1, cfg.pacing_retries + 1):
            self._pacing.acquire(key, sleep=sleep)
            try:
                # timeout=0: ib_async's own timeout would return [] silently; RequestTimeout raises.
                bars = ib.reqHistoricalData(
                    contract,
                    endDateTime=end_text,
                    durationStr=duration,
                    barSizeSetting="1 day",
                    whatToShow=what,
                    useRTH=True,
                    formatDate=1,
                    timeout=0,
                )
            except Exception as exc:
                err = classify_exception(exc, where, cfg.timeout)
                if isinstance(err, IBTimeout) and link.down:
                    err = IBConnectivityLost(
                        f"{where}: TWS lost connectivity to IB (1100) and the request got no "
                        f"answer within {cfg.timeout:g} s; retry after connectivity is restored"
                    )
                if isinstance(err, IBPacingViolation):
                    if attempt < cfg.pacing_retries:
                        sleep(cfg.pacing_backoff * 2 ** (attempt - 1))
                        continue
                    err = IBPacingViolation(
                        f"{where}: still refused for pacing after {cfg.pacing_retries} tries "
                        f"(back-off from {cfg.pacing_backoff:g} s); fewer instruments per run or "
                        "fewer concurrent IB steps",
                        err.code,
                    )
                raise err from exc
            if not bars:
                raise IBNoData(f"{where}: IB answered with an empty bar list")
            return _bars_frame(bars)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


class _LinkWatch:
    """Listens to ``IB.errorEvent`` for TWS losing / regaining its link to IB's servers.

    1100 arrives with reqId -1 and pending requests then just wait; remembering it lets a
    timeout that follows be reported as lost connectivity, which is what it is.
    """

    def __init__(self) -> None:
        self.down = False

    def __call__(self, req_id: int, code: int, text: str, contract: Contract | None) -> None:
        if code in _LOST_CODES:
            self.down = True
        elif code in _RESTORED_CODES:
            self.down = False


def _bars_frame(bars: Sequence) -> pd.DataFrame:
    volume = pd.Series([b.volume for b in bars], dtype="float64")
    return pd.DataFrame(
        {
            "session": pd.to_datetime([pd.Timestamp(b.date) for b in bars]).normalize(),
            "open": [b.open for b in bars],
            "high": [b.high for b in bars],
            "low": [b.low for b in bars],
            "close": [b.close for b in bars],
            # IB sends -1 where a bar type has no volume (MIDPOINT); the schema's "no value" is NaN.
            "volume": volume.where(volume >= 0),
        }
    )


def _local_date(now: pd.Timestamp, inst: Instrument) -> pd.Timestamp:
    """Today's date at the instrument's exchange, tz-naive midnight."""
    return now.tz_convert(exchange_timezone(inst.calendar)).tz_localize(None).normalize().as_unit("us")


def _open_session(sessions: pd.Series, now: pd.Timestamp, inst: Instrument) -> pd.Series:
    """True for bars whose session has not closed yet at ``now`` (today's, before the close)."""
    cal = exchange_calendar(inst.calendar)
    today = _local_date(now, inst)
    # A bar dated today on a day that is not a session of the calendar (e.g. forex trading on a
    # Sunday evening) cannot be a finished session either, so it is dropped too.
    closed = bool(cal.is_session(today)) and now >= cal.session_close(today)
    return (sessions > today) | ((sessions == today) & (not closed))


def _duration(days: int) -> str:
    return f"{days} D" if days <= MAX_CHUNK_DAYS else f"{math.ceil(days / MAX_CHUNK_DAYS)} Y"


def _requests(
    inst: Instrument, contract: Contract, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp
) -> list[tuple[pd.Timestamp, pd.Timestamp, str, str]]:
    """``(chunk_start, chunk_end, endDateTime, durationStr)`` of the requests covering ``[start, end]``.

    Chunks of at most :data:`MAX_CHUNK_DAYS` calendar days, newest first. ``endDateTime`` is the
    end of the chunk's last day in the exchange's zone, capped at ``now``, written in IB's UTC
    form ``yyyymmdd-HH:MM:SS`` (an explicit zone: a bare date would be read in the worker's local
    zone). A continuous future accepts only ``endDateTime=''`` (IB error 10339), so it gets one
    request from ``start`` to now.
    """
    tz = exchange_timezone(inst.calendar)
    if contract.secType == "CONTFUT":
        days = (_local_date(now, inst) - start).days + 1
        return [(start, end, "", _duration(days))]
    out = []
    chunk_end = end
    for _ in range(1000):  # bounded: 1000 years of daily bars
        chunk_start = max(start, chunk_end - pd.Timedelta(days=MAX_CHUNK_DAYS - 1))
        close = (chunk_end + pd.Timedelta(hours=23, minutes=59, seconds=59)).tz_localize(tz)
        stamp = min(close.tz_convert("UTC"), now)
        duration = _duration((chunk_end - chunk_start).days + 1)
        out.append((chunk_start, chunk_end, stamp.strftime("%Y%m%d-%H:%M:%S"), duration))
        if chunk_start <= start:
            break
        chunk_end = chunk_start - pd.Timedelta(days=1)
    return out
