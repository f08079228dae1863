"""Small PromQL builders shared by the dashboards (raw metrics only, no recording rules)."""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.utils import floatToGoString

from modelmon.config import ModelConfig


def sel(metric: str, *raw: str, **labels: str) -> str:
    """metric{label="value"}; a value starting with '~' becomes a regex matcher; ``raw``
    matchers are added as written (a second matcher on the same label, e.g. model=~"$model")."""
    parts = list(raw)
    for key, value in labels.items():
        if value.startswith("~"):
            parts.append(f'{key}=~"{value[1:]}"')
        else:
            parts.append(f'{key}="{value}"')
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def rate(selector: str, window: str = "$__rate_interval") -> str:
    return f"rate({selector}[{window}])"


def error_ratio(by: str, *raw: str, window: str = "$__rate_interval", fn: str = "rate", **labels: str) -> str:
    """Share of predictions with status="error", 0 (not empty) while no error was ever seen."""
    errors = f"sum by ({by}) ({fn}({sel('modelmon_predictions_total', *raw, **labels, status='error')}[{window}]))"
    total = f"sum by ({by}) ({fn}({sel('modelmon_predictions_total', *raw, **labels)}[{window}]))"
    return f"({errors} or {total} * 0) / {total}"


def le_matcher(bound: float) -> str:
    """Regex for a bucket bound as client_python writes it ("1.0") and Prometheus 3 stores it ("1")."""
    go = floatToGoString(bound)
    short = go[:-2] if go.endswith(".0") else go
    alternatives = sorted({go, short})
    return "|".join(a.replace(".", "\\\\.") for a in alternatives)


def per_model_union(models: Iterable[ModelConfig], build: Callable[[ModelConfig], str | None]) -> str:
    """`(q_credit) or (q_segment) ...` for quantities whose constants differ per model (SLOs).

    Each branch selects ``model="<name>", model=~"$model"`` so the dashboard variable still
    filters; models for which ``build`` returns None are left out.
    """
    branches = [b for b in (build(m) for m in models) if b is not None]
    return " or ".join(f"({b})" for b in branches)
