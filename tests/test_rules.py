"""The rule generator: burn-rate arithmetic, alert conventions, options, runbook anchors, staleness."""
from __future__ import annotations

import re
from fractions import Fraction

import pytest
import yaml

from conftest import ROOT
from modelmon.alerting.alerts import estimated_alert_name, threshold_alert_name
from modelmon.alerting.generate import artefacts
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.policy import Rollout, load_policy, parse_policy
from modelmon.alerting.render import HEADER
from modelmon.alerting.rules import alerts_of, rule_files
from modelmon.config import load_config, parse_config
from modelmon.contract import ESTIMATED_KEYS, QUANTITIES, TASKS, estimated_name, quantities_for
from modelmon.promql import number

RUNBOOK = ROOT / "alerting" / "RUNBOOK.md"
CAMEL = re.compile(r"^Modelmon(?:[A-Z][a-z0-9]*)+$")


def _thresholds(keys: list[str]) -> dict:
    out = {}
    for key in keys:
        below = QUANTITIES[key].direction == "below"
        if not QUANTITIES[key].pages:  # drift opens tickets only: a warning threshold
            out[key] = {"warning": 0.5}
            continue
        out[key] = {"warning": 0.5, "critical": 0.4} if below else {"warning": 0.5, "critical": 0.6}
    return out


# Every threshold key each task accepts, from the metric contract (tests/test_contract.py checks
# the contract against what the exporter computes).
KEYS_BY_TASK = {task: [q.key for q in quantities_for(task)] for task in TASKS}


def full_config(period: str = "30d"):
    """Every threshold on every task, both receivers kinds in use: all alerts the generator can make."""
    return parse_config(_raw_full_config(period))


def _raw_full_config(period: str = "30d") -> dict:
    models = []
    for task, keys in KEYS_BY_TASK.items():
        m = {"name": f"m_{task}", "task": task, "features": {"numeric": ["x"], "categorical": ["c"]},
             "reference": {"first": 100}, "thresholds": _thresholds(keys),
             "slo": {"latency_p99_seconds": 0.5, "availability": 99.9, "period": period}, "team": f"t_{task}"}
        if task == "multiclass":
            m["classes"] = ["a", 'b"q', "c"]
        models.append(m)
    return {"models": models, "alerting": {
        "receivers": [{"name": "inbox", "webhook": {"url": "http://receiver:9095/webhook"}}]}}


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub derives from headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


# ---------------------------------------------------------------- burn rates as data


def test_burn_factors_for_a_30_day_slo_are_the_workbook_ones():
    policy = load_policy()
    got = [(b.severity, b.long, b.short, b.factor_for(30, policy.burn_reference_days)) for b in policy.burn_windows]
    assert got == [("critical", "1h", "5m", Fraction("14.4")), ("critical", "6h", "30m", Fraction(6)),
                   ("warning", "1d", "2h", Fraction(3)), ("warning", "3d", "6h", Fraction(1))]
    assert [b.budget_share(30) for b in policy.burn_windows] == [
        Fraction(2, 100), Fraction(5, 100), Fraction(10, 100), Fraction(10, 100)]


def test_burn_factors_scale_with_the_slo_period_and_spend_the_same_budget_share():
    policy = load_policy()
    for days in (7, 28, 90):
        for b in policy.burn_windows:
            factor = b.factor_for(days, policy.burn_reference_days)
            long_days = Fraction(int(b.long[:-1]) * {"h": 1, "d": 24}[b.long[-1]], 24)
            assert factor * long_days / days == b.budget_share(policy.burn_reference_days)


