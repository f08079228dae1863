"""Small, exact PromQL text builders for the generated rules."""
from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from modelmon.config import parse_duration


def quote(value: str) -> str:
    """A PromQL string literal (label values may hold quotes or backslashes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(metric: str, *matchers: str, **labels: str) -> str:
    """metric{label="value", ...}; ``matchers`` are added as written (e.g. 'actual!="1"')."""
    parts = [f"{key}={quote(value)}" for key, value in labels.items()] + list(matchers)
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def number(value: float | int | Fraction) -> str:
    """Shortest exact text for a threshold: 0.072 not 0.07200000000000001.

    Fractions with a terminating decimal expansion are written exactly; others (7/30)
    fall back to the nearest float, which is all Prometheus can represent anyway.
    """
    if isinstance(value, Fraction):
        den = value.denominator
        for p in (2, 5):
            while den % p == 0:
                den //= p
        if den != 1:
            return repr(float(value))
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    else:
        text = repr(float(value))
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def seconds(window: str) -> str:
    """'5m' -> '300', for turning a per-second rate into a count over the window."""
    return number(Fraction(str(parse_duration(window))))
