"""The ledger's tables: their DDL, column lists and allowed values, and the upgrade of a ledger
file written with an older layout.

The groups of tables in one DuckDB file: ``order_intents`` (with the broker's answers, the
market-fallback and what-if columns), ``order_events``, ``fills``, ``trading_state_log``,
``alerts``, ``quarantine_releases``, ``position_breaks`` with ``position_adjustments``,
``capital`` (the capital each daily run sized with), ``source_errors`` (inputs a bar source could
not read) and ``missing_bars`` (sessions without a clean bar, with the reason and action). :meth:`pipeline.store.ledger.Ledger.init` creates them
and upgrades older layouts in one transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pandas as pd

#: The life of an intent: INTENT (written, not yet sent) -> SUBMITTED (given to the broker) ->
#: ACKNOWLEDGED (the broker holds it: permId known) -> PARTIALLY_FILLED -> FILLED, CANCELLED or
#: REJECTED; DENIED by the pre-trade gate; RECORDED in record-only runs (never sent).
INTENT_STATUSES = (
    "INTENT", "SUBMITTED", "ACKNOWLEDGED", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED",
    "DENIED", "RECORDED",
)
#: Statuses of an intent whose outcome at the broker is not yet final in the ledger.
OPEN_STATUSES = ("INTENT", "SUBMITTED", "ACKNOWLEDGED", "PARTIALLY_FILLED")
MODES = ("submit", "record_only")
ORDER_TYPES = ("MKT", "LMT")
#: Roll states of a futures instrument (``roll_states``; :class:`pipeline.futures.roll_states.RollState`).
ROLL_STATES = ("No_Roll", "Passive", "Force", "Force_Outright", "Close", "No_Open", "Roll_Adjusted")

#: Columns written by :meth:`Ledger.record_intents` (the first 16 required, the rest optional).
_WRITTEN = (
    "order_ref", "strategy", "session", "instrument", "seq", "quantity", "side", "order_type",
    "reference_price", "target_position", "position_before", "status", "mode",
    "verdict", "deny_reason", "run_id", "limit_price", "account", "code_version", "input_hash",
    "parent_ref", "planned_quantity", "adjust_reason", "contract", "spread_contract", "contract_price", "roll_state",
)
_REQUIRED = _WRITTEN[:13]
_TYPES = dict(zip(_WRITTEN, (
    "VARCHAR", "VARCHAR", "DATE", "VARCHAR", "INTEGER", "DOUBLE", "VARCHAR", "VARCHAR",
    "DOUBLE", "DOUBLE", "DOUBLE", "VARCHAR", "VARCHAR",
    "VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "VARCHAR", "VARCHAR", "VARCHAR",
    "VARCHAR", "DOUBLE", "VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "VARCHAR",
)))  # fmt: skip
#: The dated-contract columns of an intent (futures with roll parameters; NULL otherwise): the
#: contract month, a calendar spread's forward leg, the spread's priced-leg price, and the roll
#: state the order was routed under. Added to older ledgers by :meth:`Ledger.init`.
CONTRACT_INTENT_COLUMNS = {"contract": "VARCHAR", "spread_contract": "VARCHAR", "contract_price": "DOUBLE",
                           "roll_state": "VARCHAR"}
#: A dry run's what-if preview of the intent (:meth:`Ledger.record_what_if`).
_WHAT_IF_COLUMNS = ("what_if_init_margin", "what_if_maint_margin", "what_if_commission", "what_if_currency")
#: Set from the broker's answers (:meth:`Ledger.record_broker_order`).
_BROKER_COLUMNS = (
    "perm_id", "broker_order_id", "filled_quantity", "avg_fill_price", "commission", "status_reason",
    "submitted_at",
)
INTENT_COLUMNS = (
    "order_ref", "strategy", "session", "instrument", "seq", "quantity", "side", "order_type",
    "reference_price", "target_position", "position_before", "verdict", "deny_reason", "status",
    "mode", "run_id", "limit_price", "account", "code_version", "input_hash", *_BROKER_COLUMNS,
    "parent_ref", "fallback_at", *_WHAT_IF_COLUMNS, "planned_quantity", "adjust_reason", "created_at", "updated_at",
    *CONTRACT_INTENT_COLUMNS,
)
FILL_COLUMNS = (
    "fill_id", "order_ref", "broker", "session", "instrument", "quantity", "price", "commission",
    "slippage_cost", "filled_at", "perm_id", "contract",
)
EVENT_COLUMNS = (
    "order_ref", "event_at", "status", "perm_id", "broker_order_id", "filled_quantity", "remaining",
    "avg_fill_price", "detail", "run_id",
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS order_intents (
    order_ref VARCHAR PRIMARY KEY,
    strategy VARCHAR NOT NULL,
    session DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 1),
    quantity DOUBLE NOT NULL,
    side VARCHAR NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type VARCHAR NOT NULL CHECK (order_type IN {ORDER_TYPES}),
    reference_price DOUBLE,
    target_position DOUBLE,
    position_before DOUBLE,
    verdict VARCHAR CHECK (verdict IN ('ACCEPTED', 'DENIED')),
    deny_reason VARCHAR,
    status VARCHAR NOT NULL CHECK (status IN {INTENT_STATUSES}),
    mode VARCHAR NOT NULL CHECK (mode IN {MODES}),
    run_id VARCHAR,
    limit_price DOUBLE,
    account VARCHAR,
    code_version VARCHAR,
    input_hash VARCHAR,
    perm_id BIGINT,
    broker_order_id BIGINT,
    filled_quantity DOUBLE,
    avg_fill_price DOUBLE,
    commission DOUBLE,
    status_reason VARCHAR,
    submitted_at TIMESTAMPTZ,
    parent_ref VARCHAR,
    fallback_at TIMESTAMPTZ,
    what_if_init_margin DOUBLE,
    what_if_maint_margin DOUBLE,
    what_if_commission DOUBLE,
    what_if_currency VARCHAR,
    planned_quantity DOUBLE,
    adjust_reason VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    contract VARCHAR,
    spread_contract VARCHAR,
    contract_price DOUBLE,
    roll_state VARCHAR
);
CREATE TABLE IF NOT EXISTS order_events (
    order_ref VARCHAR NOT NULL,
    event_at TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,
    perm_id BIGINT,
    broker_order_id BIGINT,
    filled_quantity DOUBLE,
    remaining DOUBLE,
    avg_fill_price DOUBLE,
    detail VARCHAR,
    run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS fills (
    fill_id VARCHAR PRIMARY KEY,
    order_ref VARCHAR NOT NULL,
    broker VARCHAR NOT NULL,
    session DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    quantity DOUBLE NOT NULL,
    price DOUBLE NOT NULL,
    commission DOUBLE NOT NULL,
    slippage_cost DOUBLE NOT NULL,
    filled_at TIMESTAMPTZ NOT NULL,
    perm_id BIGINT,
    contract VARCHAR
);
CREATE TABLE IF NOT EXISTS trading_state_log (
    changed_at TIMESTAMPTZ NOT NULL,
    state VARCHAR NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    reason VARCHAR NOT NULL,
    changed_by VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    kind VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    subject VARCHAR,
    message VARCHAR NOT NULL,
    dedupe_key VARCHAR UNIQUE
);
CREATE TABLE IF NOT EXISTS quarantine_releases (
    session DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    released_by VARCHAR NOT NULL,
    released_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session, instrument, rule)
);
CREATE TABLE IF NOT EXISTS position_breaks (
    break_id VARCHAR PRIMARY KEY,
    broker VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    contract VARCHAR NOT NULL,
    session DATE NOT NULL,
    last_session DATE NOT NULL,
    expected DOUBLE NOT NULL,
    broker_position DOUBLE NOT NULL,
    difference DOUBLE NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    run_id VARCHAR,
    resolved_at TIMESTAMPTZ,
    resolution VARCHAR CHECK (resolution IN ('cleared', 'adopted')),
    resolved_by VARCHAR,
    reason VARCHAR
);
CREATE TABLE IF NOT EXISTS capital (
    session DATE PRIMARY KEY,
    capital DOUBLE NOT NULL CHECK (capital > 0),
    source VARCHAR NOT NULL CHECK (source IN ('config', 'account')),
    net_liquidation DOUBLE,
    fraction DOUBLE,
    base_currency VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR,
    note VARCHAR
);
CREATE TABLE IF NOT EXISTS source_errors (
    error_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    file VARCHAR,
    instrument VARCHAR,
    kind VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    first_run_id VARCHAR,
    last_run_id VARCHAR,
    fetch_start DATE,
    fetch_end DATE,
    resolved_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS missing_bars (
    session DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    reason VARCHAR NOT NULL CHECK (reason IN ('missing', 'quarantined', 'flagged', 'ended', 'no_data')),
    policy VARCHAR NOT NULL CHECK (policy IN ('block', 'carry', 'omit')),
    action VARCHAR NOT NULL CHECK (action IN ('blocked', 'carried', 'left_out')),
    last_bar DATE,
    run_id VARCHAR,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session, instrument)
);
CREATE TABLE IF NOT EXISTS roll_states (
    instrument VARCHAR NOT NULL,
    state VARCHAR NOT NULL CHECK (state IN {ROLL_STATES}),
    reason VARCHAR NOT NULL,
    set_by VARCHAR NOT NULL,
    set_at TIMESTAMPTZ NOT NULL,
    session DATE
);
CREATE TABLE IF NOT EXISTS position_adjustments (
    adjusted_at TIMESTAMPTZ NOT NULL,
    broker VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    contract VARCHAR NOT NULL,
    quantity DOUBLE NOT NULL,
    expected_before DOUBLE NOT NULL,
    broker_position DOUBLE NOT NULL,
    adopted_by VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    break_id VARCHAR
);
"""


def _needs_upgrade(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``order_intents`` exists with an older layout (no ``submitted_at`` column)."""
    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'order_intents'"
    ).fetchall()}
    return bool(cols) and "submitted_at" not in cols


def _upgrade_intents(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild ``order_intents`` with the current schema (CHECK constraints cannot be altered in
    DuckDB), copying every row; runs inside :meth:`Ledger.init`'s transaction."""
    old = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'order_intents'"
    ).fetchall()]
    con.execute("ALTER TABLE order_intents RENAME TO order_intents_previous")
    con.execute(_SCHEMA)
    common = ", ".join(c for c in old if c in INTENT_COLUMNS)
    con.execute(f"INSERT INTO order_intents ({common}) SELECT {common} FROM order_intents_previous")
    con.execute("DROP TABLE order_intents_previous")


def _session_date(session: Any) -> dt.date:
    """A session given as str, date or Timestamp, as a ``datetime.date``."""
    return pd.Timestamp(session).date()