def test_burn_thresholds_are_written_exactly():
    config = full_config(period="28d")  # availability 99.9: budget 0.001
    exprs = [r["expr"] for r in rule_files(config)["model-m_binary.yml"]["groups"][1]["rules"]
             if r["alert"] == "ModelmonErrorBudgetBurn"]
    # 14.4 * 28/30 * 0.001 = 0.01344, 6 * 28/30 * 0.001 = 0.0056, 3 * ... = 0.0028, 1 * 28/30 * 0.001 = 7/7500
    assert [e.split(" > ")[1].split("\n")[0] for e in exprs] == ["0.01344", "0.0056", "0.0028", repr(7 / 7500)]


@pytest.mark.parametrize("value, text", [
    (Fraction(72, 1000), "0.072"), (Fraction(1, 200), "0.005"), (Fraction(3), "3"), (0.8, "0.8"), (10, "10"),
    (Fraction(7, 30), repr(7 / 30)),
])
def test_number_text(value, text):
    assert number(value) == text


# ---------------------------------------------------------------- alert conventions


def test_every_alert_follows_the_conventions():
    config = full_config()
    alerting = config.alerting
    models = {m.name for m in config.models}
    for a in alerts_of(config):
        rule = a.render(alerting)
        assert CAMEL.match(rule["alert"]), rule["alert"]
        labels, ann = rule["labels"], rule["annotations"]
        assert labels["severity"] in ("critical", "warning", "info")
        assert labels["family"]
        if a.model is not None:
            assert labels["team"] == a.model.team and a.model.name in models
            assert f'model="{a.model.name}"' in rule["expr"]
            assert ann["dashboard_url"].endswith(f"?var-model={a.model.name}")
        assert rule["for"]
        assert "{{" not in ann["summary"], "summary must be static"
        if a.model is not None:
            assert "{{ $value" in ann["description"] and "{{ $labels.model }}" in ann["description"]
        elif rule["alert"] != "ModelmonExporterAbsent":  # absent() has no value or labels worth showing
            assert "{{ $" in ann["description"]
        assert ann["runbook_url"] == f"{alerting.runbook_url}#{rule['alert'].lower()}"
        assert ann["dashboard_url"].startswith(alerting.dashboard_url + "/d/modelmon-")


def test_quality_alerts_wait_for_min_labeled_and_drift_for_min_samples():
    """Recorded quantities are guarded by the counts of the same window (labelled predictions,
    records), the others by the exporter's window gauges."""
    config = full_config()
    w = config.recording.alert_window
    for a in alerts_of(config):
        q = next((q for k, q in QUANTITIES.items() if a.name == threshold_alert_name(k, q.direction)), None)
        recorded = q is not None and q.is_recorded(a.model.task)
        if a.family == "quality":
            if recorded:
                assert f'{q.recorded(w)}{{model="{a.model.name}"}}' in a.expr
                assert (f'model_version:modelmon_labeled_predictions:increase{w}{{model="{a.model.name}"}} '
                        f'>= {a.model.min_labeled}') in a.expr
            else:
                assert f"modelmon_window_labeled{{model=\"{a.model.name}\"}} >= {a.model.min_labeled}" in a.expr
        if a.family == "drift":
            assert f">= {a.model.min_drift_samples}" in a.expr
            if recorded:
                guard = "modelmon_feature_values" if q.per_feature else "modelmon_prediction_values"
                assert f"{q.recorded(w)}{{" in a.expr and f"{guard}:increase{w}" in a.expr, a.expr
                assert "modelmon_drift_window_records" not in a.expr
            else:
                assert "modelmon_drift_window_records" in a.expr
        if a.name in ("ModelmonLatencyP99High", "ModelmonErrorBudgetBurn"):
            assert f">= {load_policy().min_requests}" in a.expr


def test_alerts_read_the_recorded_form_wherever_one_exists():
    """Exactly the quantities without an additive form for the model's task read gauges."""
    config = parse_config({**_raw_full_config(), "recording": {"windows": ["5m", "1h", "1d"], "alert_window": "1h"}})
    for a in alerts_of(config):
        for key, q in QUANTITIES.items():
            if a.name != threshold_alert_name(key, q.direction):
                continue
            if q.is_recorded(a.model.task):
                assert q.recorded("1h") in a.expr and f"{q.metric}{{" not in a.expr, a.expr
                assert "over the last 1h (all exporter replicas" in a.description
            else:
                assert f"{q.metric}{{" in a.expr and ":1h" not in a.expr, a.expr


