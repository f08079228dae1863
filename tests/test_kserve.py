"""KServe's inference logger on POST /ingest: recorded CloudEvent pairs (tests/fixtures/kserve/, with the
headers KServe's agent sends) become prediction records; every event is counted once (refused, joined,
waiting or unmatched); the join is bounded and timed on the exporter's clock."""
from __future__ import annotations

import gzip
import json
import signal
import threading
from pathlib import Path

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelmon.config import parse_config
from modelmon.exporter.kserve import KServeReceiver, parse_headers, parse_time
from modelmon.exporter.pipeline import Exporter
from modelmon.exporter.server import create_app
from tests.processes import Serve

FIXTURES = Path(__file__).parent / "fixtures" / "kserve"
AUTH = {"Authorization": "Bearer s3cret"}
NOW = parse_time("2026-11-30T10:30:00Z")  # the exporter's clock: after every fixture's ce-time

MODELS = [
    {"name": "bin", "task": "binary", "positive_class": 1,
     "features": {"numeric": ["x1", "x2"], "categorical": ["c"]}, "reference": {"first": 200},
     "kserve": {"inference_service": "credit-risk", "namespace": "models", "features": ["x1", "x2", "c"],
                "prediction": "label", "score": "probability", "version": "v3"}},
    {"name": "multi", "task": "multiclass", "classes": ["a", "b", "c"],
     "features": {"numeric": ["x1"], "categorical": ["c"]}, "reference": {"first": 200},
     "kserve": {"inference_service": "segment", "prediction": "label", "score": "proba"}},
    {"name": "reg", "task": "regression", "features": {"numeric": ["x1", "x2"]}, "reference": {"first": 200},
     "kserve": {"inference_service": "eta", "features": ["x1", "x2"]}},
    {"name": "plain", "task": "binary", "features": {"numeric": ["x1"]}, "reference": {"first": 200}},
]


def config(**kserve_bounds):
    return parse_config({"models": MODELS, "exporter": {"multivariate": {"enabled": False},
                                                        "estimation": {"enabled": False},
                                                        "kserve": kserve_bounds}})


class Clock:
    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Harness:
    """An exporter on an injected clock behind the flask app, with the records handed to ingest kept."""

    def __init__(self, **bounds):
        self.clock = Clock()
        self.ex = Exporter(config(**bounds), clock=self.clock)
        self.client = create_app(self.ex, ingest_token="s3cret").test_client()
        self.records: list[dict] = []
        ingest = self.ex.ingest_objects

        def spy(objs, source):
            if source == "kserve":
                self.records.extend(objs)
            return ingest(objs, source)

        self.ex.ingest_objects = spy

    def post(self, half: dict, headers: dict | None = None, body: bytes | None = None, auth=True):
        h = {**half["headers"], **(headers or {}), **(AUTH if auth else {})}
        data = orjson.dumps(half["body"]) if body is None else body
        return self.client.post("/ingest", data=data, headers=h)

    def metrics(self) -> dict:
        text = self.client.get("/metrics").get_data(as_text=True)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def value(self, name: str, **labels) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= set(ls))


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def with_id(pair: dict, ce_id: str) -> dict:
    return {k: {**pair[k], "headers": {**pair[k]["headers"], "Ce-Id": ce_id}} for k in ("request", "response")}


@pytest.fixture
def h():
    return Harness()


# ---------------------------------------------------------------------------- recorded pairs


