"""The options and arguments several commands share: ``--config``, ``--lake`` and dates checked as YYYY-MM-DD."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

import typer

__all__ = ["Config", "Lake", "check_date", "date_argument", "date_option"]

#: A session date as every command takes it.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

Config = Annotated[str | None, typer.Option(
    "--config", metavar="PATH", show_default=False,
    help="configuration YAML (default: $TRADING_PIPELINE_CONFIG or the bundled default)")]
Lake = Annotated[str | None, typer.Option(
    "--lake", metavar="PATH|URL", show_default=False,
    help="lake root: a folder or an object-store URL (default: lake_root of the configuration)")]


def check_date(value: str | None) -> str | None:
    """``value`` unchanged if it is a calendar date written YYYY-MM-DD (or None); else a usage error."""
    if value is None:
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD, e.g. 2022-12-28") from None
    return value


def date_option(name: str, help: str) -> Any:
    """An option holding a date YYYY-MM-DD, checked before the command runs."""
    return typer.Option(name, metavar="YYYY-MM-DD", callback=check_date, show_default=False, help=help)


def date_argument(help: str) -> Any:
    """A positional date YYYY-MM-DD, checked before the command runs."""
    return typer.Argument(callback=check_date, show_default=False, help=help)
