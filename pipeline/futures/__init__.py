"""Futures price series: roll parameters, roll calendars and back-adjusted (Panama) prices.

pysystemtrade's model of a futures instrument (``sysobjects/``): contract prices per dated
contract, **multiple prices** (the priced, carry and forward contracts on each date) and one
**adjusted** (back-adjusted) series for signals and volatility. This package turns multiple
prices into adjusted prices (:mod:`pipeline.futures.adjusted`), plans roll calendars from
``rollconfig.csv`` parameters and reads the actual rolls back out of multiple prices
(:mod:`pipeline.futures.roll_calendar`), on the roll parameters, month codes, contract ids and
expiries of :mod:`pipeline.futures.rolls`. Plain pandas / numpy; no Dagster.
"""

from pipeline.futures.adjusted import panama_stitch, roll_gaps
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
    "actual_roll_calendar",
    "approx_expiry",
    "carry_contracts",
    "check_multiple_prices",
    "compare_roll_calendars",
    "contract_id",
    "cycle_months",
    "expiry_dates",
    "held_contracts",
    "letter_month",
    "month_letter",
    "normalise_contract",
    "panama_stitch",
    "read_multiple_prices",
    "read_multiple_prices_csv",
    "read_roll_config",
    "roll_calendar",
    "roll_gaps",
    "roll_parameters",
    "summarise_comparison",
]
