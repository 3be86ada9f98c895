"""The pysystemtrade source (``source.kind: pysystemtrade``) and instruments given by symbol alone.

The three layouts of a pysystemtrade data folder are written here from the shared Parquet tables
(``write_csv_folder``, ``write_parquet_folder``, ``write_legacy_folder``) for a few instruments, so
the same prices sit in each and the source must read them to the same bars. Tests that need the
shared data skip cleanly without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.adapters.pysystemtrade import read_instrument_config, to_instruments
from pipeline.adapters.sources import PysystemtradeSource, make_source
from pipeline.bars import BAR_COLUMNS, SourceDataError, SourceError
from pipeline.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    PipelineConfig,
    SourceConfig,
    load_config,
    pysystemtrade_folder,
)
from pipeline.store.lake import Lake
from tests.conftest import SHARED_DATA, require_shared_data

CARVER_2016 = SHARED_DATA / "futures_carver_2016"
CARVER_2023 = SHARED_DATA / "futures_carver_2023"
needs_2016 = pytest.mark.shared_data(CARVER_2016)
needs_2023 = pytest.mark.shared_data(CARVER_2023)
#: Three futures with multiple prices in the 2023 set: a bond, a grain and a euro-priced index.
FEW = ["CORN", "EUROSTX", "US10"]
START, END = pd.Timestamp("1970-01-01"), pd.Timestamp("2030-12-31")


# ----------------------------------------------------------------------------------- writers


def _shared_tables(instruments: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    adjusted = pd.read_parquet(CARVER_2023 / "adjusted_prices_daily.parquet", filters=[("instrument", "in", instruments)])
    multiple = pd.read_parquet(CARVER_2023 / "multiple_prices_daily.parquet", filters=[("instrument", "in", instruments)])
    return adjusted, multiple


def _copy_config_and_fx(out: Path) -> None:
    shutil.copytree(CARVER_2023 / "csvconfig", out / "csvconfig")
    (out / "fx_prices_csv").mkdir()
    shutil.copy(CARVER_2023 / "fx_prices_csv" / "EURUSD.csv", out / "fx_prices_csv" / "EURUSD.csv")


def write_csv_folder(out: Path, instruments: list[str] = FEW, intraday: bool = True) -> Path:
    """pysystemtrade's CSV folders from the shared Parquet tables, as its repository holds them.

    ``adjusted_prices_csv/X.csv`` (``DATETIME,price``) and ``multiple_prices_csv/X.csv``
    (``DATETIME,CARRY,CARRY_CONTRACT,PRICE,PRICE_CONTRACT,FORWARD,FORWARD_CONTRACT``), rows stamped
    ``23:00:00``; with ``intraday``, every seventh day also gets an earlier ``14:00:00`` row with
    another price (the reader keeps the day's last row). ``csvconfig/`` and ``fx_prices_csv/EURUSD.csv``
    are copied.
    """
    adjusted, multiple = _shared_tables(instruments)
    (out / "adjusted_prices_csv").mkdir(parents=True)
    (out / "multiple_prices_csv").mkdir()
    for instrument, rows in adjusted.groupby("instrument"):
        stamp = pd.to_datetime(rows["date"]).dt.strftime("%Y-%m-%d 23:00:00")
        frame = pd.DataFrame({"DATETIME": stamp, "price": rows["price"]})
        if intraday:
            extra = frame.iloc[::7].assign(DATETIME=lambda f: f["DATETIME"].str.replace("23:00", "14:00"),
                                           price=lambda f: f["price"] + 0.5)
            frame = pd.concat([extra, frame]).sort_values("DATETIME", kind="stable")
        frame.to_csv(out / "adjusted_prices_csv" / f"{instrument}.csv", index=False)
    columns = ["CARRY", "CARRY_CONTRACT", "PRICE", "PRICE_CONTRACT", "FORWARD", "FORWARD_CONTRACT"]
    for instrument, rows in multiple.groupby("instrument"):
        frame = rows[columns].assign(DATETIME=pd.to_datetime(rows["date"]).dt.strftime("%Y-%m-%d 23:00:00"))
        frame[["DATETIME", *columns]].to_csv(out / "multiple_prices_csv" / f"{instrument}.csv", index=False)
    _copy_config_and_fx(out)
    return out


def write_parquet_folder(out: Path, instruments: list[str] = FEW) -> Path:
    """The shared Parquet layout restricted to ``instruments`` (tables, ``csvconfig/``, FX)."""
    adjusted, multiple = _shared_tables(instruments)
    out.mkdir(parents=True)
    adjusted.to_parquet(out / "adjusted_prices_daily.parquet", index=False)
    multiple.to_parquet(out / "multiple_prices_daily.parquet", index=False)
    _copy_config_and_fx(out)
    return out


def write_legacy_folder(out: Path, instruments: list[str] = FEW) -> Path:
    """The 2016 layout with the 2023 prices: ``X_price.csv`` (``DATETIME,PRICE``), ``X_carrydata.csv``
    (``DATETIME,PRICE,CARRY,CARRY_CONTRACT,PRICE_CONTRACT``, contracts ``yyyymm``), ``EURUSDfx.csv``
    (``DATETIME,FX``), ``instrumentconfig.csv`` and ``costs_analysis.csv`` (legacy columns)."""
    adjusted, multiple = _shared_tables(instruments)
    out.mkdir(parents=True)
    for instrument, rows in adjusted.groupby("instrument"):
        pd.DataFrame({"DATETIME": pd.to_datetime(rows["date"]).dt.strftime("%Y-%m-%d"), "PRICE": rows["price"]}).to_csv(
            out / f"{instrument}_price.csv", index=False)
    for instrument, rows in multiple.groupby("instrument"):
        pd.DataFrame({
            "DATETIME": pd.to_datetime(rows["date"]).dt.strftime("%Y-%m-%d"), "PRICE": rows["PRICE"],
            "CARRY": rows["CARRY"], "CARRY_CONTRACT": rows["CARRY_CONTRACT"] // 100,
            "PRICE_CONTRACT": rows["PRICE_CONTRACT"] // 100,
        }).to_csv(out / f"{instrument}_carrydata.csv", index=False)
    fx = pd.read_csv(CARVER_2023 / "fx_prices_csv" / "EURUSD.csv").rename(columns={"PRICE": "FX"})
    fx.to_csv(out / "EURUSDfx.csv", index=False)
    config = pd.read_csv(CARVER_2023 / "csvconfig" / "instrumentconfig.csv")
    config[["Instrument", "Pointsize", "AssetClass", "Currency"]].to_csv(out / "instrumentconfig.csv", index=False)
    spread = pd.read_csv(CARVER_2023 / "csvconfig" / "spreadcosts.csv").set_index("Instrument")["SpreadCost"]
    costs = config.assign(Slippage=config["Instrument"].map(spread))
    costs[["Instrument", "Slippage", "PerBlock", "Percentage", "PerTrade"]].to_csv(out / "costs_analysis.csv", index=False)
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    require_shared_data(CARVER_2023)
    root = tmp_path_factory.mktemp("pst")
    return {
        "csv": write_csv_folder(root / "csv"),
        "parquet": write_parquet_folder(root / "parquet"),
        "legacy": write_legacy_folder(root / "legacy"),
    }


def _config(folder: Path, instruments, tmp_path: Path, **extra) -> Path:
    raw = {"lake_root": str(tmp_path / "lake"), "source": {"kind": "pysystemtrade", "path": str(folder)},
           "instruments": instruments, **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------- layouts


def test_the_three_layouts_give_identical_bars_instruments_and_multiple_prices(layouts):
    sources = {name: PysystemtradeSource(folder) for name, folder in layouts.items()}
    assert {name: s.layout.layout for name, s in sources.items()} == {"csv": "csv", "parquet": "parquet",
                                                                       "legacy": "legacy"}
    for source in sources.values():
        assert source.instruments() == FEW  # names from the data: never CORN_price
    bars = {name: s.fetch(FEW, START, END) for name, s in sources.items()}
    reference = bars["parquet"].drop(columns="fetched_at")
    assert list(bars["csv"].columns) == BAR_COLUMNS
    assert (reference["source"] == "pysystemtrade:adjusted").all()
    for name in ("csv", "legacy"):
        pd.testing.assert_frame_equal(bars[name].drop(columns="fetched_at"), reference, check_exact=True, obj=name)
    # real numbers: US10's last bar, the 2023 file's last price, and the bar count per instrument
    us10 = reference[reference["instrument"] == "US10"]
    assert us10["session"].max() == pd.Timestamp("2023-08-31")
    assert us10["close"].iloc[-1] == pytest.approx(111.078125)
    multiple = {name: s.multiple_prices(["US10", "CORN"]) for name, s in sources.items()}
    for name in ("csv", "legacy"):
        for field in ("price", "carry", "price_contract", "carry_contract"):
            pd.testing.assert_frame_equal(getattr(multiple[name], field), getattr(multiple["parquet"], field),
                                          obj=f"{name} {field}")
    pd.testing.assert_frame_equal(multiple["csv"].forward, multiple["parquet"].forward)
    assert multiple["legacy"].forward.isna().all().all()  # the legacy layout has no forward


def test_bars_are_pysystemtrades_business_day_resample_of_the_files_rows(layouts):
    # the independent computation: pandas' resample("1B").last() of the raw rows (pst rawdata)
    raw = pd.read_parquet(layouts["parquet"] / "adjusted_prices_daily.parquet")
    corn = raw[raw["instrument"] == "CORN"].set_index("date")["price"].sort_index()
    expected = corn.resample("1B").last().dropna()
    bars = PysystemtradeSource(layouts["csv"]).fetch(["CORN"], START, END)  # intraday rows in these files
    got = bars.set_index("session")["close"]
    assert len(corn) > len(expected)  # some weekend rows were folded into their Friday
    np.testing.assert_array_equal(got.index.to_numpy(), expected.index.as_unit("us").to_numpy())
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


def test_intraday_rows_reduce_to_the_last_row_of_the_day_and_sundays_to_friday(tmp_path):
    folder = tmp_path / "adjusted_prices_csv"
    folder.mkdir()
    (folder / "GOLD.csv").write_text(
        "DATETIME,price\n2020-01-02 14:00:00,1500.0\n2020-01-02 23:00:00,1510.0\n"
        "2020-01-03 23:00:00,1520.0\n2020-01-05 22:00:00,1525.0\n2020-01-06 23:00:00,1530.0\n")
    source = PysystemtradeSource(tmp_path)
    bars = source.fetch(["GOLD"], START, END)
    assert bars["session"].dt.strftime("%m-%d").tolist() == ["01-02", "01-03", "01-06"]
    assert bars["close"].tolist() == [1510.0, 1525.0, 1530.0]  # the day's last row; Sunday's price on Friday
    assert source.last_session(["GOLD"]) == pd.Timestamp("2020-01-06")


def test_unreadable_files_are_reported_and_the_others_served(tmp_path):
    folder = tmp_path / "adjusted_prices_csv"
    folder.mkdir()
    (folder / "GOOD.csv").write_text("DATETIME,price\n2020-01-02 23:00:00,10.0\n2020-01-03 23:00:00,11.0\n")
    (folder / "BAD.csv").write_text("DATETIME,price\n2020-01-02 23:00:00,10.0\n2020-01-03 23:00:00,ten\n")
    (folder / "BIN.csv").write_bytes(b"DATETIME,price\n\x00\x01\x02")
    source = make_source(SourceConfig(kind="pysystemtrade", path=str(tmp_path)))
    report = source.fetch_report(["GOOD", "BAD", "BIN"], START, END)
    assert report.bars["instrument"].unique().tolist() == ["GOOD"] and report.bars["close"].tolist() == [10.0, 11.0]
    rows = report.unreadable.set_index("instrument")
    assert rows.loc["BAD", "kind"] == "bad_row" and rows.loc["BIN", "kind"] == "binary"
    assert "BAD.csv, data row 2 (line 3)" in rows.loc["BAD", "reason"] and "'ten'" in rows.loc["BAD", "reason"]
    assert rows.loc["BAD", "fingerprint"].count(":") == 1
    assert report.missing == ["BAD", "BIN"]
    with pytest.raises(SourceDataError, match=r"BAD\.csv, data row 2"):
        source.fetch(["GOOD", "BAD"], START, END)
    assert source.last_session(["GOOD", "BAD"]) == pd.Timestamp("2020-01-03")  # the bad file is skipped


def test_unknown_instrument_and_bad_folders_are_named(tmp_path):
    folder = tmp_path / "adjusted_prices_csv"
    folder.mkdir()
    (folder / "GOLD.csv").write_text("DATETIME,price\n2020-01-02 23:00:00,1500.0\n")
    with pytest.raises(SourceDataError, match="SILVER.*GOLD"):
        PysystemtradeSource(tmp_path).fetch(["SILVER"], START, END)
    with pytest.raises(SourceError, match="holds no pysystemtrade prices"):
        PysystemtradeSource(folder)
    with pytest.raises(SourceError, match="source.path is not set"):
        make_source(SourceConfig(kind="pysystemtrade"))
    with pytest.raises(SourceDataError, match="no multiple prices"):
        PysystemtradeSource(tmp_path).multiple_prices("GOLD")


@needs_2016
def test_the_legacy_2016_folder_is_read_with_instrument_names_from_the_data():
    source = PysystemtradeSource(CARVER_2016)
    assert source.layout.layout == "legacy" and len(source.instruments()) == 38
    assert "EDOLLAR" in source.instruments() and not any(i.endswith("_price") for i in source.instruments())
    bars = source.fetch(["EDOLLAR"], pd.Timestamp("2015-12-07"), pd.Timestamp("2015-12-11"))
    # the file's rows (DATETIME,PRICE): 97.81, 97.825, 97.835, 97.77, 97.895
    assert bars["close"].round(6).tolist() == [97.81, 97.825, 97.835, 97.77, 97.895]
    m = source.multiple_prices("US10")
    last = m.price["US10"].last_valid_index()
    assert (m.price_contract.at[last, "US10"], m.carry_contract.at[last, "US10"]) == (20161200, 20170300)


# ----------------------------------------------------------------------------------- configuration


def test_symbols_alone_take_point_size_currency_asset_class_and_costs_from_the_folder(layouts, tmp_path):
    for name, folder in layouts.items():
        cfg = load_config(_config(folder, [{"symbol": "US10"}, "CORN", {"symbol": "EUROSTX"}], tmp_path))
        us10, corn, eurostx = cfg.instruments
        # csvconfig/instrumentconfig.csv and spreadcosts.csv (carver.md §2.10: US10 0.008 spread, 1.51 per block)
        assert (us10.sec_type, us10.back_adjusted, us10.point_size, us10.currency, us10.asset_class) == (
            "FUT", True, 1000.0, "USD", "Bond"), name
        assert (us10.costs.slippage, us10.costs.commission_per_unit) == (0.008, 1.51), name
        assert (corn.point_size, corn.costs.slippage, corn.costs.commission_per_unit) == (50.0, 0.16, 2.92), name
        assert (eurostx.currency, eurostx.point_size, eurostx.asset_class) == ("EUR", 10.0, "Equity"), name
        fx = Path(cfg.portfolio.fx_path)  # the folder's FX rates, for the EUR future
        assert fx == (folder if name == "legacy" else folder / "fx_prices_csv"), name


def test_explicit_fields_in_the_yaml_win_over_the_folder(layouts, tmp_path):
    entries = [{"symbol": "US10", "point_size": 500.0, "costs": {"slippage": 0.02}, "calendar": "XCBT"}]
    (us10,) = load_config(_config(layouts["csv"], entries, tmp_path, portfolio={"fx_path": "/elsewhere"})).instruments
    assert (us10.point_size, us10.calendar, us10.costs.slippage) == (500.0, "XCBT", 0.02)
    assert us10.costs.commission_per_unit == 1.51 and us10.currency == "USD"  # the rest from the folder
    cfg = load_config(_config(layouts["csv"], entries, tmp_path, portfolio={"fx_path": "/elsewhere"}))
    assert cfg.portfolio.fx_path == "/elsewhere"


def test_instruments_all_lists_every_instrument_of_the_folder_as_pysystemtrade_configures_it(layouts, tmp_path):
    cfg = load_config(_config(layouts["parquet"], "all", tmp_path))
    assert cfg.symbols == FEW
    frame = read_instrument_config(layouts["parquet"] / "csvconfig" / "instrumentconfig.csv",
                                   layouts["parquet"] / "csvconfig" / "spreadcosts.csv")
    expected = {i.symbol: i for i in to_instruments(frame.loc[FEW])}  # the adapter's reading of the same files
    assert {i.symbol: i for i in cfg.instruments} == expected


@needs_2023
def test_every_2023_instrument_resolves_as_the_adapter_reads_its_config(tmp_path):
    cfg = load_config(_config(CARVER_2023, "all", tmp_path))
    assert len(cfg.instruments) == 238
    frame = read_instrument_config(CARVER_2023 / "csvconfig" / "instrumentconfig.csv",
                                   CARVER_2023 / "csvconfig" / "spreadcosts.csv")
    expected = {i.symbol: i for i in to_instruments(frame.loc[cfg.symbols])}
    assert {i.symbol: i for i in cfg.instruments} == expected


def test_a_symbol_the_folder_does_not_hold_is_a_one_line_error(layouts, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_config(layouts["csv"], [{"symbol": "US10"}, {"symbol": "EDOLLAR"}], tmp_path))
    message = str(err.value)
    assert "\n" not in message and "['EDOLLAR']" in message and "CORN, EUROSTX, US10" in message
    with pytest.raises(ConfigError, match="instruments: all needs source.kind: pysystemtrade"):
        load_config(_config(layouts["csv"], "all", tmp_path, source={"kind": "files", "path": str(tmp_path)}))
    with pytest.raises(ConfigError, match="holds no pysystemtrade prices"):
        load_config(_config(tmp_path, ["US10"], tmp_path))


def test_a_config_built_without_load_config_must_not_keep_bare_symbols(layouts):
    raw = {"source": {"kind": "pysystemtrade", "path": str(layouts["csv"])}, "instruments": [{"symbol": "US10"}]}
    with pytest.raises(ValueError, match="given by symbol alone"):
        PipelineConfig.model_validate(raw)


def test_pysystemtrade_folder_finds_each_layouts_files(layouts):
    csv = pysystemtrade_folder(layouts["csv"])
    assert (csv.adjusted.name, csv.multiple.name, csv.fx.name) == ("adjusted_prices_csv", "multiple_prices_csv",
                                                                    "fx_prices_csv")
    assert (csv.instrument_config.parent.name, csv.costs.name) == ("csvconfig", "spreadcosts.csv")
    legacy = pysystemtrade_folder(layouts["legacy"])
    assert (legacy.costs.name, legacy.fx) == ("costs_analysis.csv", layouts["legacy"])


# ----------------------------------------------------------------------------------- the CLI


def test_a_cli_backfill_runs_on_a_pysystemtrade_csv_folder_with_symbols_only(layouts, tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw |= {
        "lake_root": str(tmp_path / "lake"), "history_start": "2021-01-04",
        "source": {"kind": "pysystemtrade", "path": str(layouts["csv"])},
        "instruments": [{"symbol": s} for s in FEW],
        "quality": {**raw.get("quality", {}), "missing_bar_policy": "carry", "spike_severity": "WARN"},
    }
    raw["portfolio"] = {**raw.get("portfolio", {}), "capital": 10_000_000.0, "fx_path": None}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "TRADING_PIPELINE_CONFIG"}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "2023-08-21", "2023-08-31",
                           "--config", str(config)], check=False, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lake = Lake(tmp_path / "lake")
    raw_bars = lake.read("raw_bars")
    assert set(raw_bars["instrument"]) == set(FEW) and (raw_bars["source"] == "pysystemtrade:adjusted").all()
    us10 = raw_bars[(raw_bars["instrument"] == "US10") & (raw_bars["session"] == pd.Timestamp("2023-08-31"))]
    assert us10["close"].tolist() == [pytest.approx(111.078125)]
    targets = lake.read("target_positions", start=pd.Timestamp("2023-08-21"))
    assert set(targets["instrument"]) == set(FEW)
    last = targets[targets["session"] == pd.Timestamp("2023-08-31")]
    assert len(last) == 3 and (last["target"] != 0).all()  # contracts held in each of the three futures