def test_v1_probabilities_become_one_record_per_instance(h):
    pair = fixture("v1_binary_proba.json")
    r = h.post(pair["request"])
    assert r.status_code == 202 and r.get_json()["status"] == "waiting for the response"
    assert h.records == [] and h.value("modelmon_kserve_join_pending") == 1
    r = h.post(pair["response"])
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    ce_id = "0009174a-24a8-4603-b098-09c8799950e9"
    assert body["status"] == "joined" and body["accepted"] == 2 and body["ids"] == [f"{ce_id}/0", f"{ce_id}/1"]
    t0 = parse_time("2026-11-30T10:15:02.078952900Z")
    assert h.records == [
        {"ts": t0, "id": f"{ce_id}/0", "model": "bin", "features": {"x1": 0.3, "x2": -1.2, "c": "de"},
         "status": "ok", "prediction": 0, "score": 0.19, "version": "v3", "latency_ms": pytest.approx(18.0)},
        {"ts": t0, "id": f"{ce_id}/1", "model": "bin", "features": {"x1": 1.5, "x2": 0.4, "c": "fr"},
         "status": "ok", "prediction": 1, "score": 0.88, "version": "v3", "latency_ms": pytest.approx(18.0)},
    ]
    assert h.value("modelmon_predictions_total", model="bin", version="v3", status="ok") == 2
    assert h.value("modelmon_records_ingested_total", source="kserve") == 2
    assert h.value("modelmon_prediction_latency_seconds_count", model="bin") == 2
    assert h.value("modelmon_prediction_latency_seconds_bucket", model="bin", le="0.025") == 2
    assert h.value("modelmon_kserve_events_total", inference_service="credit-risk", type="request") == 1
    assert h.value("modelmon_kserve_events_total", inference_service="credit-risk", type="response") == 1
    assert h.value("modelmon_kserve_join_pending") == 0
    assert h.value("modelmon_kserve_unmatched_total") == 0 and h.value("modelmon_kserve_events_rejected_total") == 0


def test_v1_objects_and_the_callers_own_id_take_a_late_label(h):
    pair = fixture("v1_binary_object.json")
    assert h.post(pair["request"]).status_code == 202
    assert h.post(pair["response"]).status_code == 202
    [rec] = h.records
    assert rec["id"] == "loan-app-7781" and rec["prediction"] == 1 and rec["score"] == 0.93
    assert rec["features"] == {"x1": -0.4, "x2": 2.25, "c": "it"}
    assert rec["latency_ms"] == pytest.approx(42.5)
    # The prediction waits for its label under the same id; the label is an ordinary NDJSON record.
    assert [k for k, _ in h.ex.joiner.items()] == [("bin", "loan-app-7781")]
    label = {"ts": "2026-11-30T10:29:00Z", "id": "loan-app-7781", "model": "bin", "label": 1}
    r = h.client.post("/ingest", data=orjson.dumps(label), headers=AUTH)
    assert r.status_code == 200
    assert h.value("modelmon_labels_total", model="bin", version="v3") == 1
    assert h.value("modelmon_confusion_total", model="bin", actual="1", predicted="1") == 1


def test_v2_named_inputs_multiclass_with_model_version(h):
    pair = fixture("v2_multiclass.json")
    assert h.post(pair["request"]).status_code == 202
    assert h.post(pair["response"]).status_code == 202
    ce_id = "b7c1e0de-58f4-4a57-9f0e-2a1c6f0d3e11"
    assert [(r["id"], r["features"], r["prediction"], r["version"]) for r in h.records] == [
        (f"{ce_id}/0", {"x1": 0.5, "c": "de"}, "a", "7"),
        (f"{ce_id}/1", {"x1": -0.25, "c": "fr"}, "c", "7"),
        (f"{ce_id}/2", {"x1": 1.125, "c": "de"}, "b", "7"),
    ]
    assert h.records[1]["scores"] == {"a": 0.1, "b": 0.3, "c": 0.6}
    assert h.records[0]["latency_ms"] == pytest.approx(31.0)
    assert h.value("modelmon_predictions_total", model="multi", version="7") == 3


def test_v2_positional_regression_versioned_by_endpoint(h):
    pair = fixture("v2_regression.json")
    assert h.post(pair["response"]).status_code == 202  # the response first: the order does not matter
    assert h.value("modelmon_kserve_join_pending") == 1
    assert h.post(pair["request"]).status_code == 202
    assert [(r["features"], r["prediction"], r["version"], r["latency_ms"]) for r in h.records] == [
        ({"x1": 1.0, "x2": 2.0}, 12.5, "canary", 250.0), ({"x1": 3.0, "x2": 4.0}, 30.25, "canary", 250.0)]
    assert h.value("modelmon_predictions_total", model="reg", version="canary") == 2
    assert h.value("modelmon_kserve_join_pending") == 0