def test_recording_rules_cover_every_window_and_recorded_quantity():
    config = parse_config({**_raw_full_config(), "recording": {"windows": ["5m", "1h", "1d"], "alert_window": "5m"}})
    docs = rule_files(config)
    for m in config.models:
        records = [r["record"] for g in docs[f"model-{m.name}.yml"]["groups"] for r in g["rules"] if "record" in r]
        for w in ("5m", "1h", "1d"):
            for q in QUANTITIES.values():
                wanted = q.applies_to(m.task) and q.is_recorded(m.task)
                assert bool(q.recorded_tasks and q.recorded(w) in records) == wanted, (m.name, q.key, w)
            guards = [f"model_version:modelmon_labeled_predictions:increase{w}",
                      f"model_feature:modelmon_feature_values:increase{w}",
                      f"model_version:modelmon_prediction_values:increase{w}"]
            assert set(guards) <= set(records)
        assert not [r for r in records if "modelmon_confusion:" in r and "_rate" in r], "old confusion rules"
        # every rule reads one model's series only
        for g in docs[f"model-{m.name}.yml"]["groups"]:
            for r in g["rules"]:
                for sel in re.findall(r"\{([^{}]*)\}", r["expr"]):
                    if "model=" in sel:
                        assert f'model="{m.name}"' in sel, (r.get("record") or r.get("alert"), sel)


def test_rules_of_one_alert_name_are_told_apart_by_labels():
    """Two rules producing the same labels would collide in Prometheus and in Alertmanager."""
    seen = set()
    for a in alerts_of(full_config()):
        rule = a.render(full_config().alerting)
        key = (a.name, a.model.name if a.model else None, tuple(sorted(rule["labels"].items())))
        assert key not in seen, key
        seen.add(key)


def test_class_values_are_escaped_in_promql_and_multiclass_needs_no_class_list():
    raw = _raw_full_config()
    for m in raw["models"]:
        if m["task"] == "binary":
            m["positive_class"] = 'y"es'
    docs = rule_files(parse_config(raw))
    exprs = [r["expr"] for g in docs["model-m_binary.yml"]["groups"] for r in g["rules"]]
    assert any('actual="y\\"es", predicted="y\\"es"' in e for e in exprs)
    multiclass = [r["expr"] for g in docs["model-m_multiclass.yml"]["groups"] for r in g["rules"]]
    assert not any("b\\\"q" in e for e in multiclass), "macro rules join on a class label, not a class list"


# ---------------------------------------------------------------- runbook


def all_alert_names() -> set[str]:
    names = {a.name for a in alerts_of(full_config())}
    expected = {threshold_alert_name(k, q.direction) for k, q in QUANTITIES.items()}
    expected |= {estimated_alert_name(k) for k in ESTIMATED_KEYS} | {"ModelmonEstimateDisagrees"}
    assert expected <= names, "full_config() must exercise every thresholded quantity and its estimate"
    return names


def test_runbook_has_one_section_per_alert_and_no_orphans():
    anchors = github_anchors(RUNBOOK.read_text())
    names = all_alert_names()
    missing = {n for n in names if n.lower() not in anchors}
    assert not missing, f"RUNBOOK.md lacks sections for {sorted(missing)}"
    orphans = {a for a in anchors if re.fullmatch(r"modelmon[a-z0-9]+", a) and a not in {n.lower() for n in names}}
    assert not orphans, f"RUNBOOK.md documents alerts that do not exist: {sorted(orphans)}"


