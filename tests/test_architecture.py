"""The layout's rules (docs/architecture.md), held by import-linter and the import graph.

- the import-linter contracts of pyproject.toml pass (layers, Dagster at the edge, no cycles
  between sibling packages);
- no import cycle between modules, imports placed inside functions counted (only
  ``if TYPE_CHECKING:`` blocks are left out);
- at most eight modules at the root of ``pipeline/`` (the kernel, the code location);
- every module imports with ``TRADING_PIPELINE_CONFIG`` naming a file that does not exist:
  nothing reads the configuration at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "assets", "sensors")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def test_the_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_module_imports_itself_through_others():
    graph = _graph()
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(graph.find_shortest_chain(importer=imported, imported=module) + (imported,))
    assert cycles == []


def test_the_root_of_pipeline_holds_at_most_eight_modules():
    modules = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert len(modules) <= 8, modules


def test_every_module_imports_without_reading_the_configuration():
    graph = _graph()
    modules = sorted(m for m in graph.modules if not m.endswith("__main__"))
    script = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint(len(sys.argv) - 1)\n"
    env = {**os.environ, "TRADING_PIPELINE_CONFIG": str(ROOT / "no-such-config.yaml")}
    done = subprocess.run([sys.executable, "-c", script, *modules], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert int(done.stdout.strip().splitlines()[-1]) == len(modules) > 100