def test_the_four_recorded_pairs_add_up(h):
    names = sorted(p.name for p in FIXTURES.glob("*.json"))
    for name in names:
        pair = fixture(name)
        assert h.post(pair["request"]).status_code == 202
        assert h.post(pair["response"]).status_code == 202
    assert h.value("modelmon_records_ingested_total", source="kserve") == 2 + 1 + 3 + 2
    assert h.value("modelmon_kserve_events_total") == 2 * len(names)
    assert h.value("modelmon_records_rejected_total") == 0


# ---------------------------------------------------------------------------- losses, counted


def test_unmatched_halves_expire_on_the_exporter_clock(h):
    pair = fixture("v1_binary_proba.json")
    assert h.post(pair["request"]).status_code == 202
    h.clock.t += 299
    assert h.value("modelmon_kserve_join_pending") == 1  # within the 5 min default
    h.clock.t += 2
    assert h.value("modelmon_kserve_join_pending") == 0  # the scrape expires it
    assert h.value("modelmon_kserve_unmatched_total", inference_service="credit-risk", type="request",
                   reason="ttl") == 1
    # Its response, late, waits alone (and is itself counted when it expires): nothing is joined.
    assert h.post(pair["response"]).status_code == 202
    h.clock.t += 301
    assert h.value("modelmon_kserve_unmatched_total", type="response", reason="ttl") == 1
    assert h.records == []


def test_ce_time_does_not_move_the_join_clock(h):
    """A half claiming a time far in the future neither outlives the TTL nor expires the others."""
    pair = with_id(fixture("v1_binary_object.json"), "future")
    far = {"Ce-Time": "2030-01-01T00:00:00Z"}
    assert h.post(pair["request"], far).status_code == 202
    other = with_id(fixture("v1_binary_object.json"), "other")
    assert h.post(other["request"]).status_code == 202
    assert h.value("modelmon_kserve_join_pending") == 2
    h.clock.t += 301
    assert h.value("modelmon_kserve_join_pending") == 0
    assert h.value("modelmon_kserve_unmatched_total", reason="ttl") == 2
    # Joined, the future time stamps the record, which the clock-skew rule refuses (counted).
    pair = with_id(fixture("v1_binary_object.json"), "future-2")
    h.post(pair["request"], far)
    r = h.post(pair["response"], far)
    assert r.status_code == 400 and r.get_json()["errors"][0]["reason"] == "bad_timestamp"
    assert h.value("modelmon_records_rejected_total", reason="bad_timestamp") == 1


def test_duplicate_half_replaces_the_waiting_one_and_is_counted(h):
    pair = fixture("v1_binary_object.json")
    assert h.post(pair["request"]).status_code == 202
    assert h.post(pair["request"]).status_code == 202
    assert h.value("modelmon_kserve_unmatched_total", inference_service="credit-risk", type="request",
                   reason="duplicate") == 1
    assert h.value("modelmon_kserve_join_pending") == 1
    assert h.post(pair["response"]).status_code == 202
    assert len(h.records) == 1 and h.value("modelmon_kserve_join_pending") == 0
    assert h.value("modelmon_kserve_events_total", type="request") == 2


def test_buffer_full_evicts_the_oldest_by_count_and_by_bytes():
    h = Harness(join_buffer_max=2)
    base = fixture("v1_binary_object.json")
    for i in range(3):
        assert h.post(with_id(base, f"r{i}")["request"]).status_code == 202
    assert h.value("modelmon_kserve_join_pending") == 2
    assert h.value("modelmon_kserve_unmatched_total", type="request", reason="buffer_full") == 1
    assert h.post(with_id(base, "r0")["response"]).status_code == 202  # r0 was the one evicted: waits alone
    assert h.records == []
    assert h.post(with_id(base, "r2")["response"]).status_code == 202  # r1 evicted by it; r2 joins
    assert [r["id"] for r in h.records] == ["r2"]
    assert h.value("modelmon_kserve_unmatched_total", reason="buffer_full") == 2

    h = Harness(join_buffer_max_bytes=2048)
    pair = fixture("v1_binary_proba.json")
    big = orjson.dumps({"instances": [[0.1, 0.2, "x" * 1500], [0.3, 0.4, "y"]]})
    assert h.post(pair["request"], body=big).status_code == 202
    assert h.post(with_id(pair, "second")["request"], body=big).status_code == 202
    assert h.value("modelmon_kserve_unmatched_total", reason="buffer_full") == 1
    assert h.value("modelmon_kserve_join_pending") == 1