def test_runbook_sections_say_meaning_check_and_action():
    text = RUNBOOK.read_text()
    for name in all_alert_names():
        section = text.split(f"### {name}\n", 1)[1].split("\n#", 1)[0]
        for part in ("**Meaning", "**Check:**", "**Do:**"):
            assert part in section, f"{name}: no {part}"


# ---------------------------------------------------------------- options for the end-to-end test


def test_options_shrink_every_clock_for_the_end_to_end_test():
    config = load_config(ROOT / "modelmon.yaml")
    fast = RuleOptions(for_override="5s", rate_window="30s", min_requests=5,
                       for_overrides={"ModelmonLabelsNotArriving": "5m"})
    docs = rule_files(config, fast)
    alerts = [r for d in docs.values() for g in d["groups"] for r in g["rules"] if "alert" in r]
    assert {r["for"] for r in alerts if r["alert"] != "ModelmonLabelsNotArriving"} == {"5s"}
    assert {r["for"] for r in alerts if r["alert"] == "ModelmonLabelsNotArriving"} == {"5m"}
    records = {r["record"] for d in docs.values() for g in d["groups"] for r in g["rules"] if "record" in r}
    assert "model:modelmon_prediction_latency_seconds:p99_30s" in records
    assert "model:modelmon_predictions:rate30s" in records
    for r in alerts:
        if r["alert"] in ("ModelmonLatencyP99High", "ModelmonNoPredictions", "ModelmonRecordsRejected"):
            assert "30s" in r["expr"] and "5m" not in r["expr"], r["expr"]
        if r["alert"] == "ModelmonLatencyP99High":
            assert "* 30 >= 5" in r["expr"]


def test_default_options_keep_the_policy_durations():
    config = load_config(ROOT / "modelmon.yaml")
    policy = load_policy()
    for a in alerts_of(config):
        if a.name == "ModelmonErrorBudgetBurn":
            assert a.pending in {b.pending for b in policy.burn_windows}
        elif a.name in policy.alerts:
            assert a.pending == policy.alerts[a.name].pending


@pytest.mark.parametrize("kwargs", [{"for_override": "soon"}, {"rate_window": "5 minutes"}, {"min_requests": 0},
                                    {"for_overrides": {"X": "1y"}}])
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(ValueError, match="RuleOptions"):
        RuleOptions(**kwargs)


# ---------------------------------------------------------------- generated files


def test_generation_is_deterministic_and_headed():
    config = load_config(ROOT / "modelmon.yaml")
    first, second = artefacts(config), artefacts(load_config(ROOT / "modelmon.yaml"))
    assert first == second
    assert list(first) == sorted(first)
    for path, text in first.items():
        assert text.startswith(HEADER), path
        yaml.safe_load(text)


def test_committed_files_are_up_to_date():
    """The committed prometheus/ and alerting/ files are exactly what modelmon.yaml generates."""
    expected = artefacts(load_config(ROOT / "modelmon.yaml"))
    stale = [p for p, text in expected.items() if not (ROOT / p).exists() or (ROOT / p).read_text() != text]
    assert not stale, f"stale generated files (run `modelmon generate`): {stale}"
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "prometheus" / "rules").glob("*.yml")}
    assert on_disk == {p for p in expected if p.startswith("prometheus/rules/")}


def test_committed_files_target_the_compose_services():
    expected = artefacts(load_config(ROOT / "modelmon.yaml"))
    prom = yaml.safe_load(expected["prometheus/prometheus.yml"])
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets == {"modelmon": ["exporter:9188"], "prometheus": ["prometheus:9090"],
                       "alertmanager": ["alertmanager:9093"]}
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    am = yaml.safe_load(expected["alerting/alertmanager.yml"])
    urls = [w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])]
    assert urls == ["http://receiver:9095/webhook"]


# ---------------------------------------------------------------- the policy: who gets paged

