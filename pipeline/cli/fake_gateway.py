"""The ``fake-gateway`` command: a fake IB Gateway on this machine, to rehearse the live loop offline."""

from __future__ import annotations

import hashlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.adapters.ib.fake_gateway import FakeContract

__all__ = ["commands", "fake_contract", "fake_gateway"]

commands = typer.Typer(rich_markup_mode="markdown")
PANEL = "Rehearsal"


def fake_contract(instrument) -> FakeContract:
    """The fake's contract of a configured instrument: IB's security type (futures as CONTFUT,
    pairs as CASH base/quote) and a stable made-up conId derived from the symbol."""
    from pipeline.adapters.ib.fake_gateway import FakeContract

    con_id = int(hashlib.sha256(instrument.symbol.encode()).hexdigest()[:7], 16)
    st = instrument.sec_type
    if st == "CASH":
        pair = instrument.symbol.replace(".", "").replace("/", "").upper()
        base, quote = (pair[:3], pair[3:]) if len(pair) == 6 else (pair, instrument.currency)
        return FakeContract(base, "CASH", "IDEALPRO", quote, con_id, local_symbol=f"{base}.{quote}", min_tick=0.00005)
    if st == "FUT":
        return FakeContract(instrument.symbol, "CONTFUT", instrument.exchange, instrument.currency, con_id,
                            multiplier=f"{instrument.point_size:g}", time_zone="America/Chicago")
    sec_type = "IND" if st == "IND" else "STK"
    primary = "" if instrument.exchange.upper() == "SMART" else instrument.exchange
    exchange = instrument.exchange if st == "IND" else "SMART"
    return FakeContract(instrument.symbol, sec_type, exchange, instrument.currency, con_id, primary_exchange=primary)


def _bars(path: str | None, symbols: list[str]) -> pd.DataFrame:
    """The bars to serve: the file ``--bars``, else the bundled sample's bars of ``symbols``."""
    import pandas as pd

    if path is None:
        from pipeline.adapters.sources import SampleSource

        source = SampleSource()
        have = [s for s in symbols if s in set(source.instruments())]
        return source.fetch(have, pd.Timestamp("1990-01-01"), pd.Timestamp.now().normalize()) if have else pd.DataFrame()
    p = Path(path)
    if not p.is_file():
        raise common.CliError(f"error: --bars {p} does not exist; give a CSV or Parquet file of daily bars")
    bars = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    missing = {"session", "instrument", "close"} - set(bars.columns)
    if missing:
        raise common.CliError(f"error: {p} lacks the columns {sorted(missing)} (needs session, instrument, close)")
    return bars


@commands.command(
    "fake-gateway", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline fake-gateway --port 4002 --bars bars.csv")
def fake_gateway(
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1 (4002 is the Gateway paper port)")] = 4002,
    bars: Annotated[str | None, typer.Option(
        "--bars", metavar="FILE", show_default=False,
        help="CSV or Parquet of daily bars: session, instrument, close and optional open, high, low, volume "
             "(default: the bundled sample)")] = None,
    account: Annotated[str, typer.Option("--account", help="the managed (paper) account")] = "DU1234567",
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Serve a fake IB Gateway (TWS API) on 127.0.0.1 for offline rehearsals.

    It serves the configured universe over the TWS API protocol that ib_async speaks: contract
    details, daily bars, and a simulated paper account whose market orders fill at the last close.
    Point source.ib and broker.ib of a configuration at the port and run trading-pipeline daily;
    stop the gateway with Ctrl-C (or SIGTERM). Orders and positions live in memory only.
    """
    import pandas as pd

    from pipeline.adapters.ib.fake_gateway import FakeTWS

    cfg = common.load_config(config, None)
    served_bars = _bars(bars, cfg.symbols)
    fake = FakeTWS(account=account, port=port, lifetime=None, idle_timeout=24 * 3600.0)
    for inst in cfg.instruments:
        contract = fake_contract(inst)
        mine = served_bars[served_bars["instrument"] == inst.symbol] if len(served_bars) else served_bars
        if len(mine):
            close = mine["close"].astype(float)
            served = pd.DataFrame({
                "session": pd.to_datetime(mine["session"]).to_numpy(),
                "close": close.to_numpy(),
                **{c: (mine[c].astype(float).fillna(close) if c in mine else close).to_numpy()
                   for c in ("open", "high", "low")},
                "volume": (mine["volume"].astype(float).fillna(0.0) if "volume" in mine else close * 0).to_numpy(),
            }).dropna(subset=["close"])
            fake.add(contract, served)
        else:
            fake.add(contract)
    try:
        fake.start()
    except RuntimeError as exc:
        print(f"error: {exc} (is port {port} already in use?)", file=sys.stderr)
        return 1
    print(f"fake IB Gateway on 127.0.0.1:{fake.port}, account {account}, "
          f"{len(cfg.instruments)} contracts; Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: fake.stop())  # a service manager stops it cleanly too
    try:
        fake.wait()
    except KeyboardInterrupt:
        fake.stop()
    return 0