def test_every_event_is_counted_once():
    """received = joined pairs + unmatched + pending, per type; refused events apart."""
    h = Harness(join_buffer_max=8)
    base = fixture("v1_binary_object.json")
    for i in range(12):  # all requests first (q0-q3 evicted), then 8 of their responses, newest first
        h.post(with_id(base, f"q{i}")["request"])
    for i in reversed(range(12)):
        if i % 3:
            h.post(with_id(base, f"q{i}")["response"])
    h.post(base["request"], {"Ce-Type": "nonsense"})
    h.post(base["request"], {"Ce-Type": "nonsense"})
    h.post(base["request"], {"Ce-Type": "nonsense"})
    joined = len(h.records)
    assert joined == 6 and h.value("modelmon_kserve_unmatched_total", reason="buffer_full") == 4
    waiting = [half.event.half for half in KServeReceiver.for_exporter(h.ex).buffer._pending.values()]
    for t in ("request", "response"):
        assert h.value("modelmon_kserve_events_total", type=t) == \
            joined + h.value("modelmon_kserve_unmatched_total", type=t) + waiting.count(t)
    assert h.value("modelmon_kserve_join_pending") == len(waiting) == 2 + 2  # q6, q9 requests; q1, q2 responses
    assert h.value("modelmon_kserve_events_rejected_total", reason="bad_event") == 3


# ---------------------------------------------------------------------------- refused, counted


@pytest.mark.parametrize("headers, fragment", [
    ({"Ce-Specversion": "0.2"}, "ce-specversion"),
    ({"Ce-Type": "com.example.other"}, "ce-type"),
    ({"Ce-Inferenceservicename": ""}, "missing header ce-inferenceservicename"),
    ({"Ce-Source": ""}, "missing header ce-source"),
    ({"Ce-Time": "yesterday"}, "ce-time"),
    ({"Ce-Id": "x" * 2000}, "ce-id"),
])
def test_malformed_headers_are_refused_and_counted(h, headers, fragment):
    pair = fixture("v1_binary_proba.json")
    r = h.post(pair["request"], headers)
    assert r.status_code == 400
    assert r.get_json()["reason"] == "bad_event" and fragment in r.get_json()["error"]
    assert h.value("modelmon_kserve_events_rejected_total", reason="bad_event") == 1
    assert h.value("modelmon_kserve_events_total") == 0 and h.value("modelmon_kserve_join_pending") == 0


@pytest.mark.parametrize("half, body, fragment", [
    ("request", b"not json", "not JSON"),
    ("request", b"[1, 2]", "JSON object"),
    ("request", b'{"instances": []}', "no instances"),
    ("request", b'{"instances": [[1, 2]]}', "kserve.features lists 3"),
    ("request", b'{"something": 1}', "neither v1"),
    ("response", b'{"predictions": [[0.5, 0.3, 0.2], [0.1, 0.9]]}', "expected 2 probabilities"),
    ("response", b'{"predictions": [{"other": 1}, {"label": 1}]}', "no key 'label'"),
    ("response", b'{"outputs": [{"name": "o", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}', "shape [3]"),
])
def test_malformed_bodies_are_refused_and_nothing_else_is_touched(h, half, body, fragment):
    pair = fixture("v1_binary_proba.json")
    r = h.post(pair[half], body=body)
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["reason"] == "bad_body" and fragment in r.get_json()["error"], r.get_json()
    assert h.value("modelmon_kserve_events_rejected_total", reason="bad_body") == 1
    assert h.value("modelmon_kserve_events_total") == 0 and h.value("modelmon_kserve_join_pending") == 0
    # Another model's records (plain NDJSON) and another InferenceService's pairs go on.
    rec = {"ts": NOW - 5, "model": "plain", "features": {"x1": 1.0}, "prediction": 1, "score": 0.7}
    assert h.client.post("/ingest", data=orjson.dumps(rec), headers=AUTH).status_code == 200
    other = fixture("v2_regression.json")
    assert h.post(other["request"]).status_code == 202 and h.post(other["response"]).status_code == 202
    assert h.value("modelmon_predictions_total", model="plain") == 1
    assert h.value("modelmon_predictions_total", model="reg") == 2