# Pages are for harm to users (quality, errors, latency, traffic) and for a blind monitor
# (exporter down, a model's passes failing); drift, labels, input and cardinality open tickets.
PAGING_FAMILIES = {"quality", "availability", "latency", "traffic", "exporter"}


def test_pages_only_for_user_facing_harm_or_a_blind_monitor():
    alerts = alerts_of(full_config())
    by_family: dict[str, set[str]] = {}
    for a in alerts:
        by_family.setdefault(a.family, set()).add(a.severity)
    paging = {family for family, severities in by_family.items() if "critical" in severities}
    assert paging <= PAGING_FAMILIES, paging - PAGING_FAMILIES
    assert by_family["drift"] == {"warning"}
    assert by_family["labels"] == {"warning"} and by_family["input"] == {"warning"}
    assert by_family["estimation"] == {"warning"}  # an estimate opens tickets, never pages
    # latency and availability: the fast burn windows page, the slow ones ticket
    for family in ("latency", "availability"):
        assert {"critical", "warning"} <= by_family[family], family
    names = {(a.name, a.severity) for a in alerts}
    assert ("ModelmonLatencyBudgetBurn", "critical") in names and ("ModelmonLatencyP99High", "info") in names


def test_flapping_prone_alerts_have_hysteresis_and_test_clocks_drop_it():
    alerts = alerts_of(full_config())
    for a in alerts:
        if a.family in ("quality", "drift"):
            assert a.keep_firing_for, a.name
    quick = alerts_of(full_config(), RuleOptions(for_override="1m"))
    assert not any(a.keep_firing_for for a in quick)


# ---------------------------------------------------------------- version comparison (rollout)


def _policy_data() -> dict:
    return yaml.safe_load((ROOT / "modelmon" / "alerting" / "policy.yml").read_text())


def test_rollout_policy_is_data():
    policy = load_policy()
    assert policy.rollout == Rollout(alpha=0.01, min_samples=200, windows=("1h", "1d"))
    worse, better = policy.alert("ModelmonVersionWorse"), policy.alert("ModelmonVersionBetter")
    assert (worse.severity, worse.pending, worse.keep_firing_for) == ("warning", "15m", "30m")
    assert (better.severity, better.pending, better.keep_firing_for) == ("info", "15m", "30m")


@pytest.mark.parametrize("rollout, message", [
    ({"alpha": 0, "min_samples": 200, "windows": ["1h"]}, "rollout.alpha: expected a number between 0 and 1"),
    ({"alpha": 1, "min_samples": 200, "windows": ["1h"]}, "rollout.alpha"),
    ({"alpha": "0.01", "min_samples": 200, "windows": ["1h"]}, "rollout.alpha.*got '0.01'"),
    ({"alpha": True, "min_samples": 200, "windows": ["1h"]}, "rollout.alpha"),
    ({"min_samples": 200, "windows": ["1h"]}, "rollout.alpha.*got None"),
    ({"alpha": 0.01, "min_samples": 0, "windows": ["1h"]}, "rollout.min_samples: expected a whole number >= 1"),
    ({"alpha": 0.01, "min_samples": 2.5, "windows": ["1h"]}, "rollout.min_samples"),
    ({"alpha": 0.01, "min_samples": True, "windows": ["1h"]}, "rollout.min_samples"),
    ({"alpha": 0.01, "min_samples": 200, "windows": []}, "rollout.windows: expected a non-empty list"),
    ({"alpha": 0.01, "min_samples": 200, "windows": "1h"}, "rollout.windows: expected a non-empty list"),
    ({"alpha": 0.01, "min_samples": 200, "windows": ["soon"]}, r"rollout.windows\[0\]: expected a duration"),
    ({"alpha": 0.01, "min_samples": 200, "windows": ["1h", 3600]}, r"rollout.windows\[1\]: expected a positive"),
    ({"alpha": 0.01, "min_samples": 200, "windows": ["0s"]}, r"rollout.windows\[0\]: expected a positive"),
    ({"alpha": 0.01, "min_samples": 200, "windows": ["1h", "60m"]}, "rollout.windows: the same window is listed twice"),
    ({"alpha": 0.01, "min_samples": 200, "windows": ["1h"], "for": "15m"}, r"rollout: unknown key\(s\) \['for'\]"),
    (None, "rollout: expected a mapping, got None"),
])
def test_bad_rollout_policy_is_a_clear_error(rollout, message):
    data = _policy_data()
    data["rollout"] = rollout
    with pytest.raises(ValueError, match=f"^policy.yml: {message}"):
        parse_policy(data)


