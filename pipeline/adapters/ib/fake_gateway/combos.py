"""Combo (``BAG``) orders at the fake gateway: the legs a placeOrder carries, and the combo's price.

A ``BAG`` placeOrder (ib_async 2.1.0 ``Client.placeOrder``, ibapi 10.50 at server version 178)
carries, right after ``hidden`` (index 34), the combo legs (count, then conId, ratio, action,
exchange, openClose, shortSaleSlot, designatedLocation, exemptCode per leg), the order combo legs
(count, then a price per leg) and the smart combo routing parameters (count, then tag and value
each). Every later field moves by that block's length, which :func:`parse_combo` returns so the
server can still read ``overridePercentageConstraints`` and ``whatIf``.

A combo bought (BUY) trades each leg as its action says; sold (SELL), each leg the other way. One
unit of the combo is ``ratio`` units of each leg; its price is the sum over legs of ``+ratio x
price`` for a leg bought and ``-ratio x price`` for a leg sold (IB's combo price convention).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.adapters.ib.fake_gateway.book import FakeLeg

__all__ = ["LEGS_FIELD", "combo_price", "leg_action", "parse_combo"]

#: Index of the combo-leg count in a BAG placeOrder message (message id = index 0).
LEGS_FIELD = 35


def parse_combo(fields: list[str]) -> tuple[list[FakeLeg], int]:
    """The legs of a BAG placeOrder message and the number of fields its combo block adds.

    Parameters
    ----------
    fields : list of str
        The placeOrder message, message id first.

    Returns
    -------
    (legs, shift)
        ``legs`` in the order sent; ``shift``: how far the fields after the block moved
        (3 + 8 x legs + order combo legs + 2 x parameters).

    Raises
    ------
    ValueError
        The block is truncated, a count or conId is not an integer, or a leg's action is not BUY / SELL.
    """
    try:
        n = int(fields[LEGS_FIELD])
        legs = []
        for i in range(n):  # a few legs per order
            at = LEGS_FIELD + 1 + 8 * i
            con_id, ratio, action, exchange = fields[at : at + 4]
            if action not in ("BUY", "SELL"):
                raise ValueError(f"combo leg {i + 1}: action {action!r} is not BUY or SELL")
            legs.append(FakeLeg(int(con_id), int(float(ratio or 1)), action, exchange))
        at = LEGS_FIELD + 1 + 8 * n
        prices = int(fields[at])
        params = int(fields[at + 1 + prices])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"malformed combo legs in placeOrder: {exc}") from exc
    return legs, 3 + 8 * n + prices + 2 * params


def leg_action(combo_action: str, leg: FakeLeg) -> str:
    """The action of ``leg`` when the combo is bought (``BUY``: as the leg says) or sold (reversed)."""
    if combo_action == "BUY":
        return leg.action
    return "SELL" if leg.action == "BUY" else "BUY"


def combo_price(legs: list[FakeLeg], price: Callable[[int], float]) -> float:
    """The price of one unit of the combo bought: sum of ``+ratio x price`` over legs bought and
    ``-ratio x price`` over legs sold, ``price(con_id)`` each leg's price (points)."""
    return sum((1 if leg.action == "BUY" else -1) * leg.ratio * price(leg.con_id) for leg in legs)
