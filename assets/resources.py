"""Dagster resources: the validated configuration, the bar source and the broker.

Configuration enters here once: :class:`Settings` loads the YAML file (validated by pydantic) and
hands out the lake (a local folder or an object-store URL) and the ledger (in the local state
folder, ``pipeline.store.paths``); the bar source and the broker are built from it.
"""


from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import PrivateAttr

from pipeline.adapters.pysystemtrade import MultiplePrices
from pipeline.adapters.sources import BarSource, PysystemtradeSource, make_source
from pipeline.bars import SourceDataError
from pipeline.config import LAKE_ENV_VAR, PipelineConfig, config_file, load_config
from pipeline.execution.paper_broker import PaperBroker
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from pipeline.store.paths import lake_root, state_path
from pipeline.store.warehouse import WAREHOUSE_FILE

if TYPE_CHECKING:
    from pipeline.adapters.ib.broker import IBBroker


#: Configurations already read in this process, by (file, modification time, size): a run's
#: resources are copied by Dagster, and each copy would otherwise read and validate the file again.
_LOADED: dict[tuple[str, int, int], PipelineConfig] = {}


class Settings(dg.ConfigurableResource):
    """The pipeline configuration file and the storage it points at.

    ``config_path`` None means ``$TRADING_PIPELINE_CONFIG`` or the bundled default;
    ``lake_root`` overrides the file's ``lake_root`` (and ``$TRADING_PIPELINE_LAKE``), a folder or
    an object-store URL; ``state_root`` overrides the file's ``state_root`` (the local folder of
    the ledger, the order-run locks and the model registry; default: the lake root when local).
    """

    config_path: str | None = None
    lake_root: str | None = None
    state_root: str | None = None
    _config: PipelineConfig | None = PrivateAttr(default=None)
    #: The ledger file whose tables this resource created or checked: every asset of a run asks for the
    #: ledger, and ``Ledger.init`` (a DuckDB open and a DDL transaction) is needed once per run.
    _ledger_ready: Path | None = PrivateAttr(default=None)

    def use_config(self, config: PipelineConfig) -> None:
        """Use ``config`` (validated already, read from ``config_path``) instead of reading the file
        again, here and in the copies of this resource Dagster makes for a run."""
        _LOADED[self._file_version()] = config

    def _file_version(self) -> tuple[str, int, int]:
        file = config_file(self.config_path)
        stat = file.stat() if file.is_file() else None
        return str(file.resolve()), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0

    def config(self) -> PipelineConfig:
        """The validated configuration: read once per version of the file in a process."""
        if self._config is None:
            version = self._file_version()
            cfg = _LOADED.get(version)
            if cfg is None:
                cfg = _LOADED[version] = load_config(self.config_path)
            if self.lake_root:
                cfg = cfg.model_copy(update={"lake_root": self.lake_root})
            self._config = cfg
        return self._config

    def lake_path(self) -> Path | str:
        """The lake root: a resolved folder, or an object-store URL (``pipeline.store.paths.lake_root``)."""
        return lake_root(self.config(), self.lake_root)

    def state_path(self) -> Path:
        """The local state folder (``pipeline.store.paths.state_path``); raises ``StorageError`` if unset
        for an object-store lake."""
        return state_path(self.config(), self.lake_path(), self.state_root)

    def lake(self) -> Lake:
        return Lake(self.lake_path())

    def ledger(self) -> Ledger:
        """The ledger in the state folder, its tables created or upgraded on the resource's first call."""
        ledger = Ledger(self.state_path() / WAREHOUSE_FILE)
        if self._ledger_ready != ledger.path or not ledger.path.exists():
            ledger.init()
            self._ledger_ready = ledger.path
        return ledger


class BarSourceResource(dg.ConfigurableResource):
    """The daily bar source named in the configuration (``sample``, ``files``, ``ib`` or ``pysystemtrade``)."""

    settings: Settings

    def source(self) -> BarSource:
        cfg = self.settings.config()
        return make_source(cfg.source, cfg.instruments)

    def multiple_prices(self, symbols: Sequence[str]) -> MultiplePrices | None:
        """pysystemtrade multiple prices (held and carry contracts) of those of ``symbols`` that have them.

        Returns
        -------
        MultiplePrices or None
            Columns: the symbols with multiple prices (possibly none); None when the source is not
            ``pysystemtrade`` or its folder holds no multiple prices (carry cannot be computed).

        Raises
        ------
        SourceDataError
            A multiple-prices file of one of ``symbols`` cannot be read (file and row named).
        """
        cfg = self.settings.config()
        if cfg.source.kind != "pysystemtrade":
            return None
        source = make_source(cfg.source, cfg.instruments)
        if not isinstance(source, PysystemtradeSource) or source.layout.multiple is None:
            return None
        try:
            return source.multiple_prices(list(symbols))
        except SourceDataError as exc:
            if "no multiple prices for" not in str(exc):
                raise
        held = []  # some instruments have none: keep those that have
        for symbol in symbols:
            try:
                source.multiple_prices(symbol)
            except SourceDataError as exc:
                if "no multiple prices for" not in str(exc):
                    raise
                continue
            held.append(symbol)
        return source.multiple_prices(held) if held else None


class BrokerResource(dg.ConfigurableResource):
    """The broker named in the configuration: ``paper`` (simulated fills kept in the ledger) or
    ``ib`` (TWS / IB Gateway; connected on entering ``with resource.broker() as b:``, always
    disconnected on leaving)."""

    settings: Settings

    def broker(self) -> "PaperBroker | IBBroker":
        cfg = self.settings.config()
        if cfg.broker.mode == "ib":
            from pipeline.adapters.ib.broker import (
                IBBroker,  # loads ib_async only when IB is configured
            )

            return IBBroker(cfg.instruments, cfg.broker)
        return PaperBroker.for_universe(self.settings.ledger(), cfg.instruments, capital=cfg.portfolio.capital)


def default_resources(config_path: str | None = None, lake_root: str | None = None,
                      state_root: str | None = None, *,
                      config: PipelineConfig | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resource set of the code location (tests pass a temporary lake and config).

    ``config`` is the configuration already read from ``config_path``; the resources then use it
    instead of reading the file again.
    """
    settings = Settings(config_path=config_path, lake_root=lake_root or None, state_root=state_root or None)
    if config is not None:
        settings.use_config(config)
    return {
        "settings": settings,
        "bar_source": BarSourceResource(settings=settings),
        "broker": BrokerResource(settings=settings),
    }


__all__ = ["LAKE_ENV_VAR", "BarSourceResource", "BrokerResource", "Settings", "default_resources"]
