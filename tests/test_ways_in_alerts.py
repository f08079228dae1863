"""The alerts on the ways in (Redis Stream source, KServe join): policy data, rendering, routing.

Their firing and silence is tested by promtool (prometheus/tests/ways_in.yml); here: the policy's
`ways_in` section is checked like `rollout`, the thresholds come from it, and the rules read the
group's lag with max (never a sum over replicas) and KServe halves summed over replicas.
"""
from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT
from modelmon.alerting.options import RuleOptions
from modelmon.alerting.policy import load_policy, parse_policy
from modelmon.alerting.rules import EXPORTER_RULES_FILE, rule_files
from modelmon.config import load_config

NAMES = ("ModelmonStreamDown", "ModelmonStreamLagHigh", "ModelmonKServeUnmatched")


def policy_data() -> dict:
    return yaml.safe_load((ROOT / "modelmon" / "alerting" / "policy.yml").read_text())


def exporter_rules(policy=None, options=RuleOptions()) -> dict[str, dict]:
    docs = rule_files(load_config(ROOT / "modelmon.yaml"), options, policy)
    return {r["alert"]: r for g in docs[EXPORTER_RULES_FILE]["groups"] for r in g["rules"] if "alert" in r}


def test_the_three_alerts_are_in_the_exporter_rules_with_the_policys_routing():
    rules = exporter_rules()
    assert set(NAMES) <= set(rules)
    severity = {n: rules[n]["labels"]["severity"] for n in NAMES}
    # A blind stream source pages (like a dead exporter); lag and join losses open tickets.
    assert severity == {"ModelmonStreamDown": "critical", "ModelmonStreamLagHigh": "warning",
                        "ModelmonKServeUnmatched": "warning"}
    assert all("model" not in rules[n]["labels"] and "team" not in rules[n]["labels"] for n in NAMES)
    for n in NAMES:
        assert rules[n]["annotations"]["runbook_url"].endswith("#" + n.lower())
    assert rules["ModelmonStreamDown"]["for"] == "5m"  # before ModelmonNoPredictions' 10m


def test_lag_is_the_groups_maximum_and_kserve_halves_are_summed_over_replicas():
    rules = exporter_rules()
    lag = rules["ModelmonStreamLagHigh"]["expr"]
    assert lag.startswith("max by (stream, group) (modelmon_stream_lag_entries) > ") and "sum" not in lag
    kserve = rules["ModelmonKServeUnmatched"]["expr"]
    assert "sum by (inference_service) (rate(modelmon_kserve_unmatched_total[15m]))" in kserve
    assert "instance" not in kserve  # the two halves may land on different replicas


def test_thresholds_come_from_the_policy():
    data = policy_data()
    data["ways_in"].update(stream_lag_entries=123, kserve_unmatched_ratio=0.2, kserve_window="1h")
    rules = exporter_rules(parse_policy(data), RuleOptions(min_requests=7))
    assert rules["ModelmonStreamLagHigh"]["expr"].endswith("> 123")
    kserve = rules["ModelmonKServeUnmatched"]["expr"]
    assert "[1h]" in kserve and "> 0.2\n" in kserve and kserve.endswith("* 3600 >= 7")
    assert "(more than 20%)" in rules["ModelmonKServeUnmatched"]["annotations"]["description"]


def test_test_clocks_shrink_their_for():
    rules = exporter_rules(options=RuleOptions(for_override="5s"))
    assert {rules[n]["for"] for n in NAMES} == {"5s"}


@pytest.mark.parametrize("change, message", [
    ({"stream_lag_entries": 0}, r"ways_in.stream_lag_entries: expected a whole number >= 1"),
    ({"stream_lag_entries": True}, r"ways_in.stream_lag_entries"),
    ({"kserve_unmatched_ratio": 1.5}, r"ways_in.kserve_unmatched_ratio: expected a share"),
    ({"kserve_window": "soon"}, r"ways_in.kserve_window: expected a positive duration"),
    ({"kserve_window": "0m"}, r"ways_in.kserve_window"),
    ({"typo": 1}, r"ways_in: expected exactly the keys .* unknown \['typo'\]"),
])
def test_a_bad_ways_in_section_is_refused_with_its_key(change, message):
    data = copy.deepcopy(policy_data())
    data["ways_in"].update(change)
    with pytest.raises(ValueError, match=f"^policy.yml: {message}"):
        parse_policy(data)


def test_a_missing_ways_in_key_is_named():
    data = policy_data()
    del data["ways_in"]["kserve_window"]
    with pytest.raises(ValueError, match=r"missing \['kserve_window'\]"):
        parse_policy(data)


def test_the_committed_policy_loads():
    w = load_policy().ways_in
    assert w.stream_lag_entries >= 1 and 0 < w.kserve_unmatched_ratio < 1
