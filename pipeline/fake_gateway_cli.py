"""``trading-pipeline fake-gateway``: a fake IB Gateway on this machine, to rehearse the live loop.

    trading-pipeline fake-gateway [--port 4002] [--bars FILE] [--account DU1234567]

It serves the configured universe (``--config``) over the TWS API protocol that ib_async speaks
(:mod:`pipeline.ib.fake_gateway`): contract details, daily bars from ``--bars`` (CSV or Parquet
with columns ``session, instrument, close`` and optional ``open, high, low, volume``; default the
bundled sample), and a simulated paper account whose market orders fill at the last close. Point
``source.ib`` and ``broker.ib`` of a config at the port and run ``trading-pipeline daily``; stop
the gateway with Ctrl-C (or SIGTERM). Orders and positions live in memory only.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
from pathlib import Path

import pandas as pd

__all__ = ["add_parser", "cmd_fake_gateway", "fake_contract"]


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``fake-gateway`` on the CLI's subparsers."""
    p = sub.add_parser("fake-gateway", parents=[common],
                       help="serve a fake IB Gateway (TWS API) on 127.0.0.1 for offline rehearsals")
    p.add_argument("--port", type=int, default=4002, help="TCP port on 127.0.0.1 (default 4002, the Gateway paper port)")
    p.add_argument("--bars", help="CSV or Parquet of daily bars (default: the bundled sample)")
    p.add_argument("--account", default="DU1234567", help="the managed (paper) account (default DU1234567)")
    p.set_defaults(func=cmd_fake_gateway)


def fake_contract(instrument) -> "FakeContract":  # noqa: F821 - imported lazily below
    """The fake's contract of a configured instrument: IB's security type (futures as CONTFUT,
    pairs as CASH base/quote) and a stable made-up conId derived from the symbol."""
    from pipeline.ib.fake_gateway import FakeContract

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
    if path is None:
        from pipeline.sources import SampleSource

        source = SampleSource()
        have = [s for s in symbols if s in set(source.instruments())]
        return source.fetch(have, pd.Timestamp("1990-01-01"), pd.Timestamp.now().normalize()) if have else pd.DataFrame()
    p = Path(path)
    bars = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    missing = {"session", "instrument", "close"} - set(bars.columns)
    if missing:
        raise SystemExit(f"error: {p} lacks the columns {sorted(missing)} (needs session, instrument, close)")
    return bars


def cmd_fake_gateway(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.ib.fake_gateway import FakeTWS

    cfg = load_config(args.config)
    bars = _bars(args.bars, cfg.symbols)
    fake = FakeTWS(account=args.account, port=args.port, lifetime=None, idle_timeout=24 * 3600.0)
    for inst in cfg.instruments:
        contract = fake_contract(inst)
        mine = bars[bars["instrument"] == inst.symbol] if len(bars) else bars
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
        print(f"error: {exc} (is port {args.port} already in use?)", file=sys.stderr)
        return 1
    print(f"fake IB Gateway on 127.0.0.1:{fake.port}, account {args.account}, "
          f"{len(cfg.instruments)} contracts; Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: fake.stop())  # a service manager stops it cleanly too
    try:
        fake.wait()
    except KeyboardInterrupt:
        fake.stop()
    return 0
