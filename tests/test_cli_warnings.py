"""Library warnings are filtered at the command line's edge (``pipeline.cli.app.filter_library_warnings``):
a trader's daily run prints no warning from a library, while the project's own warnings still show."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import dagster as dg
import pytest
from pandas.errors import Pandas4Warning

from pipeline.cli.app import filter_library_warnings
from tests.conftest import write_config

#: ``path:line: Category: message``, the form in which Python prints a warning.
WARNING_LINE = re.compile(r"^(?P<path>\S+\.py):\d+: (?P<category>\w+): ", re.MULTILINE)


def _shown(category: type[Warning], module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_library_warnings()
        warnings.warn_explicit("x", category, filename=f"{module.replace('.', '/')}.py", lineno=1, module=module)
    return bool(caught)


@pytest.mark.parametrize("category, module", [
    (Pandas4Warning, "pandas.core.series"),            # pandas' own deprecation, raised inside a library
    (FutureWarning, "exchange_calendars.exchange_calendar"),
    (DeprecationWarning, "great_expectations.core.expectation_suite"),
    (DeprecationWarning, "apprise.utils.pgp"),          # "'imghdr' is deprecated" on Python 3.11
    (dg.BetaWarning, "assets.signals"),                 # Dagster attributes its beta marker to our asset
    (dg.PreviewWarning, "pipeline.definitions"),
])
def test_library_warnings_are_filtered(category, module):
    assert not _shown(category, module)


@pytest.mark.parametrize("category, module", [
    (DeprecationWarning, "pipeline.definitions"),  # a deprecated Dagster parameter we pass: ours to fix
    (FutureWarning, "pipeline.signals.rules"),
    (FutureWarning, "assets.portfolio"),
    (UserWarning, "pandas.core.frame"),            # may be about the data: never filtered
    (RuntimeWarning, "numpy.lib.nanfunctions"),
    (DeprecationWarning, "pandas_extra"),          # a module name that only starts like a library's
])
def test_the_projects_own_and_other_warnings_still_show(category, module):
    assert _shown(category, module)


def test_the_dagster_warning_classes_are_the_public_ones():
    # The filter imports them from dagster_shared so that a command does not pay for importing dagster;
    # an upgrade that moves them must fail here, not silently stop filtering.
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    assert (BetaWarning, PreviewWarning) == (dg.BetaWarning, dg.PreviewWarning)


def test_a_daily_run_prints_no_library_warning_even_with_every_warning_turned_on(tmp_path):
    config = write_config(tmp_path, symbols=["AAPL", "KO", "XOM"])
    # PYTHONWARNINGS=always shows what Python's defaults hide (DeprecationWarning outside __main__):
    # without the filter, pandas' Pandas4Warning from inside exchange_calendars is printed here.
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "TRADING_PIPELINE_CONFIG": str(config),
           "PYTHONWARNINGS": "always"}
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "daily", "--no-submit"], check=False, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Daily run for session 2022-12-28: 3 instruments" in run.stdout
    printed = [(m["path"], m["category"]) for m in WARNING_LINE.finditer(run.stderr + run.stdout)]
    from_libraries = [(path, category) for path, category in printed if "site-packages" in path]
    assert from_libraries == [], run.stderr[-3000:]
