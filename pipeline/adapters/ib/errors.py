"""Classify what Interactive Brokers answers into a few exception types the pipeline acts on.

IB reports every failure as ``(code, free text)``; ib_async turns a request's error into
``RequestError(reqId, code, message)`` (with ``RaiseRequestErrors=True``), a lost socket into
``ConnectionError`` and a request that never completes into ``TimeoutError``. The actions differ:
*no data* is a fact about the range (record it, do not retry), *pacing* is retried after a pause,
an *unknown contract* is a configuration error, *lost connectivity* and *timeouts* fail the step
so the orchestrator retries it later. Code 162 covers both "no data" and "pacing violation", so
the text decides (reference: IB API error codes; ib_async ``wrapper.error``).
"""

from __future__ import annotations

from pipeline.bars import SourceError

#: Codes that mean the link between the API client, TWS/Gateway and IB's servers is down:
#: 1100 connectivity lost, 1300 socket port reset, 502 cannot connect, 504 not connected,
#: 2110 TWS-server connectivity broken (IB API error code list).
CONNECTIVITY_CODES = frozenset({502, 504, 1100, 1300, 2110})
#: Codes for a contract IB does not know: 200 no security definition, 203 security not available
#: for this account.
UNKNOWN_CONTRACT_CODES = frozenset({200, 203})
#: Text fragments (lower case) of the 162/166 "no data" answers seen from TWS.
NO_DATA_TEXTS = ("returned no data", "no historical market data", "no data of type")
#: Text fragment of the pacing violation (code 162, sometimes 420/366 on other farms).
PACING_TEXT = "pacing violation"


class IBError(SourceError):
    """An Interactive Brokers request failed; ``code`` is IB's error code (None if not from IB)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class IBNoData(IBError):
    """IB has no bars for the request (code 162 "HMDS query returned no data", or an empty answer).

    Not retried: the range, bar type or contract has no history (e.g. TRADES on forex, a
    weekend-only range, a delisted stock).
    """


class IBPacingViolation(IBError):
    """IB refused the request for breaking its historical-data pacing rules (162 "pacing violation")."""


class IBUnknownContract(IBError):
    """IB has no (or more than one) contract matching an instrument (code 200)."""


class IBConnectivityLost(IBError):
    """The socket to TWS/Gateway dropped, or TWS lost its link to IB (1100, 502, 504, ...)."""


class IBTimeout(IBError):
    """IB did not answer within the configured timeout (a silent farm, or a connect that hangs)."""


class IBRequestFailed(IBError):
    """Any other IB error code tied to a request (e.g. 10339, 321); the message carries the code."""


def classify_error(code: int, text: str, where: str) -> IBError:
    """The exception for IB error ``code`` with message ``text``.

    Parameters
    ----------
    code : int
        IB error code (``RequestError.code``).
    text : str
        IB's message; for 162 it decides between no data and pacing.
    where : str
        What was asked, e.g. ``"historical bars of AAPL (TRADES, 1 day)"``; starts the message.

    Returns
    -------
    IBError
        :class:`IBPacingViolation`, :class:`IBNoData`, :class:`IBUnknownContract`,
        :class:`IBConnectivityLost` or :class:`IBRequestFailed`; ``.code`` is ``code``.
    """
    low = text.lower()
    if PACING_TEXT in low:
        return IBPacingViolation(
            f"{where}: IB pacing violation (error {code}: {text}); wait at least 10 s, spread "
            "requests out (max 60 historical requests per 10 minutes per login) and retry",
            code,
        )
    if code == 162 and any(t in low for t in NO_DATA_TEXTS):
        return IBNoData(
            f"{where}: IB has no data for this request (error {code}: {text}); check the range, "
            "the bar type (forex has MIDPOINT only) and the market-data permissions",
            code,
        )
    if code in UNKNOWN_CONTRACT_CODES:
        return IBUnknownContract(
            f"{where}: IB does not know this contract (error {code}: {text}); fix symbol, "
            "sec_type, exchange or currency of the instrument in the config",
            code,
        )
    if code in CONNECTIVITY_CODES:
        return IBConnectivityLost(
            f"{where}: connectivity to IB is lost (error {code}: {text}); check TWS/IB Gateway "
            "and retry the step later",
            code,
        )
    return IBRequestFailed(f"{where}: IB error {code}: {text}", code)


def classify_exception(exc: BaseException, where: str, timeout: float | None = None) -> IBError:
    """The :class:`IBError` for an exception raised by an ib_async call.

    ``RequestError`` goes through :func:`classify_error`; ``TimeoutError`` (asyncio's too)
    becomes :class:`IBTimeout`; ``ConnectionError`` / ``OSError`` become
    :class:`IBConnectivityLost`. Anything else is returned as :class:`IBRequestFailed`.
    """
    from ib_async import (
        RequestError,  # local: keep the module importable for unit tests
    )

    if isinstance(exc, IBError):
        return exc
    if isinstance(exc, RequestError):
        return classify_error(exc.code, exc.message, where)
    if isinstance(exc, TimeoutError):
        limit = f" within {timeout:g} s" if timeout is not None else ""
        return IBTimeout(
            f"{where}: no answer from IB{limit}; the data farm may be down or the client id "
            "already in use; retry later or raise the timeout",
        )
    if isinstance(exc, (ConnectionError, OSError)):
        return IBConnectivityLost(
            f"{where}: connection to TWS/IB Gateway failed or dropped ({exc!r}); check that it "
            "runs and accepts API connections on this host and port, then retry",
        )
    return IBRequestFailed(f"{where}: unexpected failure {exc!r}")
