"""The one PromQL text builder of the generators (rules and dashboards).

Every label value goes through ``quote``, so a model, class or feature value holding ``"`` or
``\\`` is written as a valid string literal. Dashboards keep their conveniences: a Grafana
variable is just a value (``"$model"``), a regex matcher is a ``Regex`` value
(``version=Regex("$version")`` writes ``version=~"$version"``), and ``match`` builds one
matcher for the rare selector that needs two on one label or a fixed order.
"""
from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from prometheus_client.utils import floatToGoString

from modelmon.config import parse_duration

OPERATORS = ("=", "!=", "=~", "!~")


class Regex(str):
    """A label value to match as a regular expression (``=~``)."""


def quote(value: str) -> str:
    """A PromQL string literal (label values may hold quotes or backslashes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def match(label: str, value: str, op: str | None = None) -> str:
    """One matcher, ``label="value"`` (``=~`` for a Regex value unless ``op`` says otherwise)."""
    if op is None:
        op = "=~" if isinstance(value, Regex) else "="
    if op not in OPERATORS:
        raise ValueError(f"unknown matcher operator {op!r}")
    return f"{label}{op}{quote(str(value))}"


def selector(metric: str, *matchers: str, **labels: str) -> str:
    """metric{label="value", ...}: keyword labels first, then ``matchers`` as given (build them
    with ``match``: ``selector(m, match("actual", c, "!="), model=name)``)."""
    parts = [match(key, value) for key, value in labels.items()] + list(matchers)
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def rate(sel: str, window: str = "$__rate_interval", fn: str = "rate") -> str:
    """``rate(sel[window])`` (or ``increase``/another range function given as ``fn``)."""
    return f"{fn}({sel}[{window}])"


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


def le_regex(bound: float) -> Regex:
    """A bucket bound as client_python writes it ("1.0") or Prometheus 3 stores it ("1"), as a regex."""
    go = floatToGoString(bound)
    short = go[:-2] if go.endswith(".0") else go
    return Regex("|".join(a.replace(".", "\\.") for a in sorted({go, short})))