def test_rollout_windows_are_sorted_and_written_as_promql_reads_them():
    data = _policy_data()
    data["rollout"]["windows"] = ["1d", "360m", "1.5h"]
    assert parse_policy(data).rollout.windows == ("90m", "360m", "1d")


def _comparison_rules(config, policy=None) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    docs = rule_files(config, policy=policy)
    alerts, records = {}, {}
    for m in config.models:
        rules = [r for g in docs[f"model-{m.name}.yml"]["groups"] for r in g["rules"]]
        alerts[m.name] = [r for r in rules if r.get("alert", "").startswith("ModelmonVersion")]
        records[m.name] = [r for r in rules if "shadow" in r.get("record", "")]
    return alerts, records


def test_version_alerts_for_every_model_on_its_task_quantity():
    config = full_config()
    alerts, _ = _comparison_rules(config)
    for m in config.models:
        got = {r["alert"]: r for r in alerts[m.name]}
        assert set(got) == {"ModelmonVersionWorse", "ModelmonVersionBetter"}, m.name
        quantity, worse_op = ("accuracy", "<") if m.is_classification else ("mae", ">")
        better_op = ">" if worse_op == "<" else "<"
        for name, op in (("ModelmonVersionWorse", worse_op), ("ModelmonVersionBetter", better_op)):
            r = got[name]
            assert r["expr"].startswith(
                f'modelmon_version_quality_delta{{model="{m.name}", quantity="{quantity}"}} {op} 0\n'), r["expr"]
            assert f'modelmon_version_quality_pvalue{{model="{m.name}", quantity="{quantity}"}} < 0.01' in r["expr"]
            assert f'modelmon_version_comparison_samples{{model="{m.name}"}} >= 200' in r["expr"]
            assert "on (model, version, baseline, quantity, pairing)" in r["expr"]
            assert r["labels"]["family"] == "versions" and r["labels"]["team"] == m.team
            assert r["annotations"]["dashboard_url"] == f"http://localhost:3000/d/modelmon-rollout?var-model={m.name}"
            assert (r["for"], r["keep_firing_for"]) == ("15m", "30m")
        assert got["ModelmonVersionWorse"]["labels"]["severity"] == "warning"
        assert got["ModelmonVersionBetter"]["labels"]["severity"] == "info"


def test_version_alerts_follow_the_policy():
    data = _policy_data()
    data["rollout"].update(alpha=0.05, min_samples=1000)
    data["alerts"]["ModelmonVersionWorse"] = {"severity": "critical", "for": "1h"}
    data["alerts"]["ModelmonVersionBetter"]["severity"] = "warning"
    config = full_config()
    alerts, _ = _comparison_rules(config, parse_policy(data))
    for rules in alerts.values():
        got = {r["alert"]: r for r in rules}
        worse, better = got["ModelmonVersionWorse"], got["ModelmonVersionBetter"]
        assert "< 0.05\n" in worse["expr"] and worse["expr"].endswith(">= 1000")
        assert (worse["labels"]["severity"], worse["for"], "keep_firing_for" in worse) == ("critical", "1h", False)
        assert better["labels"]["severity"] == "warning"