def test_a_response_that_does_not_fit_its_request_is_refused_and_the_request_keeps_waiting(h):
    pair = fixture("v1_binary_proba.json")
    assert h.post(pair["request"]).status_code == 202
    r = h.post(pair["response"], body=b'{"predictions": [[0.5, 0.5]]}')
    assert r.status_code == 400 and "2 instance(s), its response 1" in r.get_json()["error"]
    assert h.value("modelmon_kserve_join_pending") == 1
    assert h.post(pair["response"]).status_code == 202 and len(h.records) == 2


def test_unknown_service_is_refused_and_counted(h):
    pair = fixture("v1_binary_proba.json")
    r = h.post(pair["request"], {"Ce-Inferenceservicename": "fraud"})
    assert r.status_code == 400 and r.get_json()["reason"] == "unknown_service"
    assert "'fraud'" in r.get_json()["error"]
    # The binding of credit-risk is for namespace models: the same name elsewhere is another service.
    r = h.post(pair["request"], {"Ce-Namespace": "staging"})
    assert r.status_code == 400 and r.get_json()["reason"] == "unknown_service"
    assert h.value("modelmon_kserve_events_rejected_total", reason="unknown_service") == 2
    # No label of an unbound name appears: the events counter is by configured service only.
    assert {dict(ls).get("inference_service") for (n, ls) in h.metrics() if n == "modelmon_kserve_events_total"} \
        == {"credit-risk", "segment", "eta"}


def test_bearer_token_is_enforced_for_events(h):
    pair = fixture("v1_binary_proba.json")
    r = h.post(pair["request"], auth=False)
    assert r.status_code == 401
    r = h.post(pair["request"], {"Authorization": "Bearer wrong"}, auth=False)
    assert r.status_code == 401
    assert h.value("modelmon_kserve_events_total") == 0 and h.value("modelmon_kserve_events_rejected_total") == 0


def test_gzip_body_is_accepted(h):
    pair = fixture("v2_multiclass.json")
    for half in ("request", "response"):
        r = h.post(pair[half], {"Content-Encoding": "gzip"}, body=gzip.compress(orjson.dumps(pair[half]["body"])))
        assert r.status_code == 202, r.get_json()
    assert len(h.records) == 3


def test_concurrent_events_all_join():
    h = Harness()
    base = fixture("v2_regression.json")
    n_threads, per = 8, 40

    def run(k: int) -> None:
        client = create_app(h.ex, ingest_token="s3cret").test_client()
        for i in range(per):
            p = with_id(base, f"t{k}-{i}")
            first, second = ("request", "response") if (i + k) % 2 else ("response", "request")
            for half in (first, second):
                r = client.post("/ingest", data=orjson.dumps(p[half]["body"]), headers={**p[half]["headers"], **AUTH})
                assert r.status_code == 202

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(h.records) == 2 * n_threads * per
    assert h.value("modelmon_kserve_events_total") == 2 * n_threads * per
    assert h.value("modelmon_kserve_join_pending") == 0 and h.value("modelmon_kserve_unmatched_total") == 0
    assert h.value("modelmon_predictions_total", model="reg") == 2 * n_threads * per


# ---------------------------------------------------------------------------- units


def test_parse_time_reads_go_nanoseconds_and_offsets():
    assert parse_time("2021-04-10T00:23:26.0789529Z") == pytest.approx(1618014206.0789529)
    assert parse_time("2021-04-10T02:23:26+02:00") == parse_time("2021-04-10T00:23:26Z")
    with pytest.raises(ValueError):
        parse_time("2021-04-10")


