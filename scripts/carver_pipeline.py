"""The pipeline on pysystemtrade's 238-instrument futures set: bars folder and configuration.

    python scripts/carver_pipeline.py OUT                 # needs ../shared/data/futures_carver_2023
    trading-pipeline backfill 2013-09-03 2023-08-31 --config OUT/config.yaml --lake OUT/lake

writes ``OUT/bars/carver_adjusted.parquet`` (long: ``instrument, session, close``) and
``OUT/config.yaml`` (``source.kind: files`` on that folder). The instruments, point sizes,
currencies and costs come from pysystemtrade's ``instrumentconfig.csv`` and ``spreadcosts.csv``
(:func:`pipeline.adapters.pysystemtrade.read_instrument_config`, :func:`~pipeline.adapters.pysystemtrade.to_instruments`:
back-adjusted futures), FX rates from its ``fx_prices_csv`` folder (``portfolio.fx_path``).

The bars are the back-adjusted prices on the NYSE sessions (the partitions' calendar) from
``--history-start`` to the end of the data (2023-08-31): weekend rows move to the Friday before
(pysystemtrade's business-day resampling, :func:`scripts.carver_fidelity.to_business_days`) and
each instrument's last price is carried over the sessions it has none (another exchange's
holiday, a blank row), from its first price on. This makes every session complete, so the
blocking ``bars_complete`` check passes on a set whose exchanges are not NYSE's; the carried
prices show as stale-price warnings. The prices are pysystemtrade's, unshifted: 18 of these
back-adjusted series go to zero or below after 2010, which is valid for them (every instrument is
``back_adjusted``); ``vol_forecast``, whose percentage returns are undefined there, leaves those
instruments out and lists them. Price spikes are set to WARN (``quality.spike_severity``):
this set holds real moves over 8 vol units that a person would release one by one. What the
quality rules find in this data is in ``docs/data_quality.md``; this preparation is for running
and timing the pipeline at 238 instruments (``bench/bench_backfill.py --carver``).

    python scripts/carver_pipeline.py OUT --pysystemtrade
    trading-pipeline backtest --config OUT/config.yaml --out OUT/results

writes pysystemtrade's own CSV folders (``OUT/pst``: ``adjusted_prices_csv/``, ``multiple_prices_csv/``,
``csvconfig/``, ``fx_prices_csv/``) and a configuration that lists only ``instruments: all`` and the
capital on ``source.kind: pysystemtrade`` (:func:`write_pysystemtrade_csv`, :func:`pysystemtrade_config`):
the defaults trade it (docs/carver_fidelity.md, "Every future of the 2023 set with the defaults").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.adapters.pysystemtrade import (  # noqa: E402
    read_adjusted_prices,
    read_instrument_config,
    to_instruments,
)
from pipeline.calendar import sessions  # noqa: E402
from scripts.carver_fidelity import DEFAULT_DATA, to_business_days  # noqa: E402

#: First session of the prepared history: three and a half years before the 10-year backfill
#: (2013-09-03 .. 2023-08-31), enough for the vol, forecast scalar and instrument-weight estimates.
HISTORY_START = "2010-01-04"
#: Capital large enough that 238 instruments get whole contracts (the sample's 1M would round
#: most positions to zero), as in bench/bench_backtest.py.
CAPITAL = 50_000_000.0


def session_bars(prices: pd.DataFrame, start: str, calendar: str = "XNYS") -> pd.DataFrame:
    """Back-adjusted prices on the exchange sessions from ``start`` on, carried forward over gaps.

    Parameters
    ----------
    prices : DataFrame, index date, columns instrument: back-adjusted prices (price points).
    start : first session of the result.
    calendar : exchange_calendars code of the sessions.

    Returns
    -------
    DataFrame, columns ``instrument, session, close`` (long, sorted by session then instrument):
    one row per session and instrument from the instrument's first price (or ``start``) to the
    last date of ``prices``; a session without a price carries the instrument's last price.
    """
    business = to_business_days(prices)
    grid = sessions(start, business.index.max(), calendar)
    wide = business.reindex(business.index.union(grid)).ffill().reindex(grid)
    long = wide.rename_axis(index="session", columns="instrument").stack().dropna().rename("close").reset_index()
    return long[["instrument", "session", "close"]]


def prepare(out: Path, data: Path = DEFAULT_DATA, history_start: str = HISTORY_START) -> Path:
    """Write the bars folder and ``config.yaml`` under ``out``; return the config's path.

    Raises
    ------
    FileNotFoundError
        ``data`` is not pysystemtrade's 2023 set (its parquet files and ``csvconfig`` folder).
    """
    data, out = Path(data), Path(out)
    prices = read_adjusted_prices(data / "adjusted_prices_daily.parquet").prices
    config = read_instrument_config(data / "csvconfig" / "instrumentconfig.csv", data / "csvconfig" / "spreadcosts.csv")
    instruments = [i for i in to_instruments(config) if i.symbol in prices.columns]
    bars = session_bars(prices[[i.symbol for i in instruments]], history_start)
    (out / "bars").mkdir(parents=True, exist_ok=True)
    bars.to_parquet(out / "bars" / "carver_adjusted.parquet", index=False)
    cfg = {
        "lake_root": str(out / "lake"),
        "history_start": str(bars["session"].min().date()),
        "source": {"kind": "files", "path": str(out / "bars")},
        "instruments": [i.model_dump(mode="json", exclude_defaults=True) | {"symbol": i.symbol, "sec_type": "FUT"}
                        for i in instruments],
        "portfolio": {"capital": CAPITAL, "fx_path": str(data / "fx_prices_csv")},
        "quality": {"spike_severity": "WARN"},
    }
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


#: Quality settings of a futures set on other exchanges' calendars than the partitions' (NYSE), as
#: examples/pysystemtrade_ch15.yaml: a session without an instrument's bar carries its last close
#: (flagged stale), and a price spike is flagged rather than blocking the whole set.
FUTURES_QUALITY = {"missing_bar_policy": "carry", "spike_severity": "WARN"}


def write_pysystemtrade_csv(out: Path, data: Path = DEFAULT_DATA, instruments: list[str] | None = None) -> Path:
    """pysystemtrade's CSV folders (its repository's layout) from the 2023 set's Parquet tables.

    Writes ``out/adjusted_prices_csv/X.csv`` (``DATETIME,price``), ``out/multiple_prices_csv/X.csv``
    (``DATETIME,CARRY,CARRY_CONTRACT,PRICE,PRICE_CONTRACT,FORWARD,FORWARD_CONTRACT``), rows stamped
    ``23:00:00`` as pysystemtrade's files are, and copies ``csvconfig/`` and ``fx_prices_csv/``.

    Parameters
    ----------
    out : folder to create (must not hold these folders yet).
    data : pysystemtrade's 2023 set (``adjusted_prices_daily.parquet``, ``multiple_prices_daily.parquet``,
        ``csvconfig/``, ``fx_prices_csv/``).
    instruments : the instruments to write; None = every instrument of the adjusted prices.

    Returns
    -------
    Path : ``out``, a folder ``source: {kind: pysystemtrade, path: out}`` reads.

    Raises
    ------
    FileNotFoundError
        ``data`` lacks one of the tables or folders.
    """
    import shutil

    data, out = Path(data), Path(out)
    filters = None if instruments is None else [("instrument", "in", list(instruments))]
    adjusted = pd.read_parquet(data / "adjusted_prices_daily.parquet", filters=filters)
    multiple = pd.read_parquet(data / "multiple_prices_daily.parquet", filters=filters)
    (out / "adjusted_prices_csv").mkdir(parents=True)
    (out / "multiple_prices_csv").mkdir()
    adjusted = adjusted.assign(DATETIME=pd.to_datetime(adjusted["date"]).dt.strftime("%Y-%m-%d 23:00:00"))
    for instrument, rows in adjusted.groupby("instrument"):
        rows[["DATETIME", "price"]].to_csv(out / "adjusted_prices_csv" / f"{instrument}.csv", index=False)
    columns = ["DATETIME", "CARRY", "CARRY_CONTRACT", "PRICE", "PRICE_CONTRACT", "FORWARD", "FORWARD_CONTRACT"]
    multiple = multiple.assign(DATETIME=pd.to_datetime(multiple["date"]).dt.strftime("%Y-%m-%d 23:00:00"))
    for instrument, rows in multiple.groupby("instrument"):
        rows[columns].to_csv(out / "multiple_prices_csv" / f"{instrument}.csv", index=False)
    shutil.copytree(data / "csvconfig", out / "csvconfig")
    shutil.copytree(data / "fx_prices_csv", out / "fx_prices_csv")
    return out


def pysystemtrade_config(path: Path, folder: Path, instruments: list[str] | str = "all",
                         capital: float = CAPITAL, lake: Path | None = None) -> Path:
    """A configuration of symbols only on a pysystemtrade folder: the defaults for everything else
    but the capital and :data:`FUTURES_QUALITY` (point sizes, currencies, costs and FX from the folder).

    Returns the path written (``path``).
    """
    raw = {"lake_root": str(lake or Path(path).parent / "lake"),
           "source": {"kind": "pysystemtrade", "path": str(folder)},
           "instruments": instruments,
           "portfolio": {"capital": capital},
           "quality": dict(FUTURES_QUALITY)}
    Path(path).write_text(yaml.safe_dump(raw, sort_keys=False))
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for bars/ and config.yaml")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="pysystemtrade 2023 set (default: %(default)s)")
    parser.add_argument("--history-start", default=HISTORY_START, help="first session of the bars (default: %(default)s)")
    parser.add_argument("--pysystemtrade", action="store_true",
                        help="write pysystemtrade's CSV folders (OUT/pst) and a config of symbols only "
                        "(instruments: all, capital 50,000,000, the defaults otherwise) instead of a bars folder")
    args = parser.parse_args(argv)
    if not (args.data / "adjusted_prices_daily.parquet").exists():
        print(f"no pysystemtrade 2023 set at {args.data}: nothing written", file=sys.stderr)
        return 2
    if args.pysystemtrade:
        folder = write_pysystemtrade_csv(args.out / "pst", args.data)
        path = pysystemtrade_config(args.out / "config.yaml", folder)
        print(f"wrote {path} and {folder}")
        return 0
    path = prepare(args.out, args.data, args.history_start)
    print(f"wrote {path} and {args.out / 'bars'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
