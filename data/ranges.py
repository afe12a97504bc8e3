"""Numeric option types that carry their valid range, for the ``__init__`` annotations of DataModules and models.

``rnnlab fit`` (jsonargparse) refuses a value outside the range when it parses a config or the command line: one
line naming the option, the value and the range. The annotations are only types: a direct Python call (a test,
``load_from_checkpoint``) passes plain numbers as before.

jsonargparse's own: ``PositiveInt`` (> 0), ``NonNegativeInt`` (>= 0), ``PositiveFloat`` (> 0),
``NonNegativeFloat`` (>= 0), ``ClosedUnitInterval`` ([0, 1]), ``OpenUnitInterval`` ((0, 1)); and from here
``UnitIntervalRightOpen`` ([0, 1)), ``OneToEight`` (an int in [1, 8]) and ``SpeedFactor`` ([0.5, 2]).

A parsed value is an instance of its range type (a subclass of int or float): :func:`plain_numbers` turns such
values back into plain ones where they are saved (a checkpoint's hyperparameters load with ``weights_only``).
"""

from __future__ import annotations

import operator
from typing import Any

from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

#: Dropout, a held-out fraction, the weight of one of two losses: [0, 1).
UnitIntervalRightOpen = restricted_number_type("UnitIntervalRightOpen", float, [(">=", 0), ("<", 1)])
#: Layers of the CTC encoder, frames stacked by a frontend: an int in [1, 8].
OneToEight = restricted_number_type("OneToEight", int, [(">=", 1), ("<=", 8)])
#: A speed perturbation factor: [0.5, 2].
SpeedFactor = restricted_number_type("SpeedFactor", float, [(">=", 0.5), ("<=", 2.0)])

__all__ = ["ClosedUnitInterval", "NonNegativeFloat", "NonNegativeInt", "OneToEight", "OpenUnitInterval",
           "PositiveFloat", "PositiveInt", "SpeedFactor", "UnitIntervalRightOpen", "bounds", "describe",
           "plain_numbers"]

_LOW = {operator.gt: False, operator.ge: True}
_HIGH = {operator.lt: False, operator.le: True}


def bounds(tp: Any) -> tuple[type, float | None, bool, float | None, bool] | None:
    """``(base, low, low_included, high, high_included)`` of a range type (None bound: unbounded); None when
    ``tp`` is not one."""
    restrictions = getattr(tp, "_restrictions", None)
    base = getattr(tp, "_type", None)
    if not restrictions or base not in (int, float):
        return None
    low = high = None
    low_in = high_in = False
    for op, ref in restrictions:
        if op in _LOW:
            low, low_in = ref, _LOW[op]
        elif op in _HIGH:
            high, high_in = ref, _HIGH[op]
        else:
            return None
    return base, low, low_in, high, high_in


def describe(tp: Any) -> str | None:
    """``int > 0``, ``float in [0, 1)``: a range type in words (None when ``tp`` is not one)."""
    b = bounds(tp)
    if b is None:
        return None
    base, low, low_in, high, high_in = b
    if low is not None and high is not None:
        return f"{base.__name__} in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
    if low is not None:
        return f"{base.__name__} {'>=' if low_in else '>'} {low:g}"
    return f"{base.__name__} {'<=' if high_in else '<'} {high:g}"


def plain_numbers(value: Any) -> Any:
    """``value`` with every int/float subclass (a parsed range type) as a plain int/float, in dicts, lists and
    tuples too; bools and everything else as they are."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and type(value) is not int:
        return int(value)
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return type(value)(plain_numbers(v) for v in value)
    return value
