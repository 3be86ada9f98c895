"""Versioned models, with their metadata, and an experiment log, in the local state folder.

The state folder is ``state_root`` of the configuration, by default the lake root
(``pipeline.store.paths``): versions are renamed into place and the log is appended to, which needs a
local file system even when the Parquet lake is on an object store. Layout under it::

    models/<name>/<version>/model.joblib     the fitted estimator (joblib pickle)
    models/<name>/<version>/metadata.json    training window, features, params, OOS metrics,
                                             data hash, library versions, created_at, checksum
    models/experiments.jsonl                 one JSON line per logged run (params, metrics)

A version is ``<created_at UTC, YYYYmmddTHHMMSSffffffZ>-<12 hex of sha256(model bytes +
metadata)>``: the timestamp first so that versions sort in time order, the hash so that the same
model, metadata and timestamp always give the same version (re-saving is a no-op, as a Dagster
re-run should be). A version folder is written whole into a temporary folder next to it and
``os.replace``d into place, so a crash leaves either no version or a complete one.

**Security**: ``joblib.load`` unpickles, and unpickling can run arbitrary code. Load only models
this project wrote into a lake you control; :func:`load_model` checks the file's SHA-256 against
its metadata, which catches corruption and accidental swaps, not a deliberate attacker who can
rewrite both files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

__all__ = [
    "REQUIRED_METADATA",
    "ModelRegistryError",
    "StoredModel",
    "data_hash",
    "library_versions",
    "list_versions",
    "load_model",
    "log_experiment",
    "read_experiments",
    "save_model",
    "select_version",
    "version_changes",
]

#: Keys the caller's metadata must hold: without them a stored model cannot be reproduced.
REQUIRED_METADATA = ("training_window", "features", "params", "oos_metrics", "data_hash")

_MODELS = "models"
_MODEL_FILE = "model.joblib"
_META_FILE = "metadata.json"
_EXPERIMENTS = "experiments.jsonl"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION_COLUMNS = ["version", "created_at", "model_class", "data_hash", "data_end", "approved", "evaluation_key", "path"]


class ModelRegistryError(ValueError):
    """A model name, version or metadata is invalid, or a stored model is missing or corrupt."""


@dataclass(frozen=True)
class StoredModel:
    """A model loaded by :func:`load_model`: ``name``, ``version``, ``model``, ``metadata``."""

    name: str
    version: str
    model: Any
    metadata: dict[str, Any]


def _check_name(kind: str, value: str) -> str:
    # Names become folder names: refuse anything that could climb out of the models folder.
    if not isinstance(value, str) or not _NAME.match(value):
        raise ModelRegistryError(
            f"model_registry: {kind} {value!r} must be letters, digits, '_', '.', '-' and not "
            "start with '.' or '-'"
        )
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (pd.Series, pd.Index)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _canonical_json(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ModelRegistryError(
            f"model_registry: metadata is not JSON serialisable ({exc}); pass plain values"
        ) from exc


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a stored model depends on (name -> version)."""
    import scipy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
    }


