"""The example queries of docs/operations.md ("Querying the lake"), run against a lake written by a
daily run: the SQL is read from the document, so document and test cannot drift apart."""

from __future__ import annotations

import re

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.definitions import execute_daily, execute_research
from pipeline.store.warehouse import connect, query
from tests.conftest import LATEST_SAMPLE_SESSION, write_config
from tests.ui_support import ROOT

DOC = ROOT / "docs" / "operations.md"
SYMBOLS = ["AAPL", "KO", "XOM"]
SUNDAY = pd.Timestamp("2020-03-08")
BAD_OHLC = pd.Timestamp("2015-06-01")


def documented_examples() -> list[tuple[str, str]]:
    """(title, SQL) of every ```sql block under '## Querying the lake', in order."""
    text = DOC.read_text()
    section = text.split("\n## Querying the lake\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^### (.+?)\n(?:.*?\n)*?```sql\n(.*?)```", section, flags=re.MULTILINE | re.DOTALL)
    return [(title.strip(), sql.strip()) for title, sql in found]


EXAMPLES = documented_examples()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A daily run over three sample instruments read as files, with two real-shaped defects added:
    a Sunday-dated KO bar (non_session) and an XOM bar whose high is below its low."""
    folder = tmp_path_factory.mktemp("warehouse")
    sample = pd.read_parquet(ROOT / "pipeline" / "data" / "sample_bars.parquet")
    bars = sample[sample["instrument"].isin(SYMBOLS)].drop(columns="source_dataset").reset_index(drop=True)
    xom = (bars["instrument"] == "XOM") & (bars["session"] == BAD_OHLC)
    assert xom.sum() == 1
    bars.loc[xom, "low"] = bars.loc[xom, "close"]  # the sample is close-only: give the bar a range
    bars.loc[xom, "high"] = bars.loc[xom, "close"] - 1.0
    friday = bars[(bars["instrument"] == "KO") & (bars["session"] == SUNDAY - pd.Timedelta(days=2))]
    bars = pd.concat([bars, friday.assign(session=SUNDAY)], ignore_index=True)
    (folder / "bars").mkdir()
    bars.to_csv(folder / "bars" / "bars.csv", index=False)
    config = write_config(folder, symbols=SYMBOLS, source={"kind": "files", "path": str(folder / "bars")})
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
        assert result.success
        # the backtest tables the documented examples read are the research job's
        result = execute_research(config_path=str(config), instance=instance)
    assert result.success
    return load_config(config)


def test_the_document_has_the_promised_examples():
    titles = [t for t, _ in EXAMPLES]
    assert "Positions and P&L by asset class on a date" in titles
    assert {"Quarantined bars by rule", "Orders and fills of a session", "Alerts, newest first"} <= set(titles)
    assert all(sql.lower().startswith("select") for _, sql in EXAMPLES)


@pytest.mark.parametrize("title, sql", EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_every_documented_example_runs(lake, title, sql):
    result = query(lake.lake_path, sql, lake)
    assert list(result.columns), title
    if title != "Alerts, newest first":  # a clean run raises no alert
        assert len(result) > 0, title


def _example(title: str) -> str:
    return dict(EXAMPLES)[title]


def test_positions_by_asset_class_add_up_to_the_positions(lake):
    by_class = query(lake.lake_path, _example("Positions and P&L by asset class on a date"), lake)
    classes = {i.symbol: i.asset_class for i in lake.instruments}
    assert sorted(by_class["asset_class"]) == sorted(set(classes.values()))
    assert by_class["instruments"].sum() == len(SYMBOLS)
    # Independent sum in pandas over the Parquet rows (point size 1 for these stocks).
    pos = query(lake.lake_path, f"select * from target_positions where session = date '{LATEST_SAMPLE_SESSION}'")
    assert by_class["gross_exposure"].sum() == pytest.approx((pos["target"] * pos["price"]).abs().sum(), abs=len(SYMBOLS))


def test_quarantine_example_reports_the_two_defects(lake):
    q = query(lake.lake_path, _example("Quarantined bars by rule"), lake).set_index("rule")
    assert q.loc["non_session", "bars"] == 1 and q.loc["non_session", "first_session"] == SUNDAY
    assert q.loc["ohlc_inconsistent", "bars"] == 1 and q.loc["ohlc_inconsistent", "first_session"] == BAD_OHLC


def test_orders_example_joins_each_fill_to_its_order(lake):
    orders = query(lake.lake_path, _example("Orders and fills of a session"), lake)
    assert set(orders["instrument"]) <= set(SYMBOLS) and orders["order_ref"].is_unique
    filled = orders[orders["filled"].notna()]
    assert len(filled) > 0 and np.allclose(filled["filled"].abs(), filled["quantity"].abs())


def test_readers_cannot_write_the_ledger(lake):
    con = connect(lake.lake_path, lake)
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("insert into ledger.alerts (alert_id) values ('x')")
    finally:
        con.close()
