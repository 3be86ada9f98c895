"""The futures assets (``assets/futures.py``) on a pysystemtrade CSV folder of GOLD, CORN and SP500.

The folder is written from the shared 2023 data (skipped without it), the roll parameters come
from its ``csvconfig/rollconfig.csv``. GOLD is priced in ``202308`` up to 2023-07-24 (rolled into
``202310`` on 07-25); ``202308`` is physically delivered, so its close-out is the business day
before August's first, 2023-07-31: from 2023-07-24 five sessions are left (a breach at the default
limit of 5), from 2023-07-21 six (no breach).
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, require_shared_data, write_config

from assets import futures
from assets.partitions import daily_partitions
from assets.resources import Settings, default_resources
from pipeline.config import load_config
from pipeline.definitions import build_definitions
from pipeline.futures import panama_stitch, read_roll_config
from pipeline.futures.tables import (
    contracts_on,
    instrument_multiple_prices,
    positions_in_priced,
)
from pipeline.store.lake import Lake
from pipeline.trading import Fill

CARVER_2023 = SHARED_DATA / "futures_carver_2023"
THREE = ["CORN", "GOLD", "SP500"]
SETTLEMENT = {"CORN": "physical", "GOLD": "physical", "SP500": "cash"}
POINT_SIZE = {"CORN": 50, "GOLD": 100, "SP500": 50}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    require_shared_data(CARVER_2023)
    from tests.test_pysystemtrade_source import write_csv_folder

    return write_csv_folder(tmp_path_factory.mktemp("pst") / "csv", THREE, intraday=False)


def _config(tmp_path, folder):
    rolls = read_roll_config(folder / "csvconfig" / "rollconfig.csv")
    instruments = [
        {"symbol": s, "sec_type": "FUT", "exchange": "CME", "point_size": POINT_SIZE[s], "calendar": "CMES",
         "asset_class": "futures", "back_adjusted": True, "settlement": SETTLEMENT[s], "rolls": rolls[s].model_dump()}
        for s in THREE
    ]
    return write_config(tmp_path, symbols=THREE, instruments=instruments, history_start="2023-01-03",
                        source={"kind": "pysystemtrade", "path": str(folder)})


def _hold(settings: Settings, instrument: str, quantity: float, contract: str | None = "202308") -> None:
    """A fill of ``quantity`` in ``contract`` (the order path records each futures fill's month)."""
    settings.ledger().record_fill(Fill(
        fill_id=f"paper:{instrument}", order_ref=f"carver:2023-07-03:{instrument}:{contract}:1", broker="paper",
        session=pd.Timestamp("2023-07-03"), instrument=instrument, quantity=quantity, price=1950.0, commission=1.0,
        slippage_cost=0.0, filled_at=pd.Timestamp("2023-07-03 20:00", tz="UTC"), contract=contract,
    ))


def _run(config_path, partition=None, backfill=None):
    """Materialize the futures assets and a downstream asset standing where ``orders`` stands."""
    cfg = load_config(str(config_path))
    daily = daily_partitions(cfg)

    @dg.asset(deps=[futures.FUTURES_POSITIONS], partitions_def=daily.partitions_def,
              backfill_policy=dg.BackfillPolicy.single_run())
    def downstream() -> None:
        return None

    tags = ({"dagster/asset_partition_range_start": backfill[0], "dagster/asset_partition_range_end": backfill[1]}
            if backfill else None)
    return dg.materialize([*futures.build(daily, cfg), downstream], partition_key=partition, tags=tags,
                          resources=default_resources(str(config_path)), instance=dg.DagsterInstance.ephemeral(),
                          raise_on_error=False)


def _check(result, name):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def run_on_0724(folder, tmp_path_factory):
    """One run of 2023-07-24 with a GOLD position of 2 (held in 202308, five sessions from close-out)."""
    tmp = tmp_path_factory.mktemp("on0724")
    config = _config(tmp, folder)
    settings = Settings(config_path=str(config))
    _hold(settings, "GOLD", 2)
    return config, settings.lake(), _run(config, partition="2023-07-24")


def _source_rows() -> pd.DataFrame:
    """The shared multiple prices as the source reads them: rows with a PRICE, a weekend row moved to the
    Friday before, where it replaces Friday's own (pysystemtrade's ``resample("1B").last()``)."""
    rows = pd.read_parquet(CARVER_2023 / "multiple_prices_daily.parquet", filters=[("instrument", "in", THREE)])
    rows = rows[rows["PRICE"].notna()].assign(instrument=lambda f: f["instrument"].astype(str))
    day = pd.to_datetime(rows["date"]).dt.normalize().astype("datetime64[ns]")
    rows["session"] = day - pd.to_timedelta(np.maximum(day.dt.weekday - 4, 0), unit="D")
    return rows.groupby(["instrument", "session"], sort=True).tail(1)


def test_multiple_prices_equal_the_source(run_on_0724):
    _, lake, _ = run_on_0724
    stored = lake.read(futures.MULTIPLE_PRICES)
    source = _source_rows()
    source = source[source["session"] <= "2023-07-24"]
    assert len(stored) == len(source) > 30_000
    assert stored["session"].max() == pd.Timestamp("2023-07-24")
    for instrument in THREE:
        mine = stored[stored["instrument"] == instrument].set_index("session")
        theirs = source[source["instrument"] == instrument].set_index("session")
        assert mine.index.equals(theirs.index)
        for column in ("PRICE", "CARRY", "FORWARD"):
            np.testing.assert_array_equal(mine[column].to_numpy(), theirs[column].to_numpy(dtype="float64"))
        for column in ("PRICE_CONTRACT", "CARRY_CONTRACT", "FORWARD_CONTRACT"):
            assert (mine[column].astype("Int64").fillna(-1).to_numpy() ==
                    theirs[column].astype("Int64").fillna(-1).to_numpy()).all(), (instrument, column)
    gold = stored[(stored["instrument"] == "GOLD") & (stored["session"] == "2023-07-24")].iloc[0]
    assert (gold["PRICE"], gold["PRICE_CONTRACT"], gold["FORWARD_CONTRACT"]) == (1956.5, 20230800, 20231000)


def test_adjusted_prices_are_the_panama_stitch_of_the_multiple_prices(run_on_0724):
    _, lake, result = run_on_0724
    adjusted = lake.read_table(futures.ADJUSTED_PRICES)
    table = lake.read(futures.MULTIPLE_PRICES)
    for instrument in THREE:
        multiple = instrument_multiple_prices(table, instrument)
        expected = panama_stitch(multiple, missing_gap="flat").dropna()
        mine = adjusted[adjusted["instrument"] == instrument].set_index("session")["price"]
        np.testing.assert_allclose(mine.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
        assert mine.iloc[-1] == multiple["PRICE"].dropna().iloc[-1]
    gold = adjusted[adjusted["instrument"] == "GOLD"].set_index("session")
    assert gold["price"].iloc[-1] == 1956.5 and gold["price_contract"].iloc[-1] == 20230800
    # one GOLD roll has no row of the old contract with the new one's FORWARD: stitched flat and reported
    gaps = _check(result, futures.CHECK_GAPS)
    assert not gaps.passed and gaps.severity == dg.AssetCheckSeverity.WARN
    assert gaps.description == "1 roll(s) without a measurable gap, stitched flat"
    flat = gaps.metadata["flat_rolls"].value
    assert "2019-09-27" in flat and "201910" in flat and "201912" in flat


def test_roll_calendar_lists_the_actual_and_planned_rolls(run_on_0724):
    _, lake, _ = run_on_0724
    calendar = lake.read_table(futures.ROLL_CALENDAR)
    gold = calendar[calendar["instrument"] == "GOLD"]
    actual = gold[gold["kind"] == "actual"].set_index("roll_date")
    multiple = instrument_multiple_prices(lake.read(futures.MULTIPLE_PRICES), "GOLD")
    changes = multiple.index[1:][multiple["PRICE_CONTRACT"].to_numpy()[1:] != multiple["PRICE_CONTRACT"].to_numpy()[:-1]]
    assert actual.index.equals(pd.DatetimeIndex(changes, name="roll_date"))
    last = actual.iloc[-1]
    assert (actual.index[-1], last["current_contract"], last["next_contract"]) == (pd.Timestamp("2023-05-19"),
                                                                                    "202306", "202308")
    # planned into 202308: 202306 expires about Tue 06-27, -30 days is Sun 05-28 -> Fri 05-26 the last day in
    # 202306, roll Mon 05-29 (a CMES session); the actual roll came 6 business days earlier
    assert (last["planned_date"], last["same_contracts"], last["difference_days"]) == (
        pd.Timestamp("2023-05-29"), True, -6.0)
    # planned (GJMQVZ, RollOffsetDays -30, ExpiryOffset 26): 202308 expires about Sun 08-27, -30 days is Fri
    # 07-28, the last day in 202308, so the roll into 202310 is Mon 2023-07-31 (the actual one came on 07-25)
    planned = gold[gold["kind"] == "planned"].set_index("next_contract")
    assert planned.loc["202310", "roll_date"] == pd.Timestamp("2023-07-31")
    assert planned.loc["202312", "roll_date"] > pd.Timestamp("2023-07-24")  # the plan runs a year ahead
    sp500 = calendar[(calendar["instrument"] == "SP500") & (calendar["kind"] == "actual")]
    assert sp500["same_contracts"].mean() > 0.95


def test_the_expiry_guard_blocks_five_sessions_before_close_out(run_on_0724):
    _, lake, result = run_on_0724
    guard = _check(result, futures.CHECK_EXPIRY_GUARD)
    assert not guard.passed and guard.severity == dg.AssetCheckSeverity.ERROR
    assert "GOLD 202308" in guard.description
    assert "downstream" not in _materialized(result)  # blocked, as orders are
    positions = lake.read(futures.FUTURES_POSITIONS)
    row = positions.iloc[0]
    assert (row["instrument"], row["contract"], row["forward_contract"], row["position"]) == ("GOLD", "202308",
                                                                                            "202310", 2.0)
    assert (row["close_out"], row["sessions_left"]) == (pd.Timestamp("2023-07-31"), 5)
    assert _check(result, futures.CHECK_ORPHANS).passed


def test_the_guard_passes_six_sessions_before_close_out(folder, tmp_path):
    config = _config(tmp_path, folder)
    _hold(Settings(config_path=str(config)), "GOLD", 2)
    result = _run(config, partition="2023-07-21")
    guard = _check(result, futures.CHECK_EXPIRY_GUARD)
    assert guard.passed, guard.description
    assert "downstream" in _materialized(result)
    row = Lake(tmp_path / "lake").read(futures.FUTURES_POSITIONS).iloc[0]
    assert (row["contract"], row["sessions_left"]) == ("202308", 6)


def test_a_backfill_warns_instead_of_blocking(folder, tmp_path):
    config = _config(tmp_path, folder)
    _hold(Settings(config_path=str(config)), "GOLD", -1)
    result = _run(config, backfill=("2023-07-18", "2023-07-24"))
    guard = _check(result, futures.CHECK_EXPIRY_GUARD)
    assert not guard.passed and guard.severity == dg.AssetCheckSeverity.WARN
    assert "a backfill only reports it" in guard.description
    assert "downstream" in _materialized(result)
    assert futures.FUTURES_POSITIONS not in Lake(tmp_path / "lake").tables()  # today's positions are not the past's


def test_orders_wait_for_the_guard_only_with_futures(folder, tmp_path):
    config = _config(tmp_path, folder)
    graph = build_definitions(load_config(str(config))).get_repository_def().asset_graph
    orders = graph.get(dg.AssetKey("orders"))
    assert dg.AssetKey(futures.FUTURES_POSITIONS) in orders.parent_keys
    (tmp_path / "stocks").mkdir()
    stocks = build_definitions(load_config(str(write_config(tmp_path / "stocks")))).get_repository_def().asset_graph
    assert dg.AssetKey(futures.MULTIPLE_PRICES) not in stocks.get_all_asset_keys()
    assert dg.AssetKey(futures.FUTURES_POSITIONS) not in stocks.get(dg.AssetKey("orders")).parent_keys


def test_contracts_on_a_session_and_positions_in_the_priced_contract():
    table = pd.DataFrame({
        "session": pd.to_datetime(["2023-07-21", "2023-07-24", "2023-07-25", "2023-07-21"]),
        "instrument": ["GOLD", "GOLD", "GOLD", "CORN"],
        "PRICE_CONTRACT": [20230800, 20230800, 20231000, 20231200],
        "FORWARD_CONTRACT": pd.array([20231000, 20231000, 20231200, pd.NA], dtype="Int64"),
        "CARRY_CONTRACT": pd.array([20231000, 20231000, 20231200, 20230900], dtype="Int64"),
    })
    on = contracts_on(table, "2023-07-24")
    assert on.loc["GOLD", ["priced_contract", "forward_contract"]].tolist() == ["202308", "202310"]
    assert on.loc["CORN", "priced_contract"] == "202312" and on.loc["CORN", "forward_contract"] is None
    assert on.loc["CORN", "as_of"] == pd.Timestamp("2023-07-21")
    held = positions_in_priced(pd.Series({"GOLD": 2.0, "CORN": 0.0, "MCL": -1.0}), on)
    assert held.to_dict("records") == [{"instrument": "GOLD", "contract": "202308", "position": 2.0},
                                       {"instrument": "MCL", "contract": None, "position": -1.0}]
