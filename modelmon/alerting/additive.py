"""Recording rules for quality and drift from the additive families, summed over exporter replicas.

The exporter's quality and drift gauges describe one process's window: two replicas that each see
half of the traffic export two half-truths. The counters behind them (feature and prediction bins,
confusion cells, the labelled score histogram by actual class, regression error and label sums)
add up, so these rules compute every quantity that has an additive form (``Quantity.recorded_tasks``
in the contract) from their ``increase()`` over each window of ``recording.windows``, summed over
every replica, under the contract's names (``Quantity.recorded(window)``:
``model_version:modelmon_accuracy_ratio:1h``, ``model_feature:modelmon_feature_psi:1h``).

Every rule reads one model's series, and the sum over replicas happens inside the rule
(``sum by (model, ...)``): a rule file per model stays self-contained, and the results are
the same whichever Prometheus (edge or central) evaluates them over the replicas it sees.

Per window ``w`` (all names follow ``level:metric:operations``):

* intermediate counts: ``model_feature_bin:modelmon_feature_bin:increase<w>`` (values per
  reference bin), ``model_feature:modelmon_feature_values:increase<w>`` (records, the
  ``min_drift_samples`` guard), ``model_feature_bin:modelmon_feature_bin:ratio<w>`` (the window's
  share per non-missing bin), the same three for the outputs per version
  (``model_version_bin:modelmon_prediction_bin:...``, ``model_version:modelmon_prediction_values:...``)
  and ``model_version:modelmon_labeled_predictions:increase<w>`` (the ``min_labeled`` guard);
  multiclass: per-class counts ``model_version_class:modelmon_confusion_{actual,predicted,correct}:increase<w>``;
  binary: ``model_version_class_le:modelmon_labeled_score_{bucket,bin}:increase<w>`` (cumulative
  and per-bucket counts of the labelled score, ``class`` = positive or negative);
* quantities: PSI, JS distance, missing ratio per feature; prediction PSI per version; accuracy,
  precision, recall, F1 (binary: positive class; multiclass: macro), binary ROC AUC; MAE, RMSE, R².

Exactness: PSI and JS equal ``exporter.drift.psi``/``js_distance`` of the summed bin counts (same
proportions, same 1e-4 floor, base 2); accuracy, precision, recall and F1 equal scikit-learn's
(zero_division=0, multiclass macro over the classes seen as actual or predicted in the window);
MAE, RMSE and R² equal them up to floating-point rounding of the sums. ROC AUC is computed from
the 0.05-wide score buckets, ties within a bucket counted one half (see ``_roc_auc_rules``).
"""
from __future__ import annotations

from modelmon.config import ModelConfig
from modelmon.contract import MISSING_BIN, QUANTITIES, SCORE_BUCKETS, class_key, recorded_name
from modelmon.promql import match, number, rate, selector

MISSING = MISSING_BIN
PSI_EPS = 1e-4  # exporter.drift.psi floors both proportions at this
LN2_TIMES_2 = "1.3862943611198906"  # 2 ln 2: JS divergence in bits is (KL_p + KL_q) / (2 ln 2)
R2_FLAT = "1e-09"  # a label variance below this share of the labels' second moment counts as constant

FEATURE_BINS_TOTAL = "modelmon_feature_bin_total"
FEATURE_REFERENCE = "modelmon_feature_reference_ratio"
PREDICTION_BINS_TOTAL = "modelmon_prediction_bin_total"
PREDICTION_REFERENCE = "modelmon_prediction_reference_ratio"
CONFUSION = "modelmon_confusion_total"
LABELED_SCORE_BUCKETS = "modelmon_labeled_score_bucket"
REGRESSION_LABELED = "modelmon_regression_labeled_total"
ABSOLUTE_ERROR = "modelmon_regression_absolute_error_total"
SQUARED_ERROR = "modelmon_regression_squared_error_total"
LABEL_SUM = "modelmon_regression_label_total"
LABEL_SQUARED = "modelmon_regression_label_squared_total"


# ---------------------------------------------------------------- names (dashboards read these too)

def feature_bins(window: str) -> str:
    """Values per (model, feature, bin) over ``window``, summed over replicas (``__missing__`` included)."""
    return recorded_name("model_feature_bin", "modelmon_feature_bin", f"increase{window}")


def feature_values(window: str) -> str:
    """Records per (model, feature) over ``window``, missing values included: the exporter gates
    its drift gauges on the records in the drift window (``min_drift_samples``), missing or not."""
    return recorded_name("model_feature", "modelmon_feature_values", f"increase{window}")


def feature_proportions(window: str) -> str:
    """The window's share of non-missing values per (model, feature, bin): PSI's and JS's q."""
    return recorded_name("model_feature_bin", "modelmon_feature_bin", f"ratio{window}")


