"""Futures price series: roll parameters, roll calendars and back-adjusted (Panama) prices.

pysystemtrade's model of a futures instrument (``sysobjects/``): contract prices per dated
contract, **multiple prices** (the priced, carry and forward contracts on each date) and one
**adjusted** (back-adjusted) series for signals and volatility. This package turns multiple
prices into adjusted prices (:mod:`pipeline.futures.adjusted`), plans roll calendars from
``rollconfig.csv`` parameters and reads the actual rolls back out of multiple prices
(:mod:`pipeline.futures.roll_calendar`), on the roll parameters, month codes, contract ids and
expiries of :mod:`pipeline.futures.rolls`. Roll states, the roll policy and the trades each state
allows are in :mod:`pipeline.futures.roll_states`; close-out dates, the expiry guard and the orphan
report in :mod:`pipeline.futures.expiry`. Plain pandas / numpy; no Dagster.
"""

from pipeline.futures.adjusted import panama_stitch, roll_gaps
from pipeline.futures.expiry import (
    close_out_dates,
    expiry_guard,
    instrument_close_outs,
    orphan_positions,
)
from pipeline.futures.multiple_prices import (
    check_multiple_prices,
    read_multiple_prices,
    read_multiple_prices_csv,
)
from pipeline.futures.roll_calendar import (
    actual_roll_calendar,
    compare_roll_calendars,
    held_contracts,
    roll_calendar,
    summarise_comparison,
)
from pipeline.futures.roll_states import (
    RollPolicy,
    RollState,
    allowed_trade,
    allowed_trades,
    parse_roll_state,
    planned_contracts,
    roll_parameters_of,
    roll_policy,
)
from pipeline.futures.rolls import (
    MONTH_LETTERS,
    FuturesDataError,
    RollParameters,
    approx_expiry,
    carry_contracts,
    contract_id,
    cycle_months,
    expiry_dates,
    letter_month,
    month_letter,
    normalise_contract,
    read_roll_config,
    roll_parameters,
)

__all__ = [
    "MONTH_LETTERS",
    "FuturesDataError",
    "RollParameters",
    "RollPolicy",
    "RollState",
    "actual_roll_calendar",
    "allowed_trade",
    "allowed_trades",
    "approx_expiry",
    "carry_contracts",
    "check_multiple_prices",
    "close_out_dates",
    "compare_roll_calendars",
    "contract_id",
    "cycle_months",
    "expiry_dates",
    "expiry_guard",
    "held_contracts",
    "instrument_close_outs",
    "letter_month",
    "month_letter",
    "normalise_contract",
    "orphan_positions",
    "panama_stitch",
    "parse_roll_state",
    "planned_contracts",
    "read_multiple_prices",
    "read_multiple_prices_csv",
    "read_roll_config",
    "roll_calendar",
    "roll_gaps",
    "roll_parameters",
    "roll_parameters_of",
    "roll_policy",
    "summarise_comparison",
]
