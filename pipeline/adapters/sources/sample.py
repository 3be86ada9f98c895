"""The bundled real sample as a bar source (the default source: runs with no network, no broker).

``pipeline/data/sample_bars.parquet`` holds daily bars of 29 instruments converted from the price
tables shipped in the skfolio and arch wheels (provenance, licences and ranges in
``pipeline/data/README.md``; rebuilt by ``scripts/build_sample_data.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from pipeline.bars import (
    FETCHED_AT_DTYPE,
    SourceError,
    as_fetched_at,
    check_range,
    conform_bars,
    empty_bars,
    unknown_instruments_error,
    utc_now,
)

SAMPLE_PATH = Path(__file__).resolve().parents[2] / "data" / "sample_bars.parquet"


class SampleSource:
    """Bars from the bundled sample Parquet file.

    Parameters
    ----------
    path : Path, optional
        The sample file; defaults to the bundled ``pipeline/data/sample_bars.parquet``.
    clock : callable, optional
        Returns the ``fetched_at`` timestamp (UTC) of a call; tests inject a fixed clock.

    Notes
    -----
    The file is read once, on first use, and kept on the instance (about 200k rows, 10 MB in
    memory). The ``source`` column is ``"sample:<upstream dataset>"``, e.g.
    ``"sample:skfolio.load_sp500_dataset"``. Close-only datasets return NaN open/high/low/volume.
    """

    name = "sample"

    def __init__(self, path: str | Path = SAMPLE_PATH, clock: Callable[[], pd.Timestamp] = utc_now):
        self.path = Path(path)
        self._clock = clock
        self._bars: pd.DataFrame | None = None

    def _all(self) -> pd.DataFrame:
        if self._bars is None:
            if not self.path.is_file():
                raise SourceError(
                    f"sample: bundled data file {self.path} is missing; reinstall the package or "
                    "rebuild it with `python scripts/build_sample_data.py`"
                )
            raw = pd.read_parquet(self.path)
            raw["source"] = "sample:" + raw.pop("source_dataset").astype("str")
            raw["fetched_at"] = pd.Timestamp(0, tz="UTC")  # placeholder; set per fetch
            self._bars = conform_bars(raw)
        return self._bars

    def instruments(self) -> list[str]:
        """Sorted symbols the sample holds."""
        return sorted(self._all()["instrument"].unique().tolist())

    def _rows_of(self, instruments: Sequence[str]) -> pd.DataFrame:
        bars = self._all()
        wanted = list(dict.fromkeys(instruments))
        have = self.instruments()
        have_set = set(have)
        missing = [i for i in wanted if i not in have_set]
        if missing:
            raise unknown_instruments_error(self.name, missing, have)
        return bars[bars["instrument"].isin(wanted)]

    def fetch(
        self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Bars of ``instruments`` for sessions in ``[start, end]``; see :class:`BarSource`.

        Raises
        ------
        SourceError
            An instrument not in the sample (the message lists the 29 it has), or start > end.
        """
        s, e = check_range(start, end)
        rows = self._rows_of(instruments)
        out = rows[(rows["session"] >= s) & (rows["session"] <= e)].reset_index(drop=True)
        if out.empty:
            return empty_bars()
        out["fetched_at"] = as_fetched_at(self._clock())
        return out.astype({"fetched_at": FETCHED_AT_DTYPE})

    def last_session(self, instruments: Sequence[str]) -> pd.Timestamp | None:
        """Latest session with a bar for ANY of ``instruments``; see :class:`BarSource`."""
        rows = self._rows_of(instruments)
        return None if rows.empty else pd.Timestamp(rows["session"].max())
