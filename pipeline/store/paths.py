"""Where the pipeline keeps things: the lake root (a folder or an object-store URL) and the state folder.

The **lake** holds the Parquet tables (``pipeline.store.lake``): a local folder or an object-store URL
such as ``s3://bucket/prefix?endpoint_override=...`` (``lake_root`` in the configuration,
``$TRADING_PIPELINE_LAKE`` or ``--lake`` override it).

The **state folder** holds what needs a local file system's guarantees (an exclusive lock, an
atomic rename, an append): ``warehouse.duckdb`` (the order ledger with the kill-switch log,
alerts and quarantine releases; DuckDB allows one writer per file through a file lock), the
order-run lock files (``locks/``, ``flock``) and the model registry (``models/``, versions renamed
into place). It is ``state_root`` in the configuration; by default it is the lake root itself when
that is a local folder, so a local lake keeps everything in one place as before. An object-store
lake needs an explicit local ``state_root``: object stores have no locks, no rename and no append.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pipeline.config import LAKE_ENV_VAR, PipelineConfig
from pipeline.store.lake import is_url

__all__ = ["StorageError", "lake_root", "state_path"]


class StorageError(ValueError):
    """The lake root or the state folder of the configuration cannot be used; the message says why."""


def _local(root: str | Path) -> Path | None:
    """``root`` as a resolved local path (``file://`` URLs included), or None for an object-store URL."""
    if is_url(root):
        parts = urlsplit(str(root))
        return Path(url2pathname(parts.path)).resolve() if parts.scheme == "file" else None
    return Path(root).resolve()


def lake_root(cfg: PipelineConfig, override: str | Path | None = None) -> Path | str:
    """The lake root: ``override``, else ``$TRADING_PIPELINE_LAKE``, else ``cfg.lake_root``.

    Returns
    -------
    Path or str
        A resolved local folder (relative paths are taken from the working directory, ``file://``
        URLs become paths), or the object-store URL unchanged (with its ``?options``), as
        :class:`pipeline.store.lake.Lake` takes it.
    """
    root = override or os.environ.get(LAKE_ENV_VAR) or cfg.lake_root
    local = _local(root)
    return local if local is not None else str(root)


def state_path(cfg: PipelineConfig, lake: Path | str | None = None, override: str | Path | None = None) -> Path:
    """The local state folder: ``override``, else ``cfg.state_root``, else the lake root if local.

    Parameters
    ----------
    cfg : PipelineConfig
        The configuration (``state_root``, and ``lake_root`` when ``lake`` is None).
    lake : Path or str, optional
        The lake root in use (from :func:`lake_root`); default ``lake_root(cfg)``.
    override : str or Path, optional
        A state folder that wins over the configuration.

    Returns
    -------
    Path
        A resolved local folder (not created here: the ledger creates it on first use).

    Raises
    ------
    StorageError
        The state folder given is an object-store URL, or the lake is an object-store URL and no
        state folder is configured (the message names the setting to add).
    """
    state = override or cfg.state_root
    if state:
        local = _local(state)
        if local is None:
            raise StorageError(
                f"state_root {state!r} is an object-store URL: the ledger, the order-run locks and the model "
                "registry need a local folder (file locks, atomic renames); set state_root to a local path"
            )
        return local
    root = lake if lake is not None else lake_root(cfg)
    if isinstance(root, Path):
        return root
    raise StorageError(
        f"lake_root {root!r} is an object-store URL: set state_root in the configuration to a local folder for "
        "warehouse.duckdb (order ledger, kill switch, alerts), the order-run locks and the model registry"
    )
