"""Tests of pipeline.ml.model_registry: versioned models, atomic writes, the experiment log."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from pipeline.ml import model_registry
from pipeline.ml.model_registry import (
    ModelRegistryError,
    data_hash,
    list_versions,
    load_model,
    log_experiment,
    read_experiments,
    save_model,
)

T0 = pd.Timestamp("2024-01-05 17:30:00", tz="UTC")


def training_data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    idx = pd.DatetimeIndex(pd.bdate_range("2020-01-01", periods=300), name="session")
    X = pd.DataFrame(rng.normal(size=(300, 3)), idx, columns=["a", "b", "c"])
    y = pd.Series((X["a"] + 0.5 * rng.normal(size=300) > 0).astype(int), idx)
    return X, y


def metadata(X: pd.DataFrame, y: pd.Series, **params) -> dict:
    return {
        "training_window": [X.index[0], X.index[-1]],
        "features": list(X.columns),
        "params": params,
        "oos_metrics": {"accuracy": 0.81, "log_loss": float("nan")},
        "data_hash": data_hash(X),
    }


def test_round_trip_gives_identical_predictions(tmp_path):
    X, y = training_data()
    model = RandomForestClassifier(n_estimators=20, max_depth=3, random_state=0, n_jobs=1)
    model.fit(X, y)
    version = save_model(tmp_path, "regime_model", model, metadata(X, y, n_estimators=20))
    stored = load_model(tmp_path, "regime_model")
    assert stored.version == version
    np.testing.assert_array_equal(stored.model.predict_proba(X), model.predict_proba(X))
    meta = stored.metadata
    assert meta["features"] == ["a", "b", "c"]
    assert meta["training_window"] == ["2020-01-01T00:00:00", X.index[-1].isoformat()]
    assert meta["params"] == {"n_estimators": 20}
    assert meta["data_hash"] == data_hash(X)
    assert meta["model_class"] == "sklearn.ensemble._forest.RandomForestClassifier"
    assert set(meta["library_versions"]) >= {"python", "numpy", "pandas", "scikit-learn"}
    assert (tmp_path / "models" / "regime_model" / version / "model.joblib").exists()


def test_same_inputs_give_the_same_version_and_one_folder(tmp_path):
    X, y = training_data()
    model = LogisticRegression().fit(X, y)
    v1 = save_model(tmp_path, "m", model, metadata(X, y, C=1.0), created_at=T0)
    v2 = save_model(tmp_path, "m", model, metadata(X, y, C=1.0), created_at=T0)
    assert v1 == v2
    # timestamp (microseconds, UTC) first so versions sort in time, then 12 hex of the hash
    assert re.fullmatch(r"20240105T173000000000Z-[0-9a-f]{12}", v1)
    assert len(list((tmp_path / "models" / "m").iterdir())) == 1


def test_changed_metadata_gives_a_new_version(tmp_path):
    X, y = training_data()
    model = LogisticRegression().fit(X, y)
    v1 = save_model(tmp_path, "m", model, metadata(X, y, C=1.0), created_at=T0)
    v2 = save_model(tmp_path, "m", model, metadata(X, y, C=2.0), created_at=T0)
    assert v1 != v2 and v1[:23] == v2[:23]  # same timestamp, different content hash


def test_versions_are_listed_oldest_first_and_latest_is_loaded(tmp_path):
    X, y = training_data()
    saved = {}
    # Saved out of time order: March, January, February.
    for month, C in ((3, 0.3), (1, 0.1), (2, 0.2)):
        model = LogisticRegression(C=C).fit(X, y)
        when = pd.Timestamp(f"2024-{month:02d}-01", tz="UTC")
        saved[month] = save_model(tmp_path, "m", model, metadata(X, y, C=C), created_at=when)
    listing = list_versions(tmp_path, "m")
    assert listing["version"].tolist() == [saved[1], saved[2], saved[3]]
    assert listing["created_at"].is_monotonic_increasing
    assert load_model(tmp_path, "m").metadata["params"] == {"C": 0.3}
    assert load_model(tmp_path, "m", saved[1]).model.C == 0.1


def test_save_leaves_no_temporary_folder(tmp_path):
    X, y = training_data()
    save_model(tmp_path, "m", LogisticRegression().fit(X, y), metadata(X, y))
    names = [p.name for p in (tmp_path / "models" / "m").iterdir()]
    assert len(names) == 1 and not names[0].startswith(".")


def test_crash_before_the_rename_leaves_no_version_and_no_temporary_folder(
    tmp_path, monkeypatch
):
    X, y = training_data()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(model_registry.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        save_model(tmp_path, "m", LogisticRegression().fit(X, y), metadata(X, y))
    assert list((tmp_path / "models" / "m").iterdir()) == []
    assert list_versions(tmp_path, "m").empty


def test_a_leftover_temporary_folder_is_not_a_version(tmp_path):
    X, y = training_data()
    version = save_model(tmp_path, "m", LogisticRegression().fit(X, y), metadata(X, y))
    stray = tmp_path / "models" / "m" / ".tmp-20990101T000000000000Z-abc-123"
    stray.mkdir()
    (stray / "metadata.json").write_text("{}")
    assert list_versions(tmp_path, "m")["version"].tolist() == [version]


def test_metadata_must_hold_the_reproducibility_keys(tmp_path):
    X, y = training_data()
    meta = metadata(X, y)
    del meta["data_hash"]
    with pytest.raises(ModelRegistryError, match="data_hash"):
        save_model(tmp_path, "m", LogisticRegression().fit(X, y), meta)


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", ""])
def test_names_that_could_leave_the_models_folder_are_refused(tmp_path, name):
    X, y = training_data()
    with pytest.raises(ModelRegistryError, match="must be letters"):
        save_model(tmp_path, name, LogisticRegression().fit(X, y), metadata(X, y))


def test_a_tampered_model_file_is_refused(tmp_path):
    X, y = training_data()
    version = save_model(tmp_path, "m", LogisticRegression().fit(X, y), metadata(X, y))
    other = save_model(tmp_path, "m", LogisticRegression(C=0.01).fit(X, y), metadata(X, y, C=0.01))
    base = tmp_path / "models" / "m"
    os.replace(base / other / "model.joblib", base / version / "model.joblib")
    with pytest.raises(ModelRegistryError, match="checksum"):
        load_model(tmp_path, "m", version)


def test_loading_a_model_never_saved_says_so(tmp_path):
    with pytest.raises(ModelRegistryError, match="no stored version"):
        load_model(tmp_path, "never_saved")


def test_experiment_log_appends_one_line_per_run(tmp_path):
    log_experiment(tmp_path, "regime", {"C": 1.0}, {"accuracy": 0.7}, created_at=T0)
    log_experiment(
        tmp_path, "regime", {"C": 0.1}, {"accuracy": 0.6, "log_loss": np.nan},
        version="v2", extra={"data_hash": "abc"},
    )
    lines = (tmp_path / "models" / "experiments.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["created_at"] == "2024-01-05T17:30:00+00:00"
    log = read_experiments(tmp_path)
    assert log["params"].tolist() == [{"C": 1.0}, {"C": 0.1}]
    # NaN is not valid JSON: stored as null
    assert log["metrics"].iloc[1] == {"accuracy": 0.6, "log_loss": None}
    assert log["version"].iloc[1] == "v2" and log["data_hash"].iloc[1] == "abc"


def test_data_hash_changes_with_any_value_or_session():
    X, _ = training_data()
    assert data_hash(X) == data_hash(X.copy())
    changed = X.copy()
    changed.iloc[150, 1] += 1e-9
    assert data_hash(changed) != data_hash(X)
    shifted = X.copy()
    shifted.index = shifted.index + pd.Timedelta(days=1)
    assert data_hash(shifted) != data_hash(X)
    assert data_hash(X.rename(columns={"a": "z"})) != data_hash(X)


# --- which version a run may use -----------------------------------------------------------------


def stored_versions(tmp_path):
    """Three versions: data to 2020-06-30 (approved), 2021-06-30 (not approved), 2022-06-30 (approved)."""
    X, y = training_data()
    model = LogisticRegression().fit(X, y)
    out = {}
    for k, (end, approved) in enumerate([("2020-06-30", True), ("2021-06-30", False), ("2022-06-30", True)]):
        meta = {**metadata(X, y, k=k), "data_end": end, "approved": approved}
        out[end] = save_model(tmp_path, "m", model, meta, created_at=T0 + pd.Timedelta(days=k))
    return out


def test_the_latest_approved_version_trained_up_to_the_session_is_selected(tmp_path):
    from pipeline.ml.model_registry import select_version

    v = stored_versions(tmp_path)
    assert select_version(tmp_path, "m", pd.Timestamp("2023-01-03")) == v["2022-06-30"]
    # 2021-06-30 is not approved; 2022-06-30 saw data after the session
    assert select_version(tmp_path, "m", pd.Timestamp("2022-03-01")) == v["2020-06-30"]
    assert select_version(tmp_path, "m", pd.Timestamp("2020-06-30")) == v["2020-06-30"]
    assert select_version(tmp_path, "m", pd.Timestamp("2020-06-29")) is None
    assert select_version(tmp_path, "nothing", pd.Timestamp("2023-01-03")) is None


def test_a_pinned_version_is_used_but_never_one_trained_after_the_session(tmp_path):
    from pipeline.ml.model_registry import select_version

    v = stored_versions(tmp_path)
    assert select_version(tmp_path, "m", pd.Timestamp("2021-07-01"), pinned=v["2021-06-30"]) == v["2021-06-30"]
    with pytest.raises(ModelRegistryError, match="saw data up to 2022-06-30"):
        select_version(tmp_path, "m", pd.Timestamp("2021-07-01"), pinned=v["2022-06-30"])
    with pytest.raises(ModelRegistryError, match="not in the registry"):
        select_version(tmp_path, "m", pd.Timestamp("2021-07-01"), pinned="20240101T000000000000Z-000000000000")


def test_version_changes_lists_metrics_beside_the_previous_version():
    from pipeline.ml.model_registry import version_changes

    table = version_changes({"oos_metrics": {"accuracy": 0.6}}, {"oos_metrics": {"accuracy": 0.65, "brier": 0.2, "ok": True}})
    assert list(table.index) == ["accuracy", "brier"]
    assert table.loc["accuracy", "change"] == pytest.approx(0.05)
    assert np.isnan(table.loc["brier", "previous"])
    first = version_changes(None, {"oos_metrics": {"accuracy": 0.65}})
    assert np.isnan(first.loc["accuracy", "previous"])
