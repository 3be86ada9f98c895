"""Dagster resources: the validated configuration, the bar source and the broker.

Configuration enters here once: :class:`Settings` loads the YAML file (validated by pydantic) and
hands out the lake (a local folder or an object-store URL) and the ledger (in the local state
folder, ``pipeline.storage``); the bar source and the broker are built from it.
"""


from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import PrivateAttr

from pipeline.broker.paper import PaperBroker
from pipeline.config import LAKE_ENV_VAR, PipelineConfig, load_config
from pipeline.lake import Lake
from pipeline.ledger import Ledger
from pipeline.sources import BarSource, make_source
from pipeline.storage import lake_root, state_path
from pipeline.warehouse import WAREHOUSE_FILE

if TYPE_CHECKING:
    from pipeline.broker.ib import IBBroker


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

    def config(self) -> PipelineConfig:
        if self._config is None:
            cfg = load_config(self.config_path)
            if self.lake_root:
                cfg = cfg.model_copy(update={"lake_root": self.lake_root})
            self._config = cfg
        return self._config

    def lake_path(self) -> Path | str:
        """The lake root: a resolved folder, or an object-store URL (``pipeline.storage.lake_root``)."""
        return lake_root(self.config(), self.lake_root)

    def state_path(self) -> Path:
        """The local state folder (``pipeline.storage.state_path``); raises ``StorageError`` if unset
        for an object-store lake."""
        return state_path(self.config(), self.lake_path(), self.state_root)

    def lake(self) -> Lake:
        return Lake(self.lake_path())

    def ledger(self) -> Ledger:
        ledger = Ledger(self.state_path() / WAREHOUSE_FILE)
        ledger.init()
        return ledger


class BarSourceResource(dg.ConfigurableResource):
    """The daily bar source named in the configuration (``sample`` or ``files``)."""

    settings: Settings

    def source(self) -> BarSource:
        cfg = self.settings.config()
        return make_source(cfg.source, cfg.instruments)


class BrokerResource(dg.ConfigurableResource):
    """The broker named in the configuration: ``paper`` (simulated fills kept in the ledger) or
    ``ib`` (TWS / IB Gateway; connected on entering ``with resource.broker() as b:``, always
    disconnected on leaving)."""

    settings: Settings

    def broker(self) -> "PaperBroker | IBBroker":
        cfg = self.settings.config()
        if cfg.broker.mode == "ib":
            from pipeline.broker.ib import IBBroker  # loads ib_async only when IB is configured

            return IBBroker(cfg.instruments, cfg.broker)
        return PaperBroker(
            self.settings.ledger(),
            costs={i.symbol: i.costs for i in cfg.instruments},
            point_sizes={i.symbol: i.point_size for i in cfg.instruments},
        )


def default_resources(config_path: str | None = None, lake_root: str | None = None,
                      state_root: str | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resource set of the code location (tests pass a temporary lake and config)."""
    settings = Settings(config_path=config_path, lake_root=lake_root or None, state_root=state_root or None)
    return {
        "settings": settings,
        "bar_source": BarSourceResource(settings=settings),
        "broker": BrokerResource(settings=settings),
    }


__all__ = ["Settings", "BarSourceResource", "BrokerResource", "default_resources", "LAKE_ENV_VAR"]
