"""A snapshot of the asset graph: an accidental change to keys, dependencies, groups, partitions,
checks, jobs, schedules or sensors fails here (as Dagster's own open platform tests its graph).

After a deliberate change, rewrite the snapshot and review its diff:
``UPDATE_SNAPSHOTS=1 pytest tests/test_asset_graph_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from pipeline.config import load_config
from pipeline.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def _partitions(defn) -> str | None:
    if defn is None:
        return None
    if isinstance(defn, dg.TimeWindowPartitionsDefinition):
        return f"time window {defn.cron_schedule} {defn.timezone} from {defn.start.date()} end_offset {defn.end_offset}"
    return type(defn).__name__


def graph_summary(defs: dg.Definitions) -> dict:
    """Every fact of the graph a change should be deliberate about, as plain JSON."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    by_key = {key: a for a in defs.assets for key in a.keys}
    assets = {}
    for node in sorted(graph.asset_nodes, key=lambda n: n.key.to_user_string()):
        defn = by_key[node.key]
        assets[node.key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "backfill_policy": str(node.backfill_policy.policy_type.value) if node.backfill_policy else None,
            "freshness_policy": node.freshness_policy is not None,
            "kinds": sorted(node.kinds),
            "pool": defn.node_def.pool,
            "checks": sorted(f"{c.name}{' (blocking)' if c.blocking else ''}" for c in defn.check_specs),
        }
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
        for job in sorted(repo.get_all_jobs(), key=lambda j: j.name) if not job.name.startswith("__")
    }
    schedules = {
        s.name: {"cron": s.cron_schedule, "timezone": s.execution_timezone, "job": s.job_name,
                 "default_status": s.default_status.value}
        for s in sorted(repo.schedule_defs, key=lambda s: s.name)
    }
    sensors = {s.name: {"default_status": s.default_status.value} for s in sorted(repo.sensor_defs, key=lambda s: s.name)}
    resources = sorted(repo.get_top_level_resources())
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors, "resources": resources}


def test_the_asset_graph_matches_its_snapshot():
    summary = graph_summary(build_definitions(load_config()))
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    assert summary == json.loads(SNAPSHOT.read_text())


def test_a_changed_dependency_fails_the_snapshot():
    summary = graph_summary(build_definitions(load_config()))
    summary["assets"]["orders"]["deps"].remove("clean_bars")
    assert summary != json.loads(SNAPSHOT.read_text())
