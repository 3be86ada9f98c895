"""Bar sources: where raw daily bars come from (the Dagster bar-source resource wraps these).

``make_source(cfg.source)`` builds the configured one: ``sample`` (the bundled real prices) or
``files`` (a folder of CSV / Parquet bars). An Interactive Brokers source implements the same
:class:`BarSource` protocol.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.adapters.sources.files import FilesSource, read_bar_file
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
        relative paths resolve against the working directory) or "ib" (``ib`` = the TWS /
        IB Gateway connection; needs ``instruments`` to build the IB contracts).
    instruments : list of Instrument, optional
        The configured universe (required for "ib").

    Raises
    ------
    SourceError
        ``kind`` "files" without ``path``, or a folder that does not exist.
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
    if cfg.kind == "ib":
        from pipeline.adapters.sources.ib import (
            IBSource,  # imports ib_async only when used
        )

        if not instruments:
            raise SourceError("source.kind 'ib' needs the instrument list: make_source(cfg.source, cfg.instruments)")
        return IBSource(instruments, cfg.ib)
    raise SourceError(f"unknown source.kind {cfg.kind!r}; use 'sample', 'files' or 'ib'")