def data_hash(data: pd.DataFrame | pd.Series) -> str:
    """SHA-256 (hex) of a frame's values, index and column names: the training data's identity.

    Uses ``pandas.util.hash_pandas_object`` (row hashes including the index), so equal data
    gives an equal hash across runs and machines; any changed value, session or column changes
    it.

    Parameters
    ----------
    data : DataFrame or Series
        E.g. the features and labels a model was trained on.

    Returns
    -------
    str
        64 hex characters.
    """
    digest = hashlib.sha256()
    names = list(data.columns) if isinstance(data, pd.DataFrame) else [data.name]
    digest.update(_canonical_json([str(n) for n in names]).encode())
    digest.update(pd.util.hash_pandas_object(data, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def _utc(created_at: dt.datetime | pd.Timestamp | None) -> pd.Timestamp:
    ts = pd.Timestamp.now(tz="UTC") if created_at is None else pd.Timestamp(created_at)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, payload: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def save_model(
    root: Path,
    name: str,
    model: Any,
    metadata: dict[str, Any],
    *,
    created_at: dt.datetime | pd.Timestamp | None = None,
) -> str:
    """Store a fitted model and its metadata as a new version; return the version.

    Writes ``<root>/models/<name>/<version>/{model.joblib, metadata.json}`` atomically (temp
    folder beside it, files fsynced, ``os.replace``). ``metadata.json`` holds the caller's
    ``metadata`` plus ``name``, ``version``, ``created_at`` (ISO, UTC), ``model_class``,
    ``model_sha256`` and ``library_versions``. Saving the same model with the same metadata and
    ``created_at`` again returns the same version and leaves the stored one untouched.

    Parameters
    ----------
    root : Path
        State folder (``pipeline.store.paths.state_path``; the lake root by default).
    name : str
        Model name (e.g. ``"regime_model"``): letters, digits, ``_ . -``.
    model : object
        A fitted, picklable estimator.
    metadata : dict
        JSON-serialisable (Timestamps, numpy scalars and arrays are converted); must hold
        :data:`REQUIRED_METADATA`: ``training_window`` (e.g. first/last training session),
        ``features`` (names), ``params``, ``oos_metrics``, ``data_hash`` (:func:`data_hash`).
    created_at : datetime, keyword-only, optional
        Creation time (naive = UTC); default now. Fix it for a reproducible version.

    Returns
    -------
    str
        The version, e.g. ``"20240105T173000000000Z-3f2a9c01b7de"``.

    Raises
    ------
    ModelRegistryError
        Invalid name, missing required metadata keys, or metadata not JSON serialisable.
    """
    _check_name("name", name)
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ModelRegistryError(
            f"save_model: metadata of {name!r} lacks {missing}; a stored model needs "
            f"{list(REQUIRED_METADATA)} to be reproducible"
        )
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    payload = buffer.getvalue()
    user_json = _canonical_json(metadata)
    stamp = _utc(created_at)
    content = hashlib.sha256(payload + b"\0" + user_json.encode()).hexdigest()
    version = f"{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-{content[:12]}"

    folder = Path(root) / _MODELS / name
    target = folder / version
    if (target / _META_FILE).exists():
        return version  # same inputs, already stored: idempotent re-run
    full = {
        **json.loads(user_json),
        "name": name,
        "version": version,
        "created_at": stamp.isoformat(),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_sha256": hashlib.sha256(payload).hexdigest(),
        "library_versions": library_versions(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{version}-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        _write_file(tmp / _MODEL_FILE, payload)
        _write_file(
            tmp / _META_FILE,
            json.dumps(full, indent=2, sort_keys=True, default=_json_default).encode(),
        )
        _fsync_dir(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # A concurrent writer stored the same version first; its content is ours by hash.
            if not (target / _META_FILE).exists():
                raise
        _fsync_dir(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return version


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / _META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelRegistryError(
            f"model_registry: cannot read {path / _META_FILE} ({exc}); the version is corrupt"
        ) from exc


def list_versions(root: Path, name: str) -> pd.DataFrame:
    """The stored versions of a model, oldest first.

    Parameters
    ----------
    root : Path
        State folder (``pipeline.store.paths.state_path``; the lake root by default).
    name : str
        Model name.

    Returns
    -------
    DataFrame
        One row per complete version (temporary folders are ignored), sorted by ``created_at``
        then ``version``; columns ``version``, ``created_at`` (UTC Timestamp), ``model_class``,
        ``data_hash``, ``data_end`` (last session whose data the model saw; NaT if not recorded),
        ``approved`` (bool, False if not recorded), ``evaluation_key`` (None if not recorded),
        ``path`` (str). Empty (same columns) if the model has no version.

    Raises
    ------
    ModelRegistryError
        Invalid name or an unreadable ``metadata.json``.
    """
    folder = Path(root) / _MODELS / _check_name("name", name)
    rows = []
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(".") or not (path / _META_FILE).exists():
                continue
            meta = _read_metadata(path)
            rows.append(
                {
                    "version": path.name,
                    "created_at": pd.Timestamp(meta["created_at"]).tz_convert("UTC"),
                    "model_class": meta.get("model_class"),
                    "data_hash": meta.get("data_hash"),
                    "data_end": pd.Timestamp(meta["data_end"]) if meta.get("data_end") else pd.NaT,
                    "approved": bool(meta.get("approved", False)),
                    "evaluation_key": meta.get("evaluation_key"),
                    "path": str(path),
                }
            )
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in _VERSION_COLUMNS})
    out = pd.DataFrame(rows, columns=_VERSION_COLUMNS)
    return out.sort_values(["created_at", "version"], ignore_index=True)


def load_model(root: Path, name: str, version: str | None = None) -> StoredModel:
    """Load a stored model (the latest version by default) after checking its checksum.

    Only load models this project wrote: ``joblib.load`` unpickles, which can execute code.

    Parameters
    ----------
    root : Path
        State folder (``pipeline.store.paths.state_path``; the lake root by default).
    name : str
        Model name.
    version : str, optional
        A version from :func:`list_versions`; default the last one.

    Returns
    -------
    StoredModel

    Raises
    ------
    ModelRegistryError
        No such model or version, or ``model.joblib`` does not match its recorded SHA-256.
    """
    if version is None:
        versions = list_versions(root, name)
        if versions.empty:
            raise ModelRegistryError(
                f"load_model: no stored version of {name!r} under {Path(root) / _MODELS}; "
                "train and save it first"
            )
        version = str(versions["version"].iloc[-1])
    path = Path(root) / _MODELS / _check_name("name", name) / _check_name("version", version)
    if not (path / _META_FILE).exists():
        raise ModelRegistryError(f"load_model: {name!r} has no version {version!r} at {path}")
    meta = _read_metadata(path)
    payload = (path / _MODEL_FILE).read_bytes()
    if hashlib.sha256(payload).hexdigest() != meta.get("model_sha256"):
        raise ModelRegistryError(
            f"load_model: {path / _MODEL_FILE} does not match the checksum in its metadata; "
            "the file is corrupt or was replaced; re-train instead of loading it"
        )
    model = joblib.load(io.BytesIO(payload))
    return StoredModel(name=name, version=version, model=model, metadata=meta)


def log_experiment(
    root: Path,
    name: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    *,
    version: str | None = None,
    created_at: dt.datetime | pd.Timestamp | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one run to ``<root>/models/experiments.jsonl`` and return the record.

    Every run is logged, including those whose model is not kept, so that the number of
    configurations tried (and so the selection bias of the best one) stays visible.

    Parameters
    ----------
    root : Path
        State folder (``pipeline.store.paths.state_path``; the lake root by default).
    name : str
        Model or experiment name.
    params, metrics : dict
        JSON-serialisable; non-finite floats are stored as null.
    version : str, keyword-only, optional
        The saved model version, if any.
    created_at : datetime, keyword-only, optional
        Run time (naive = UTC); default now.
    extra : dict, keyword-only, optional
        Further fields (e.g. data hash, training window).

    Returns
    -------
    dict
        The record as written: ``name``, ``version``, ``created_at``, ``params``, ``metrics``
        and the ``extra`` fields.

    Raises
    ------
    ModelRegistryError
        Invalid name or non-serialisable values.
    """
    _check_name("name", name)
    record = {
        **(extra or {}),
        "name": name,
        "version": version,
        "created_at": _utc(created_at).isoformat(),
        "params": params,
        "metrics": metrics,
    }
    record = json.loads(_canonical_json(record), parse_constant=lambda _: None)
    line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
    path = Path(root) / _MODELS / _EXPERIMENTS
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write on an O_APPEND descriptor: lines from one writer are never interleaved or torn
    # by a later append.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_experiments(root: Path) -> pd.DataFrame:
    """The experiment log as a DataFrame, one row per run in the order logged.

    Returns an empty DataFrame if nothing was logged. Columns: the record keys of
    :func:`log_experiment` (``params``/``metrics`` stay dicts).
    """
    path = Path(root) / _MODELS / _EXPERIMENTS
    if not path.exists():
        return pd.DataFrame(columns=["name", "version", "created_at", "params", "metrics"])
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame.from_records(records)



def select_version(
    root: Path, name: str, as_of: pd.Timestamp, pinned: str | None = None
) -> str | None:
    """The version a run for session ``as_of`` may use: the pinned one, or the latest approved.

    A model may serve a session only if it was trained on data up to that session: its
    metadata's ``data_end`` (the last session whose prices or labels it saw) must be
    ``<= as_of``. A pinned version that breaks this (or has no ``data_end``) is refused, never
    silently replaced, so a re-run of a past session cannot use a model from its future.

    Parameters
    ----------
    root : Path
        State folder (``pipeline.store.paths.state_path``; the lake root by default).
    name : str
        Model name.
    as_of : Timestamp
        The run's session.
    pinned : str, optional
        A version to use (``RegimeConfig.pinned_version``).

    Returns
    -------
    str or None
        The pinned version; else the approved version with the latest ``data_end <= as_of``
        (latest ``created_at`` on ties); None if there is none.

    Raises
    ------
    ModelRegistryError
        The pinned version does not exist, or was trained on data after ``as_of``.
    """
    versions = list_versions(root, name)
    as_of = pd.Timestamp(as_of)
    if pinned is not None:
        row = versions[versions["version"] == pinned]
        if row.empty:
            raise ModelRegistryError(f"select_version: pinned version {pinned!r} of {name!r} is not in the registry")
        end = row["data_end"].iloc[0]
        if pd.isna(end) or end > as_of:
            raise ModelRegistryError(
                f"select_version: pinned version {pinned!r} of {name!r} saw data up to {end} but the run is for "
                f"{as_of.date()}; pin a version trained on data up to the session"
            )
        return pinned
    usable = versions[versions["approved"] & versions["data_end"].notna()]
    usable = usable[usable["data_end"] <= as_of]
    if usable.empty:
        return None
    return str(usable.sort_values(["data_end", "created_at"])["version"].iloc[-1])


def version_changes(previous: dict[str, Any] | None, current: dict[str, Any]) -> pd.DataFrame:
    """Out-of-sample metrics of a version next to those of the previous version.

    Parameters
    ----------
    previous : dict or None
        Metadata of the previous version (``oos_metrics``), or None for the first version.
    current : dict
        Metadata of the current version.

    Returns
    -------
    DataFrame
        Index ``metric`` (the current version's ``oos_metrics`` keys with numeric values);
        columns ``previous`` (NaN if absent), ``current``, ``change``.
    """
    cur = {k: v for k, v in current.get("oos_metrics", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    prev = (previous or {}).get("oos_metrics", {})
    out = pd.DataFrame(
        {"previous": [float(prev[k]) if isinstance(prev.get(k), (int, float)) else np.nan for k in cur],
         "current": [float(v) for v in cur.values()]},
        index=pd.Index(list(cur), name="metric"),
    )
    out["change"] = out["current"] - out["previous"]
    return out