def test_headers_in_any_case():
    ev = parse_headers({"ce-specversion": "1.0", "CE-ID": "a", "ce-source": "s", "ce-type": "x.inference.response",
                        "Ce-InferenceServiceName": "svc"})
    assert (ev.id, ev.half, ev.service, ev.time, ev.endpoint) == ("a", "response", "svc", None, "")


def test_an_exporter_without_bindings_shows_no_kserve_series_until_an_event_arrives():
    cfg = parse_config({"models": [MODELS[3]], "exporter": {"multivariate": {"enabled": False}}})
    ex = Exporter(cfg, clock=Clock())
    client = create_app(ex).test_client()
    assert "modelmon_kserve_events_rejected_total{" not in client.get("/metrics").get_data(as_text=True)
    pair = fixture("v1_binary_proba.json")
    r = client.post("/ingest", data=orjson.dumps(pair["request"]["body"]), headers=pair["request"]["headers"])
    assert r.status_code == 400 and r.get_json()["reason"] == "unknown_service"
    text = client.get("/metrics").get_data(as_text=True)
    assert 'modelmon_kserve_events_rejected_total{reason="unknown_service"} 1.0' in text
    assert KServeReceiver.for_exporter(ex) is KServeReceiver.for_exporter(ex)  # one per exporter


# ---------------------------------------------------------------------------- a live `modelmon serve`

SERVE_CONFIG = """
models:
  - name: bin
    task: binary
    features: {numeric: [x1, x2], categorical: [c]}
    reference: {first: 100}
    kserve:
      inference_service: credit-risk
      namespace: models
      features: [x1, x2, c]
      prediction: label
      score: probability
      version: v3
  - name: reg
    task: regression
    features: {numeric: [x1, x2]}
    reference: {first: 100}
    kserve: {inference_service: eta, features: [x1, x2]}
exporter:
  multivariate: {enabled: false}
  kserve: {join_ttl: 1m, join_buffer_max: 100}
"""


def test_live_serve_process_joins_recorded_pairs(tmp_path):
    serve = Serve(tmp_path, None, config=SERVE_CONFIG)
    serve.start(env={"MODELMON_INGEST_TOKEN": "s3cret"})
    try:
        for name in ("v1_binary_proba.json", "v1_binary_object.json", "v2_regression.json"):
            pair = fixture(name)
            for half in ("response", "request"):
                r = requests.post(serve.url("/ingest"), data=orjson.dumps(pair[half]["body"]),
                                  headers={**pair[half]["headers"], **AUTH}, timeout=5)
                assert r.status_code == 202, r.text
        pair = fixture("v2_multiclass.json")  # no model binds `segment` here
        r = requests.post(serve.url("/ingest"), data=orjson.dumps(pair["request"]["body"]),
                          headers={**pair["request"]["headers"], **AUTH}, timeout=5)
        assert r.status_code == 400 and r.json()["reason"] == "unknown_service"
        assert serve.value("modelmon_records_ingested_total", source="kserve") == 5
        assert serve.value("modelmon_predictions_total", model="bin", version="v3") == 3
        assert serve.value("modelmon_predictions_total", model="reg", version="canary") == 2
        assert serve.value("modelmon_kserve_events_total") == 6
        assert serve.value("modelmon_kserve_events_rejected_total", reason="unknown_service") == 1
        assert serve.value("modelmon_kserve_join_pending") == 0
    finally:
        serve.stop(signal.SIGTERM)


def test_a_failure_applying_a_pair_is_counted_not_silent(h, monkeypatch):
    def broken(objs, source):
        raise RuntimeError("boom")

    monkeypatch.setattr(h.ex, "ingest_objects", broken)
    pair = fixture("v2_regression.json")
    assert h.post(pair["request"]).status_code == 202
    assert h.post(pair["response"]).status_code == 500
    assert h.value("modelmon_refresh_errors_total", model="reg", stage="ingest") == 1