def test_comparison_recording_rules_per_task_and_window():
    config = full_config()
    data = _policy_data()
    data["rollout"]["windows"] = ["6h", "1h", "7d"]
    _, records = _comparison_rules(config, parse_policy(data))
    for m in config.models:
        kind = "agreement_ratio" if m.is_classification else "prediction_difference"
        assert [r["record"] for r in records[m.name]] == [
            f"model_version:modelmon_shadow_{kind}:{w}" for w in ("1h", "6h", "7d")]
        for r, w in zip(records[m.name], ("1h", "6h", "7d")):
            pairs = f'sum by (model, version, baseline) (increase(modelmon_version_pairs_total{{model="{m.name}"}}[{w}]))'
            assert r["expr"].endswith(f"/\n({pairs} > 0)"), r["expr"]


# ---------------------------------------------------------------- estimated quality (issue 13)


def _model_rules(config, name: str, policy=None) -> list[dict]:
    docs = rule_files(config, policy=policy)
    return [r for g in docs[f"model-{name}.yml"]["groups"] for r in g["rules"] if "alert" in r]


def test_estimated_alerts_for_every_estimated_threshold_while_labels_are_missing():
    """One ticket per threshold whose key has an estimator, on the warning threshold, silenced by
    min_labeled labelled predictions over the alert window (absent counts as none)."""
    config = full_config()
    w = config.recording.alert_window
    for m in config.models:
        rules = {r["alert"]: r for r in _model_rules(config, m.name) if r["alert"].startswith("ModelmonEstimated")}
        keys = [k for k in ESTIMATED_KEYS if k in m.thresholds and QUANTITIES[k].applies_to(m.task)]
        assert set(rules) == {estimated_alert_name(k) for k in keys}, m.name
        for k in keys:
            r, t = rules[estimated_alert_name(k)], m.thresholds[k]
            op = "<" if QUANTITIES[k].direction == "below" else ">"
            assert r["expr"] == (f'{estimated_name(k)}{{model="{m.name}"}} {op} {number(t.warning)}\n'
                                 f"unless on (model, version)\n"
                                 f'model_version:modelmon_labeled_predictions:increase{w}{{model="{m.name}"}} '
                                 f">= {m.min_labeled}")
            assert r["labels"] == {"severity": "warning", "team": m.team, "family": "estimation"}
            assert (r["for"], r["keep_firing_for"]) == ("15m", "30m")
            assert r["annotations"]["runbook_url"].endswith("#" + estimated_alert_name(k).lower())
            assert f"/d/modelmon-model-{m.task}?var-model={m.name}" in r["annotations"]["dashboard_url"]
            assert "modelmon_estimated_stderr" in r["annotations"]["description"]
    names = {estimated_alert_name(k) for k in ESTIMATED_KEYS}
    assert names == {"ModelmonEstimatedAccuracyLow", "ModelmonEstimatedPrecisionLow", "ModelmonEstimatedRecallLow",
                     "ModelmonEstimatedF1Low", "ModelmonEstimatedRocAucLow", "ModelmonEstimatedMaeHigh",
                     "ModelmonEstimatedRmseHigh"}


def test_estimated_alerts_use_the_critical_threshold_without_a_warning_and_skip_other_quantities():
    raw = _raw_full_config()
    for m in raw["models"]:
        m["thresholds"] = ({"accuracy": {"critical": 0.7}, "log_loss": {"warning": 0.9}} if m["task"] != "regression"
                           else {"r2": {"warning": 0.5}, "rmse": {"critical": 12}})
    config = parse_config(raw)
    for m in config.models:
        estimated = [r for r in _model_rules(config, m.name) if r["alert"].startswith("ModelmonEstimated")]
        if m.task == "regression":
            assert [r["alert"] for r in estimated] == ["ModelmonEstimatedRmseHigh"]  # R² has no estimator
            assert estimated[0]["expr"].startswith('modelmon_estimated_rmse{model="m_regression"} > 12\n')
        else:
            assert [r["alert"] for r in estimated] == ["ModelmonEstimatedAccuracyLow"]  # log loss has none
            assert " < 0.7\n" in estimated[0]["expr"]
        assert all(r["labels"]["severity"] == "warning" for r in estimated)
        assert "critical threshold" in estimated[0]["annotations"]["description"]