def prediction_bins(window: str) -> str:
    return recorded_name("model_version_bin", "modelmon_prediction_bin", f"increase{window}")


def prediction_values(window: str) -> str:
    """Outputs per (model, version) over ``window``: the prediction PSI's ``min_drift_samples`` guard."""
    return recorded_name("model_version", "modelmon_prediction_values", f"increase{window}")


def prediction_proportions(window: str) -> str:
    return recorded_name("model_version_bin", "modelmon_prediction_bin", f"ratio{window}")


def labeled_predictions(window: str) -> str:
    """Labelled predictions per (model, version) over ``window``: the ``min_labeled`` guard."""
    return recorded_name("model_version", "modelmon_labeled_predictions", f"increase{window}")


def class_counts(axis: str, window: str) -> str:
    """Multiclass: labelled predictions per (model, version, class) by ``axis`` (actual, predicted,
    or correct: right predictions of the class)."""
    return recorded_name("model_version_class", f"modelmon_confusion_{axis}", f"increase{window}")


def score_buckets(window: str) -> str:
    """Binary: cumulative labelled-score counts per (model, version, class, le), class positive/negative."""
    return recorded_name("model_version_class_le", "modelmon_labeled_score_bucket", f"increase{window}")


def score_bins(window: str) -> str:
    """Binary: the same, per bucket (not cumulative)."""
    return recorded_name("model_version_class_le", "modelmon_labeled_score_bin", f"increase{window}")


def recorded(key: str, window: str) -> str:
    return QUANTITIES[key].recorded(window)


# ---------------------------------------------------------------- helpers


def _record(name: str, expr: str, **labels: str) -> dict:
    rule: dict = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = dict(labels)
    return rule


def _increase(metric: str, window: str, *matchers: str, **labels: str) -> str:
    return rate(selector(metric, *matchers, **labels), window, "increase")


def _sum(by: str, inner: str) -> str:
    return f"sum by ({by}) ({inner})"


def _indent(text: str, n: int = 2) -> str:
    pad = " " * n
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def canonical_le(bound: float) -> str:
    """A bucket bound as these rules write it: Prometheus 3's normal form, without a trailing
    ``.0`` (``1``, ``0.05``); ``+Inf`` for the last bucket."""
    return "+Inf" if bound == float("inf") else number(bound)


def _drop_point_zero(expr: str) -> str:
    """``le`` as client_python writes an integer bound ("1.0") or Prometheus 3 stores it ("1"), as "1"."""
    return f'label_replace(\n{_indent(expr)},\n  "le", "$1", "le", "(.+)\\\\.0"\n)'


# ---------------------------------------------------------------- rules


def additive_recording_rules(m: ModelConfig, windows: tuple[str, ...]) -> list[dict]:
    """Every additive recording rule of model ``m``, window by window."""
    out: list[dict] = []
    for w in windows:
        out.extend(_feature_rules(m, w))
        out.extend(_prediction_rules(m, w))
        if m.task == "regression":
            out.extend(_regression_rules(m, w))
        else:
            out.extend(_classification_rules(m, w))
    return out


def _psi(q: str, p: str, by: str, join: str = "") -> str:
    """Σ (q − p) ln(q / p) with both floored at PSI_EPS (``join``: matching of q's bins with p's)."""
    qf, pf = f"clamp_min({q}, {PSI_EPS})", f"clamp_min({p}, {PSI_EPS})"
    op = f" {join} " if join else " "
    return f"sum by ({by}) (\n  ({qf} -{op}{pf})\n  *\n  ln({qf} /{op}{pf})\n)"


def _proportions(bins: str, model: str, by: str) -> str:
    """Each non-missing bin's share of the non-missing values (absent when there is none)."""
    present = selector(bins, match("bin", MISSING, "!="), model=model)
    return f"{present}\n/ on ({by}) group_left ()\n({_sum(by, present)} > 0)"


