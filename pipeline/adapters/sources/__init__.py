"""Bar sources: where raw daily bars come from (the Dagster bar-source resource wraps these).

``make_source(cfg.source)`` builds the configured one: ``sample`` (the bundled real prices),
``files`` (a folder of CSV / Parquet bars) or ``pysystemtrade`` (a pysystemtrade data folder in
any of its layouts). An Interactive Brokers source implements the same :class:`BarSource` protocol.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.adapters.sources.files import FilesSource, read_bar_file
from pipeline.adapters.sources.pysystemtrade_folder import PysystemtradeSource
from pipeline.adapters.sources.sample import SAMPLE_PATH, SampleSource
from pipeline.bars import (
    BAR_COLUMNS,
    BAR_DTYPES,
    BAR_SCHEMA,
    BarSource,
    SchemaError,
    SourceError,
    conform_bars,
    empty_bars,
)
from pipeline.config import Instrument, SourceConfig

__all__ = [
    "BAR_COLUMNS",
    "BAR_DTYPES",
    "BAR_SCHEMA",
    "SAMPLE_PATH",
    "BarSource",
    "FilesSource",
    "PysystemtradeSource",
    "SampleSource",
    "SchemaError",
    "SourceError",
    "conform_bars",
    "empty_bars",
    "make_source",
    "read_bar_file",
]


def make_source(cfg: SourceConfig, instruments: list[Instrument] | None = None) -> BarSource:
    """The bar source the configuration names.

    Parameters
    ----------
    cfg : SourceConfig
        ``kind`` "sample" (bundled data, ``path`` ignored), "files" (``path`` = the folder;
        relative paths resolve against the working directory), "pysystemtrade" (``path`` = a
        pysystemtrade data folder: legacy CSVs, today's CSV folders or the Parquet tables) or "ib"
        (``ib`` = the TWS / IB Gateway connection; needs ``instruments`` to build the IB contracts).
    instruments : list of Instrument, optional
        The configured universe (required for "ib").

    Raises
    ------
    SourceError
        ``kind`` "files" or "pysystemtrade" without ``path``, or a folder that does not exist
        (or, for "pysystemtrade", holds none of its layouts).
    """
    if cfg.kind == "sample":
        return SampleSource()
    if cfg.kind == "files":
        if not cfg.path:
            raise SourceError(
                "source.kind is 'files' but source.path is not set; set it to a folder of "
                "*.csv / *.parquet bar files"
            )
        return FilesSource(Path(cfg.path))
    if cfg.kind == "pysystemtrade":
        if not cfg.path:
            raise SourceError("source.kind is 'pysystemtrade' but source.path is not set; set it to a "
                              "pysystemtrade data folder")
        return PysystemtradeSource(Path(cfg.path))
    if cfg.kind == "ib":
        from pipeline.adapters.sources.ib import (
            IBSource,  # imports ib_async only when used
        )

        if not instruments:
            raise SourceError("source.kind 'ib' needs the instrument list: make_source(cfg.source, cfg.instruments)")
        return IBSource(instruments, cfg.ib)
    raise SourceError(f"unknown source.kind {cfg.kind!r}; use 'sample', 'files', 'pysystemtrade' or 'ib'")
