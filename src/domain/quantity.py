"""Kubernetes resource quantities (``500m``, ``64Mi``, ``1.5G``, ``1e3``) as exact fractions.

The grammar is the API server's::

    quantity ::= [+-] number suffix
    number   ::= digits | digits "." | digits "." digits | "." digits
    suffix   ::= "" | n | u | m | k | M | G | T | P | E      (decimal SI)
               | Ki | Mi | Gi | Ti | Pi | Ei                  (binary SI)
               | (e | E) [+-] digits                         (decimal exponent)

``E`` alone is exa; ``E`` followed by digits is an exponent. Values are kept exact (a
``Fraction``) rather than rounded to nano precision as the API server stores them: every consumer
here rounds up to an integer or to milli units anyway, and exact arithmetic avoids the float64
rounding the kubelet's downward-API conversion suffers from on large values.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from vkubelet.domain.errors import InvalidInput

_MULTIPLIERS: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

# [0-9], not \d: \d also matches non-ASCII digits, which the API server rejects.
_QUANTITY = re.compile(r"([+-]?)([0-9]+\.?[0-9]*|\.[0-9]+)(.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)")

# Far beyond any real resource (E = 1e18), small enough that a hostile "1e999999999" cannot
# make us build a gigantic integer.
_MAX_EXPONENT = 1000


def parse_quantity(value: str | int) -> Fraction:
    """The exact value of a quantity. Raises InvalidInput naming ``value`` when it is malformed.

    Plain integers are accepted too, for hand-written manifests that say ``cpu: 2``.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(f"quantity {value!r} is not a string")
    if isinstance(value, int):
        return Fraction(value)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise InvalidInput(f"quantity {value!r} is not a number with an optional suffix")
    sign, number, suffix = match.groups()
    whole, _, decimals = number.partition(".")
    amount = Fraction(int(whole + decimals or "0"), 10 ** len(decimals))
    multiplier = _MULTIPLIERS.get(suffix)
    if multiplier is None:
        exponent = _EXPONENT.fullmatch(suffix)
        if exponent is None:
            raise InvalidInput(f"quantity {value!r} has an unknown suffix {suffix!r}")
        power = int(exponent.group(1))
        if abs(power) > _MAX_EXPONENT:
            raise InvalidInput(f"quantity {value!r} has an exponent out of range")
        multiplier = Fraction(10) ** power
    result = amount * multiplier
    return -result if sign == "-" else result


def ceil_value(quantity: Fraction) -> int:
    """The quantity in whole units, rounded up (the API's ``Quantity.Value()``)."""
    return math.ceil(quantity)


def ceil_milli_value(quantity: Fraction) -> int:
    """The quantity in thousandths, rounded up (the API's ``Quantity.MilliValue()``)."""
    return math.ceil(quantity * 1000)


def format_integer(quantity: Fraction | int) -> str:
    """A quantity as a plain integer string, rounded up: ``Fraction(1, 2)`` -> ``"1"``."""
    return str(math.ceil(quantity))