def _feature_rules(m: ModelConfig, w: str) -> list[dict]:
    sel = {"model": m.name}
    by = "model, feature"
    bins = selector(feature_bins(w), **sel)
    q = selector(feature_proportions(w), **sel)
    p = f"max by (model, feature, bin) ({selector(FEATURE_REFERENCE, **sel)})"
    values = selector(feature_values(w), **sel)
    missing = _sum(by, selector(feature_bins(w), match("bin", MISSING), **sel))
    # JS: m = (p + q) / 2 on the unfloored proportions; 0 ln 0 terms dropped (`> 0`: ln(0) is -Inf
    # and 0 * -Inf is NaN in PromQL), the divergence clipped to [0, 1] as drift.js_distance does.
    mid = f"(({p} + {q}) / 2)"
    kl = [f"sum by ({by}) (({side} > 0) * ln(({side} > 0) / {mid}))" for side in (p, q)]
    js = (f"sqrt(\n  clamp(\n    (\n{_indent(kl[0], 6)}\n      +\n{_indent(kl[1], 6)}\n    )\n"
          f"    / {LN2_TIMES_2},\n    0, 1\n  )\n)")
    return [
        _record(feature_bins(w), _sum("model, feature, bin", _increase(FEATURE_BINS_TOTAL, w, **sel))),
        _record(feature_values(w), _sum(by, bins)),
        _record(feature_proportions(w), _proportions(feature_bins(w), m.name, by)),
        _record(recorded("psi", w), _psi(q, p, by)),
        _record(recorded("js_distance", w), js),
        _record(recorded("missing_ratio", w), f"(\n  {missing}\n  or\n  {values} * 0\n)\n/\n({values} > 0)"),
    ]


def _prediction_rules(m: ModelConfig, w: str) -> list[dict]:
    sel = {"model": m.name}
    bins = selector(prediction_bins(w), **sel)
    q = selector(prediction_proportions(w), **sel)
    p = f"max by (model, bin) ({selector(PREDICTION_REFERENCE, **sel)})"
    return [
        _record(prediction_bins(w), _sum("model, version, bin", _increase(PREDICTION_BINS_TOTAL, w, **sel))),
        _record(prediction_values(w), _sum("model, version", bins)),
        _record(prediction_proportions(w), _proportions(prediction_bins(w), m.name, "model, version")),
        _record(recorded("prediction_psi", w), _psi(q, p, "model, version", "on (model, bin) group_left")),
    ]


def _ratio_or_zero(num: str, den: str, labelled: str) -> str:
    """num / den with sklearn's zero_division=0: 0 where den is 0 (or absent) but the version has
    labelled predictions; a numerator that does not exist yet reads 0."""
    return (f"(\n  (\n    {num}\n    or\n    {labelled} * 0\n  )\n  /\n  ({den} > 0)\n)\n"
            f"or\n({labelled} > 0) * 0")


def _classification_rules(m: ModelConfig, w: str) -> list[dict]:
    sel = {"model": m.name}
    by = "model, version"
    labelled = selector(labeled_predictions(w), **sel)
    correct = _sum(by, _increase(CONFUSION, w, match("correct", "true"), **sel))
    rules = [
        _record(labeled_predictions(w), _sum(by, _increase(CONFUSION, w, **sel))),
        _record(recorded("accuracy", w), f"(\n  {correct}\n  or\n  {labelled} * 0\n)\n/\n({labelled} > 0)"),
    ]
    if m.task == "binary":
        pos = class_key(m.positive_class)
        tp = _sum(by, _increase(CONFUSION, w, match("actual", pos), match("predicted", pos), **sel))
        predicted = _sum(by, _increase(CONFUSION, w, match("predicted", pos), **sel))
        actual = _sum(by, _increase(CONFUSION, w, match("actual", pos), **sel))
        both = f"(\n    ({actual} or {labelled} * 0)\n    +\n    ({predicted} or {labelled} * 0)\n  )"
        rules += [
            _record(recorded("precision", w), _ratio_or_zero(tp, predicted, labelled)),
            _record(recorded("recall", w), _ratio_or_zero(tp, actual, labelled)),
            _record(recorded("f1", w), _ratio_or_zero(f"2 * {tp}", both, labelled)),
        ]
        rules += _roc_auc_rules(m, w, pos)
        return rules
    return rules + _macro_rules(m, w)


def _macro_rules(m: ModelConfig, w: str) -> list[dict]:
    """Macro precision, recall and F1 over the classes seen in the window as actual or predicted
    (scikit-learn's default labels, as exporter.quality.multiclass_quality averages): per-class
    counts joined on a common ``class`` label, no list of classes needed."""
    sel = {"model": m.name}
    by = "model, version, class"

    def per_class(axis: str, source: str, *matchers: str) -> dict:
        inner = f'label_replace({_increase(CONFUSION, w, *matchers, **sel)}, "class", "$1", "{source}", "(.*)")'
        return _record(class_counts(axis, w), _sum(by, inner))

    a, p, c = (selector(class_counts(axis, w), **sel) for axis in ("actual", "predicted", "correct"))
    # A class seen only as actual has precision 0, one seen only as predicted recall 0 (zero_division=0).
    precision = f"(\n    ({c} or {p} * 0)\n    /\n    ({p} > 0)\n  )\n  or\n  ({a} > 0) * 0"
    recall = f"(\n    ({c} or {a} * 0)\n    /\n    ({a} > 0)\n  )\n  or\n  ({p} > 0) * 0"
    f1 = (f"2 * ({c} or {a} * 0 or {p} * 0)\n  /\n"
          f"  ((({a} or {p} * 0) + ({p} or {a} * 0)) > 0)")
    return [
        per_class("actual", "actual"),
        per_class("predicted", "predicted"),
        per_class("correct", "predicted", match("correct", "true")),
        _record(recorded("precision", w), f"avg by (model, version) (\n  {precision}\n)"),
        _record(recorded("recall", w), f"avg by (model, version) (\n  {recall}\n)"),
        _record(recorded("f1", w), f"avg by (model, version) (\n  {f1}\n)"),
    ]


