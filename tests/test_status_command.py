"""``trading-pipeline status``: the first screen after a real paper daily run on the bundled sample.

Positions equal the targets, the orders show their verdicts and fills, the P&L equals a computation
made another way (each fill's quantity times the price move over the period), the kill switch shows
its state and reason, ``--json`` is one object, and a broken lake file leaves the other sections answering.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from pipeline.cli.app import main
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from pipeline.store.warehouse import WAREHOUSE_FILE
from pipeline.trading import Fill
from tests.conftest import require_shared_data, write_config

SYMBOLS = ["AAPL", "KO", "XOM"]
SESSION = "2022-12-28"
CAPITAL = 1_000_000.0  # portfolio.capital of the bundled configuration


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    """A paper daily run of the latest sample session; the order notional limit raised so every order passes."""
    folder = tmp_path_factory.mktemp("status")
    config = write_config(folder, symbols=SYMBOLS, risk={"max_order_notional": 5_000_000})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(folder / "dagster_home"))
        assert main(["daily", "--config", str(config)]) == 0
    return config, folder


@pytest.fixture
def lake(daily, tmp_path, monkeypatch):
    """A copy of the run's lake (ledger included) for one test; the run's Dagster instance, read only."""
    config, folder = daily
    monkeypatch.setenv("DAGSTER_HOME", str(folder / "dagster_home"))
    shutil.copytree(folder / "lake", tmp_path / "lake")
    return config, tmp_path / "lake"


def _status(config, lake, capsys, *args) -> tuple[int, str]:
    code = main(["status", "--config", str(config), "--lake", str(lake), *args])
    out, err = capsys.readouterr()
    assert err == "" or code != 0, err
    return code, out


def _json(config, lake, capsys, *args) -> dict:
    code, out = _status(config, lake, capsys, "--json", *args)
    assert code == 0
    return json.loads(out)


def test_after_a_paper_daily_the_positions_equal_the_targets_and_the_orders_show_their_verdicts(lake, capsys):
    config, root = lake
    doc = _json(config, root, capsys)
    assert doc["session"] == SESSION and doc["broker"] == "paper" and doc["base_currency"] == "USD"
    sections = doc["sections"]
    targets = Lake(root).read("target_positions", columns=["instrument", "target"], start=SESSION, end=SESSION)
    targets = targets.set_index("instrument")["target"]
    positions = {r["instrument"]: r for r in sections["positions"]["rows"]}
    assert sorted(positions) == SYMBOLS
    for name, row in positions.items():
        assert row["position"] == row["target"] == targets[name] != 0
        assert row["difference"] == 0
    orders = sections["orders"]["rows"]
    assert [(o["instrument"], o["verdict"], o["status"]) for o in orders] == [(s, "ACCEPTED", "FILLED") for s in SYMBOLS]
    assert all(o["filled_quantity"] == o["quantity"] == targets[o["instrument"]] for o in orders)
    assert sections["trading_state"]["rows"][0]["state"] == "ACTIVE"
    assert sections["position_breaks"]["rows"] == []
    (daily_run, retrain) = sections["runs"]["rows"]
    assert (daily_run["job"], daily_run["status"], daily_run["partition"]) == ("daily_job", "SUCCESS", SESSION)
    assert daily_run["duration_s"] > 0 and retrain["status"] == "never run"
    # risk now: the held book's gross exposure (stocks: units x close) over the capital
    closes = Lake(root).read("target_positions", columns=["instrument", "price"], start=SESSION, end=SESSION)
    gross = float((targets.abs() * closes.set_index("instrument")["price"]).sum())
    (risk,) = sections["risk"]["rows"]
    assert risk["gross_exposure"] == pytest.approx(gross) and risk["gross_leverage"] == pytest.approx(gross / CAPITAL)
    assert 0 < risk["annualised_risk_pct"] < 100 and risk["vol_target_pct"] == 25.0

    code, text = _status(config, root, capsys)
    assert code == 0
    titles = ["Trading state (kill switch)", "Open position breaks", "Positions (ledger, broker paper)",
              f"Orders of {SESSION}", f"P&L to {SESSION}", "P&L by instrument", "Risk now", "Alerts of the last",
              "Rolls (futures)", "Last run of each job"]
    at = [text.index(t) for t in titles]
    assert at == sorted(at)  # the order of the first screen


def _independent_pnl(closes: pd.DataFrame, fills: list[tuple[str, str, float]], start: str, end: str) -> dict:
    """P&L over sessions start..end of fills (session, instrument, quantity) held from their session's close:
    each fill's quantity times the close at ``end`` less the close before the period (or its own close
    if later). Stocks in USD, point size 1."""
    before = closes.index[closes.index < pd.Timestamp(start)][-1]
    out = dict.fromkeys(SYMBOLS, 0.0)
    for session, instrument, quantity in fills:
        if pd.Timestamp(session) >= pd.Timestamp(end):
            continue  # bought at the last close: no price move yet
        opened = max(pd.Timestamp(session), before)
        out[instrument] += quantity * (closes.at[pd.Timestamp(end), instrument] - closes.at[opened, instrument])
    return out


def test_the_pnl_equals_the_price_moves_of_the_ledgers_positions(lake, capsys):
    config, root = lake
    fills = [("2021-12-15", "KO", 200.0), ("2022-11-30", "AAPL", 100.0), ("2022-12-20", "XOM", -50.0),
             ("2022-12-27", "AAPL", -30.0)]
    ledger = Ledger(root / WAREHOUSE_FILE)
    for i, (session, instrument, quantity) in enumerate(fills):
        ledger.record_fill(Fill(fill_id=f"manual-{i}", order_ref=f"carver:{session}:{instrument}:9", broker="paper",
                                session=pd.Timestamp(session), instrument=instrument, quantity=quantity, price=1.0,
                                commission=0.0, slippage_cost=0.0, filled_at=pd.Timestamp(session, tz="UTC")))
    prices = Lake(root).read("target_positions", columns=["session", "instrument", "price"])
    closes = prices.assign(session=pd.to_datetime(prices["session"])).pivot(
        index="session", columns="instrument", values="price")

    doc = _json(config, root, capsys)
    periods = {r["period"]: r for r in doc["sections"]["pnl"]["rows"]}
    by_instrument = {r["instrument"]: r for r in doc["sections"]["pnl_by_instrument"]["rows"]}
    for period, start in (("day", SESSION), ("month", "2022-12-01"), ("year", "2022-01-01")):
        expected = _independent_pnl(closes, fills, start, SESSION)
        for name in SYMBOLS:
            assert by_instrument[name][period] == pytest.approx(expected[name], abs=1e-6), (period, name)
        assert periods[period]["pnl"] == pytest.approx(sum(expected.values()), abs=1e-6)
        assert periods[period]["pct_capital"] == pytest.approx(100 * sum(expected.values()) / CAPITAL, abs=1e-9)
    assert periods["year"]["start"] == "2022-01-03" and periods["month"]["start"] == "2022-12-01"
    assert by_instrument["KO"]["year"] != 0 and by_instrument["XOM"]["month"] != 0 and by_instrument["AAPL"]["day"] != 0
    # the ledger's position now: the daily's fills plus these
    positions = {r["instrument"]: r["position"] for r in doc["sections"]["positions"]["rows"]}
    assert positions["AAPL"] == pytest.approx(doc["sections"]["positions"]["rows"][0]["target"] + 70.0)

    # an earlier session: the year and month end there
    earlier = _json(config, root, capsys, "--session", "2022-12-21")
    expected = _independent_pnl(closes, fills, "2022-12-01", "2022-12-21")
    month = next(r for r in earlier["sections"]["pnl"]["rows"] if r["period"] == "month")
    assert month["pnl"] == pytest.approx(sum(expected.values()), abs=1e-6) and month["end"] == "2022-12-21"


def test_the_kill_switch_shows_its_state_since_when_and_why(lake, capsys):
    config, root = lake
    assert main(["kill-switch", "HALTED", "--reason", "broker incident", "--config", str(config), "--lake",
                 str(root)]) == 0
    capsys.readouterr()
    code, text = _status(config, root, capsys)
    assert code == 0
    state = text[text.index("Trading state (kill switch)"):text.index("Open position breaks")]
    assert "HALTED" in state and "broker incident" in state and "cli" in state and "UTC" in state
    (row,) = _json(config, root, capsys)["sections"]["trading_state"]["rows"]
    assert (row["state"], row["reason"], row["changed_by"]) == ("HALTED", "broker incident", "cli")


def test_a_broken_lake_file_leaves_the_other_sections_answering(lake, capsys):
    config, root = lake
    broken = root / "target_positions" / "year=2022" / "part.parquet"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # what a full disk leaves

    doc = _json(config, root, capsys)
    sections = doc["sections"]
    assert doc["session"] == SESSION  # from the ledger's orders when the targets cannot be read
    for name in ("positions", "pnl", "pnl_by_instrument", "risk"):
        assert sections[name]["unavailable"].startswith(f"unavailable: lake table target_positions: file {broken}")
        assert "\n" not in sections[name]["unavailable"]
    assert sections["trading_state"]["rows"][0]["state"] == "ACTIVE"
    assert [o["instrument"] for o in sections["orders"]["rows"]] == SYMBOLS
    assert sections["runs"]["rows"][0]["status"] == "SUCCESS"

    code, text = _status(config, root, capsys)
    assert code == 0 and "Traceback" not in text
    assert text.count("unavailable: lake table target_positions") == 4
    assert f"Orders of {SESSION}" in text


def test_futures_show_the_priced_contract_and_the_sessions_to_the_close_out(tmp_path, capsys, monkeypatch):
    """GOLD held 2 on 2023-07-24 sits in 202308, five sessions from its close-out (tests/test_futures_assets.py)."""
    from assets.resources import Settings
    from tests.test_futures_assets import CARVER_2023, _config, _hold, _run

    require_shared_data(CARVER_2023)
    from tests.test_pysystemtrade_source import write_csv_folder

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    config = _config(tmp_path, write_csv_folder(tmp_path / "csv", ["CORN", "GOLD", "SP500"], intraday=False))
    settings = Settings(config_path=str(config))
    _hold(settings, "GOLD", 2)
    _run(config, partition="2023-07-24")  # its expiry guard fails (GOLD near its close-out): the table is written
    settings.ledger().set_roll_state("GOLD", "Passive", "roll into 202310", "ops", session="2023-07-24")
    capsys.readouterr()  # the run's log

    doc = _json(config, settings.lake().root, capsys, "--session", "2023-07-24")
    rolls = doc["sections"]["rolls"]["rows"]
    assert rolls[0]["instrument"] == "GOLD"  # the soonest close-out first
    assert (rolls[0]["roll_state"], rolls[0]["contract"], rolls[0]["position"], rolls[0]["sessions_left"]) == \
        ("Passive", "202308", 2.0, 5)
    assert {r["instrument"]: r["roll_state"] for r in rolls} == {"GOLD": "Passive", "CORN": "No_Roll", "SP500": "No_Roll"}
    # no target_positions without a daily run: those sections say so, the others answer
    assert doc["sections"]["positions"]["unavailable"].startswith("unavailable:")
    assert doc["sections"]["trading_state"]["rows"][0]["state"] == "ACTIVE"
