"""Real shocks are not errors: the quality rules keep the largest real moves of the shared data and
the bundled sample out of the quarantine (they may be flagged for a person to confirm, never
quarantined as impossible), while the same series with a x10 print are caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.sources.sample import SampleSource
from pipeline.bars import BAR_COLUMNS
from pipeline.config import QualityConfig
from pipeline.quality.rules import flagged_spikes, validate_bars
from tests.conftest import require_shared_data

FETCHED = pd.Timestamp("2025-01-01", tz="UTC")
WARN = QualityConfig(spike_severity="WARN")


def raw(instrument: str, sessions, close, open_=np.nan, high=np.nan, low=np.nan) -> pd.DataFrame:
    frame = pd.DataFrame({
        "session": pd.to_datetime(sessions), "instrument": instrument, "open": open_, "high": high, "low": low,
        "close": close, "volume": np.nan, "source": "shared", "fetched_at": FETCHED,
    })
    return frame[BAR_COLUMNS]


def dukascopy(pair: str) -> pd.DataFrame:
    path = require_shared_data("fx_dukascopy_d1", pattern=f"Dukascopy-{pair}-*.csv")
    f = pd.read_csv(path)
    f = f[pd.to_datetime(f["Date"], format="%Y.%m.%d").dt.dayofweek < 5]  # the vendor's Sunday bars aside
    return raw(pair, pd.to_datetime(f["Date"], format="%Y.%m.%d"), f["Close"], f["Open"], f["High"], f["Low"])


def quantiacs(ticker: str) -> pd.DataFrame:
    q = pd.read_parquet(require_shared_data("futures_quantiacs_88.parquet"), filters=[("ticker", "==", ticker)])
    q = q[pd.to_datetime(q["DATE"].astype(str)).dt.dayofweek < 5]
    return raw(ticker, pd.to_datetime(q["DATE"].astype(str)), q["CLOSE"], q["OPEN"], q["HIGH"], q["LOW"])


# (loader, instrument, session of the shock, judged in price points because it can cross zero)
SHOCKS = [
    (lambda: dukascopy("USDCHF"), "USDCHF", "2015-01-15", False),  # the SNB drops the EURCHF floor
    (lambda: quantiacs("F_CL"), "F_CL", "2020-04-20", True),  # WTI front month towards -37 USD
    (lambda: quantiacs("F_CL"), "F_CL", "2020-04-21", True),
    (lambda: quantiacs("F_VX"), "F_VX", "2018-02-05", True),  # "Volmageddon": VIX futures +112%
]


@pytest.mark.parametrize(("load", "instrument", "session", "points"), SHOCKS, ids=[s[2] + "-" + s[1] for s in SHOCKS])
def test_a_real_shock_is_never_quarantined(load, instrument, session, points):
    bars = load()
    res = validate_bars(bars, WARN, back_adjusted={instrument} if points else ())
    day = pd.Timestamp(session)
    assert day not in set(res.quarantine["session"]), f"{instrument} {session} was quarantined"
    # kept, or flagged for a person to confirm (not traded that session); the series goes on
    flagged = set(flagged_spikes(res.warnings)["session"])
    assert day in set(res.clean["session"]) | flagged
    after = bars.loc[bars["session"] > day, "session"].iloc[:3]
    assert set(after) <= set(res.clean["session"]) | flagged and len(set(after) & flagged) <= 1


def test_a_x10_print_on_the_same_fx_series_is_quarantined():
    bars = dukascopy("USDCHF").reset_index(drop=True)
    at = bars.index[bars["session"] == pd.Timestamp("2016-03-01")][0]
    bars.loc[at, ["open", "high", "low", "close"]] = bars.loc[at, ["open", "high", "low", "close"]] * 10
    res = validate_bars(bars, WARN)
    q = res.quarantine[res.quarantine["rule"] == "impossible_move"]
    assert q["session"].tolist() == [pd.Timestamp("2016-03-01")]


def test_the_bundled_sample_has_no_impossible_move_and_no_quarantined_bar():
    src = SampleSource()
    bars = src.fetch(src.instruments(), pd.Timestamp("1980-01-01"), pd.Timestamp("2023-01-01"))
    res = validate_bars(bars, WARN, back_adjusted={"WTI"})
    assert (res.quarantine["rule"] != "impossible_move").all()
    assert res.quarantine.empty  # no bar of the sample is an error: every real move is kept or flagged
    spikes = flagged_spikes(res.warnings)
    assert len(spikes) < 600  # flagged for a person (it was 509 with the price-point reference)