def _roc_auc_rules(m: ModelConfig, w: str, pos: str) -> list[dict]:
    """Binary ROC AUC from the labelled-score histogram split by actual class.

    With per-bucket counts P_k (positives) and N_k (negatives), N_le(k) the negatives in buckets
    up to k, P and N the totals: AUC = Σ_k P_k (N_le(k) − N_k / 2) / (P N), the Mann-Whitney
    statistic with every pair inside one bucket counted as a tie (one half). That is the
    trapezoidal ROC area through the bucket bounds; it equals scikit-learn's exactly when no
    bucket holds both classes' scores, and otherwise differs by at most half the share of
    (positive, negative) pairs that share a bucket.

    Per-bucket counts need the previous bucket's cumulative count; the bounds are fixed
    (contract.SCORE_BUCKETS), so one ``label_replace`` per bucket moves bucket k−1's
    count onto bucket k's ``le``."""
    sel = {"model": m.name}
    bounds = [canonical_le(b) for b in (*SCORE_BUCKETS, float("inf"))]
    cumulative = selector(score_buckets(w), **sel)
    shifted = [f'label_replace({selector(score_buckets(w), **sel, le=lo)}, "le", "{hi}", "", "")'
               for lo, hi in zip(bounds, bounds[1:])]
    first = f"{selector(score_buckets(w), **sel, le=bounds[0])} * 0"
    previous = "\n  or\n  ".join([*shifted, first])
    by = "model, version"

    def cum(actual: str) -> str:
        inner = _sum("model, version, le", _increase(LABELED_SCORE_BUCKETS, w, actual, **sel))
        return _drop_point_zero(inner)

    def side(cls: str, kind) -> str:
        return selector(kind(w), **sel, **{"class": cls})

    def total(cls: str) -> str:
        return f"({_sum(by, selector(score_buckets(w), **sel, **{'class': cls, 'le': '+Inf'}))} > 0)"

    auc = (f"sum by ({by}) (\n  {side('positive', score_bins)}\n  * on (model, version, le)\n"
           f"  ({side('negative', score_buckets)} - {side('negative', score_bins)} / 2)\n)\n"
           f"/\n(\n  {total('positive')}\n  *\n  {total('negative')}\n)")
    return [
        _record(score_buckets(w), cum(match("actual", pos)), **{"class": "positive"}),
        _record(score_buckets(w), cum(match("actual", pos, "!=")), **{"class": "negative"}),
        _record(score_bins(w), f"{cumulative}\n-\n(\n  {previous}\n)"),
        _record(recorded("roc_auc", w), auc),
    ]


def _regression_rules(m: ModelConfig, w: str) -> list[dict]:
    sel = {"model": m.name}
    by = "model, version"
    n = selector(labeled_predictions(w), **sel)
    sq = _sum(by, _increase(SQUARED_ERROR, w, **sel))
    labels_sq = _sum(by, _increase(LABEL_SQUARED, w, **sel))
    signed = [f"({_sum(by, _increase(LABEL_SUM, w, **sel, sign=s))} or {n} * 0)" for s in ("positive", "negative")]
    label_sum = f"({signed[0]} - {signed[1]})"
    # Σ(y − ȳ)² = Σy² − (Σy)²/n; R² needs two labels that differ (sklearn gives no useful value otherwise).
    variance = (f"(\n    {labels_sq}\n    -\n    {label_sum} ^ 2 / ({n} >= 2)\n  )\n"
                f"  > {R2_FLAT} * {labels_sq}")
    return [
        _record(labeled_predictions(w), _sum(by, _increase(REGRESSION_LABELED, w, **sel))),
        _record(recorded("mae", w), f"{_sum(by, _increase(ABSOLUTE_ERROR, w, **sel))}\n/\n({n} > 0)"),
        _record(recorded("rmse", w), f"sqrt(\n  {sq}\n  /\n  ({n} > 0)\n)"),
        _record(recorded("r2", w), f"1\n-\n{sq}\n/\n(\n  {variance}\n)"),
    ]