def test_estimate_disagrees_beyond_three_standard_errors_with_min_labeled():
    config = full_config()
    for m in config.models:
        (r,) = [r for r in _model_rules(config, m.name) if r["alert"] == "ModelmonEstimateDisagrees"]
        delta = f'modelmon_estimation_labeled_delta{{model="{m.name}"}}'
        se = f'modelmon_estimation_labeled_stderr{{model="{m.name}"}}'
        assert f"{delta} > 3 * {se}" in r["expr"] and f"{delta} < -3 * {se}" in r["expr"]
        assert r["expr"].endswith(f'and on (job, instance, model, version)\n'
                                  f'modelmon_window_labeled{{model="{m.name}"}} >= {m.min_labeled}')
        assert r["labels"] == {"severity": "warning", "team": m.team, "family": "estimation"}
        assert (r["for"], r["keep_firing_for"]) == ("30m", "30m")
        assert "{{ $labels.quantity }}" in r["annotations"]["description"]
    # A model without thresholds still gets it: the check is on the estimator, not on a threshold.
    raw = _raw_full_config()
    for m in raw["models"]:
        m.pop("thresholds")
    config = parse_config(raw)
    for m in config.models:
        names = [r["alert"] for r in _model_rules(config, m.name)]
        assert "ModelmonEstimateDisagrees" in names and not [n for n in names if n.startswith("ModelmonEstimated")]


@pytest.mark.parametrize("key", ["estimated", "ModelmonEstimateDisagrees"])
def test_estimated_quality_never_pages(key):
    data = _policy_data()
    data["alerts"][key]["severity"] = "critical"
    with pytest.raises(ValueError, match=f"^policy.yml: alerts.{key}.severity: estimated quality opens tickets"):
        parse_policy(data)
    data["alerts"][key]["severity"] = "info"
    assert parse_policy(data).alert(key).severity == "info"


def test_drift_thresholds_on_wasserstein_and_ttest_alert_like_ks():
    """The normed Wasserstein distance and the Welch t-test p-value are per-feature gauges (per
    exporter process) with thresholds like KS: count the drifting features per model, guarded by the
    exporter's drift window."""
    raw = _raw_full_config()
    for m in raw["models"]:
        m["thresholds"] = {"wasserstein_normed": {"warning": 0.1}, "ttest_pvalue": {"warning": 0.001},
                           "ks_pvalue": {"warning": 0.001}}
    config = parse_config(raw)
    for m in config.models:
        rules = {r["alert"]: r for r in _model_rules(config, m.name) if r["alert"].startswith("ModelmonFeature")}
        assert set(rules) == {"ModelmonFeatureWassersteinNormedHigh", "ModelmonFeatureTtestPvalueLow",
                              "ModelmonFeatureKsPvalueLow"}
        for name, metric, op in (("ModelmonFeatureWassersteinNormedHigh", "modelmon_feature_wasserstein_normed", "> 0.1"),
                                 ("ModelmonFeatureTtestPvalueLow", "modelmon_feature_ttest_pvalue", "< 0.001")):
            r = rules[name]
            assert r["expr"] == (f'count by (model) (\n  group by (model, feature) (\n    {metric}{{model="{m.name}"}} {op}\n'
                                 f'    and on (job, instance, model)\n'
                                 f'    modelmon_drift_window_records{{model="{m.name}"}} >= {m.min_drift_samples}\n'
                                 f'  )\n) >= 1'), r["expr"]
            assert r["labels"]["severity"] == "warning" and r["labels"]["family"] == "drift"
            assert r["annotations"]["dashboard_url"].startswith("http://localhost:3000/d/modelmon-drift")
