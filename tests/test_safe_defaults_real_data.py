"""Safe defaults on real data (issue 19): futures of pysystemtrade's 2023 set given by symbol alone, with a
capital and the defaults, through ``trading-pipeline backtest``; and EWMAC 32/128 alone on EDOLLAR beside
pysystemtrade's introduction. Both run the command line on a temporary lake and skip without the shared data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scripts.carver_pipeline import pysystemtrade_config, write_pysystemtrade_csv
from tests.conftest import require_shared_data

ROOT = Path(__file__).resolve().parents[1]
#: 20 futures of the 2023 set: ETHANOL (flat for its last 180 sessions), EURCHF (the 2015-01-15 de-peg),
#: HOUSE-US (stale, and 0.25 SR units a trade), EURIBOR (costly per trade), liquid markets of every class.
SUBSET = ["ETHANOL", "EURCHF", "HOUSE-US", "EURIBOR", "US10", "US2", "SHATZ", "SP500", "NASDAQ", "DAX", "EUROSTX",
          "EUR", "JPY", "GBP", "CRUDE_W", "GOLD", "COPPER", "CORN", "WHEAT", "VIX"]
#: Issue 19's requirements: no day worse than -10% of capital, costs below 2% of capital a year.
WORST_DAY_FLOOR, MAX_ANNUAL_COSTS = -0.10, 0.02
#: pysystemtrade docs/introduction.md: accountCurve(price, forecast=ewmac32) on EDOLLAR, sharpe 0.5084; tolerance.
PST_EDOLLAR_SHARPE, EDOLLAR_TOLERANCE = 0.508, 0.05


def _backtest(config: Path | str, tmp: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "TRADING_PIPELINE_CONFIG"} | {"DAGSTER_HOME": str(tmp / "dh")}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backtest", "--config", str(config),
                           "--lake", str(tmp / "lake"), "--out", str(tmp / "results")],
                          check=False, env=env, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (folder,) = (tmp / "results").iterdir()
    return folder


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory) -> Path:
    data = require_shared_data("futures_carver_2023")
    tmp = tmp_path_factory.mktemp("defaults")
    folder = write_pysystemtrade_csv(tmp / "pst", data, SUBSET)
    return _backtest(pysystemtrade_config(tmp / "config.yaml", folder, SUBSET), tmp)


@pytest.mark.xfail(strict=True, reason="measured -12.9% on 2011-02-22: the short VIX and VIX-like positions on a real "
                   "equity sell-off (all 238: -31.2% on 1999-02-16, 585 BRE contracts sized on the real's peg held through "
                   "its float and valued again when the vol bounds accept a vol); "
                   "issue 19's requirement is not met by these defaults (docs/carver_fidelity.md)")
def test_no_day_worse_than_ten_percent_of_capital(subset_run):
    returns = pd.read_csv(subset_run / "equity_curve.csv", index_col="session", parse_dates=True)["returns"]
    assert returns.min() > WORST_DAY_FLOOR, (returns.idxmin(), returns.min())


@pytest.mark.xfail(strict=True, reason="measured 2.16% a year on these 20 (all 238: 2.66%): costs spread over many "
                   "instruments trading most sessions; issue 19's requirement is not met by these defaults "
                   "(docs/carver_fidelity.md)")
def test_costs_below_two_percent_of_capital_a_year(subset_run):
    values = json.loads((subset_run / "summary.json").read_text())["performance"]["values"]
    assert values["annual_cost_drag"] < MAX_ANNUAL_COSTS, values["annual_cost_drag"]


def test_flat_and_costly_series_are_excluded_or_guarded_with_their_reason(subset_run):
    summary = json.loads((subset_run / "summary.json").read_text())
    excluded = pd.DataFrame(summary["excluded_instruments"])
    reasons = excluded.groupby("instrument")["reason"].apply(set)
    # ETHANOL's flat closes are held by the stale guard (and its SR cost per trade explodes as its vol sinks)
    assert "stale_guard" in reasons["ETHANOL"]
    assert "cost_per_trade" in reasons["HOUSE-US"]
    assert reasons["EURIBOR"] >= {"cost_per_trade"}
    # every instrument starts with a year it is not traded (256 prices)
    assert set(excluded.loc[excluded["reason"] == "short_history", "instrument"]) == set(SUBSET)
    report = (subset_run / "report.html").read_text()
    assert "Instruments not traded" in report and "HOUSE-US (cost_per_trade)" in report


def test_ewmac32_alone_on_edollar_matches_pysystemtrade_introduction(tmp_path):
    require_shared_data("futures_carver_2016")
    folder = _backtest("examples/pysystemtrade_edollar_ewmac32.yaml", tmp_path)
    sharpe = json.loads((folder / "summary.json").read_text())["performance"]["values"]["sharpe"]
    assert abs(sharpe - PST_EDOLLAR_SHARPE) <= EDOLLAR_TOLERANCE, sharpe
