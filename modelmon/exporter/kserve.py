"""KServe's inference logger, natively: binary-mode CloudEvents on POST /ingest joined into records.

KServe's agent (pkg/logger in kserve/kserve) posts every inference request, and the response when
the model answered 200, as two CloudEvents in binary mode: the body is the payload as served, the
attributes are headers. It sends `Ce-Specversion` (1.0), `Ce-Id` (the request's id: the caller's own
`Ce-Id` header when it sent one, else a fresh UUID; the same on both halves), `Ce-Source`, `Ce-Type`
(`org.kubeflow.serving.inference.request` / `.response`), `Ce-Time` (when the agent sent it), the
extensions `Ce-Inferenceservicename`, `Ce-Namespace`, `Ce-Component`, `Ce-Endpoint` (often empty),
`Ce-Metadata` (and `Ce-Annotations`; neither used here), and the served request's Content-Type.

Here each event is checked (headers, then the body against the model's `kserve:` binding: the
bodies are modelmon.exporter.kserve_payload's), then
waits in a bounded buffer for its other half; a pair becomes one prediction record per instance,
applied through `Exporter.ingest_objects(records, "kserve")` like any other record. Every event is
counted once: refused (`modelmon_kserve_events_rejected_total{reason}`), or received
(`modelmon_kserve_events_total`) and then joined, still waiting (`modelmon_kserve_join_pending`)
or lost without its other half (`modelmon_kserve_unmatched_total{reason}`: ttl, buffer_full,
duplicate). So per InferenceService and type: received = joined pairs + unmatched + pending.

The wait is measured on the exporter's wall clock from each half's arrival, never on `Ce-Time`:
no event can keep itself or expire others by the time it claims. `Ce-Time` only stamps the record
(the exporter's clock-skew rule refuses it when too far ahead) and gives the latency.

Locks: `_lock` guards the buffer and the counts and is never held while taking the exporter lock
(the scrape calls `fill` under the exporter lock, and `fill` takes `_lock`).
"""
from __future__ import annotations

import re
import threading
import weakref
from collections import OrderedDict, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, NamedTuple

from modelmon.config import ModelConfig
from modelmon.exporter.kserve_payload import Refused, load_body, request_features, response_outputs
from modelmon.exporter.records import MAX_ID_LENGTH

REQUEST, RESPONSE = "request", "response"
HALVES = (REQUEST, RESPONSE)
UNMATCHED_REASONS = ("ttl", "buffer_full", "duplicate")
REJECT_REASONS = ("bad_event", "unknown_service", "bad_body")
SPEC_VERSIONS = ("1.0",)
MAX_CE_ID = MAX_ID_LENGTH - 12  # room for the "/<index>" of a multi-instance request's record ids
MAX_HEADER = 256  # the other attributes, as kept (service, namespace, component, endpoint)

_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))$")


class Event(NamedTuple):
    """The attributes of one event that matter here."""

    id: str
    half: str  # request | response
    service: str
    namespace: str
    component: str
    endpoint: str
    time_ns: int | None  # Ce-Time, epoch nanoseconds (exact: latencies are differences of two of them)

    @property
    def time(self) -> float | None:
        return None if self.time_ns is None else self.time_ns / 1e9


# --------------------------------------------------------------------------- headers


def parse_time_ns(text: str) -> int:
    """RFC 3339 -> integer epoch nanoseconds (Go writes up to nine fraction digits; more are cut)."""
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text[:60]!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    tz = timezone.utc
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(offset if m.group(9) == "+" else -offset)
    whole = int(datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp())
    return whole * 1_000_000_000 + int((m.group(7) or "0")[:9].ljust(9, "0"))


def parse_time(text: str) -> float:
    """RFC 3339 -> epoch seconds."""
    return parse_time_ns(text) / 1e9


def parse_headers(headers: Mapping[str, str]) -> Event:
    """The event's attributes from its `ce-*` headers (names in any case); Refused("bad_event")."""
    h = {k.lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}

    def text(name: str, required: bool, limit: int = MAX_HEADER) -> str:
        value = h.get(name)
        if value is None or (required and not value.strip()):
            if required:
                raise Refused("bad_event", f"missing header {name}")
            return ""
        if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise Refused("bad_event", f"header {name}: at most {limit} printable characters")
        return value.strip()

    spec = text("ce-specversion", True)
    if spec not in SPEC_VERSIONS:
        raise Refused("bad_event", f"ce-specversion {spec[:20]!r}: only CloudEvents {', '.join(SPEC_VERSIONS)} "
                                   f"(binary mode) is understood")
    ce_id = text("ce-id", True, MAX_CE_ID)
    text("ce-source", True, 2048)
    kind = text("ce-type", True)
    if kind.endswith(".inference.request"):
        half = REQUEST
    elif kind.endswith(".inference.response"):
        half = RESPONSE
    else:
        raise Refused("bad_event", f"ce-type {kind[:80]!r}: expected one ending in .inference.request or "
                                   f".inference.response (KServe's org.kubeflow.serving.inference.*)")
    service = text("ce-inferenceservicename", True)
    when = text("ce-time", False, 64)
    try:
        ts = parse_time_ns(when) if when else None
    except (ValueError, OverflowError) as e:
        raise Refused("bad_event", f"ce-time: {e}") from None
    return Event(ce_id, half, service, text("ce-namespace", False), text("ce-component", False),
                 text("ce-endpoint", False), ts)


# --------------------------------------------------------------------------- join


class Half(NamedTuple):
    event: Event
    model: ModelConfig
    payload: Any  # request: list of feature dicts; response: Outputs
    count: int  # instances
    arrival: float  # exporter wall clock
    size: int  # body bytes: what the buffer's byte bound counts


class JoinBuffer:
    """Halves waiting for the other, by (model, component, ce-id), in arrival order. Not thread-safe:
    the receiver holds its lock around every call. `on_lost(half, reason)` counts each one that leaves
    without its other half."""

    def __init__(self, ttl: float, max_entries: int, max_bytes: int, on_lost: Callable[[Half, str], None]):
        self.ttl, self.max_entries, self.max_bytes = ttl, max_entries, max_bytes
        self._on_lost = on_lost
        self._pending: OrderedDict[tuple, Half] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    def peek(self, key: tuple) -> Half | None:
        return self._pending.get(key)

    def add(self, key: tuple, half: Half) -> Half | None:
        """The waiting other half (taken out: the pair is complete), or None (`half` now waits)."""
        old = self._pending.pop(key, None)
        if old is not None:
            self.bytes -= old.size
            if old.event.half != half.event.half:
                return old
            self._on_lost(old, "duplicate")  # the same half again: the newer one waits in its place
        self._pending[key] = half
        self.bytes += half.size
        while len(self._pending) > self.max_entries or self.bytes > self.max_bytes:
            _, gone = self._pending.popitem(last=False)
            self.bytes -= gone.size
            self._on_lost(gone, "buffer_full")
        return None

    def expire(self, now: float) -> None:
        cutoff = now - self.ttl
        while self._pending:
            key, first = next(iter(self._pending.items()))
            if first.arrival >= cutoff:
                break
            del self._pending[key]
            self.bytes -= first.size
            self._on_lost(first, "ttl")


def records(req: Half, resp: Half) -> list[dict]:
    """One prediction record per instance. Ids: the ce-id for one instance, else `<ce-id>/<i>` (i from 0,
    the instance's position in the request), so a late label can be sent by the same id."""
    m, b = req.model, req.model.kserve
    ev, rev = req.event, resp.event
    ts = ev.time if ev.time is not None else req.arrival
    if ev.time_ns is not None and rev.time_ns is not None:
        latency = (rev.time_ns - ev.time_ns) / 1e6
    elif ev.time is None and rev.time is None:
        latency = (resp.arrival - req.arrival) * 1000.0
    else:
        latency = -1.0  # one stamped, one not: no comparable pair of times
    version = None
    for source in b.version_from:
        version = resp.payload.model_version if source == "model_version" else (ev.endpoint or rev.endpoint or None)
        if version:
            break
    version = version or b.version
    n = req.count
    out = []
    for i, (features, output) in enumerate(zip(req.payload, resp.payload.values)):
        rec = {"ts": ts, "id": ev.id if n == 1 else f"{ev.id}/{i}", "model": m.name, "features": features,
               "status": "ok", **output}
        if version:
            rec["version"] = version
        if latency >= 0:  # agents' sends may race: a response stamped before its request has no latency
            rec["latency_ms"] = latency
        out.append(rec)
    return out


# --------------------------------------------------------------------------- the receiver

_RECEIVERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_RECEIVERS_LOCK = threading.Lock()


class KServeReceiver:
    """Checks, joins and applies KServe events for one exporter; fills the KServe families at scrape."""

    @classmethod
    def for_exporter(cls, exporter) -> "KServeReceiver":
        """The exporter's one receiver (several apps on one exporter share it: one set of counts)."""
        with _RECEIVERS_LOCK:
            receiver = _RECEIVERS.get(exporter)
            if receiver is None:
                receiver = _RECEIVERS[exporter] = cls(exporter)
            return receiver

    def __init__(self, exporter, clock: Callable[[], float] | None = None):
        self.exporter = exporter
        self.clock = clock or exporter.clock
        exp = exporter.config.exporter
        self.bindings: dict[tuple, ModelConfig] = {
            (m.kserve.inference_service, m.kserve.namespace, m.kserve.component): m
            for m in exporter.config.models if m.kserve is not None}
        self.services = sorted({key[0] for key in self.bindings})
        self._lock = threading.Lock()
        self.events: dict[tuple[str, str], int] = defaultdict(int)  # (service, half)
        self.rejected: dict[str, int] = defaultdict(int)
        self.unmatched: dict[tuple[str, str, str], int] = defaultdict(int)  # (service, half, reason)
        self.buffer = JoinBuffer(exp.kserve_join_ttl_seconds, exp.kserve_join_buffer_max,
                                 exp.kserve_join_buffer_max_bytes, self._lost)
        self._registered = False
        if self.bindings:  # else on the first event: an exporter without KServe shows no KServe series
            self._register()

    def _register(self) -> None:
        if self._registered:
            return
        with self.exporter.lock:
            if not self._registered:
                self.exporter.extra_collectors.append(self.fill)
                self._registered = True

    def _lost(self, half: Half, reason: str) -> None:
        self.unmatched[(half.model.kserve.inference_service, half.event.half, reason)] += 1

    def binding(self, ev: Event) -> ModelConfig | None:
        """The model bound to the event's InferenceService: the most specific binding that matches."""
        ns, comp = ev.namespace or None, ev.component or None
        for key in ((ev.service, ns, comp), (ev.service, ns, None), (ev.service, None, comp),
                    (ev.service, None, None)):
            if key in self.bindings:
                return self.bindings[key]
        return None

    def _refuse(self, e: Refused) -> tuple[int, dict]:
        with self._lock:
            self.rejected[e.reason] += 1
        return 400, {"error": e.message, "reason": e.reason}

    def handle(self, headers: Mapping[str, str], body: bytes | bytearray) -> tuple[int, dict]:
        """(HTTP status, JSON body) for one event."""
        self._register()
        arrival = self.clock()
        try:
            ev = parse_headers(headers)
            m = self.binding(ev)
            if m is None:
                raise Refused("unknown_service", f"no model binds InferenceService {ev.service!r}"
                                                 f"{f' in namespace {ev.namespace!r}' if ev.namespace else ''}"
                                                 f"{f' (component {ev.component!r})' if ev.component else ''}: "
                                                 f"add a kserve: section to its model in the config")
            doc = load_body(body)
            if ev.half == REQUEST:
                payload: Any = request_features(doc, m.kserve, m)
                count = len(payload)
            else:
                payload = response_outputs(doc, m.kserve, m)
                count = len(payload.values)
        except Refused as e:
            return self._refuse(e)
        half = Half(ev, m, payload, count, arrival, len(body))
        key = (m.name, ev.component, ev.id)
        with self._lock:
            self.buffer.expire(arrival)
            waiting = self.buffer.peek(key)
            if waiting is not None and waiting.event.half != ev.half and waiting.count != count:
                self.rejected["bad_body"] += 1  # the waiting half stays: its true other half may still come
                req_n, resp_n = (count, waiting.count) if ev.half == REQUEST else (waiting.count, count)
                return 400, {"error": f"request {ev.id!r} has {req_n} instance(s), its response {resp_n}",
                             "reason": "bad_body"}
            self.events[(m.kserve.inference_service, ev.half)] += 1
            other = self.buffer.add(key, half)
        info = {"id": ev.id, "type": ev.half, "inference_service": ev.service, "model": m.name}
        if other is None:
            return 202, {**info, "status": "waiting for the " + (RESPONSE if ev.half == REQUEST else REQUEST)}
        req, resp = (half, other) if ev.half == REQUEST else (other, half)
        try:
            recs = records(req, resp)
            result = self.exporter.ingest_objects(recs, "kserve")
        except Exception:  # noqa: BLE001 - a bug here must not pass silently: counted as the model's ingest failure
            with self.exporter.lock:
                self.exporter.model_failed(m.name, "ingest")
            return 500, {**info, "error": "internal error while applying the joined pair (logged, counted in "
                                          "modelmon_refresh_errors_total{stage=\"ingest\"})"}
        payload = {**info, "status": "joined", "records": len(recs), "accepted": result.accepted,
                   "rejected": result.rejected,
                   "errors": [{"index": r.index, "reason": r.reason, "message": r.message} for r in result.errors],
                   "ids": [r["id"] for r in recs[:100]]}
        return (202 if not result.rejected else 207 if result.accepted else 400), payload

    def expire(self) -> None:
        with self._lock:
            self.buffer.expire(self.clock())

    def fill(self, families: dict) -> None:
        """Add the KServe samples (called by the collector under the exporter lock). Every counter of a
        bound InferenceService exists from the start at 0, so its first increase is seen."""
        with self._lock:
            self.buffer.expire(self.clock())
            events = {(s, h): 0 for s in self.services for h in HALVES} | dict(self.events)
            unmatched = {(s, h, r): 0 for s in self.services for h in HALVES for r in UNMATCHED_REASONS} \
                | dict(self.unmatched)
            rejected = {r: 0 for r in REJECT_REASONS} | dict(self.rejected)
            pending = len(self.buffer)
        for labels, n in sorted(events.items()):
            families["modelmon_kserve_events_total"].add_metric(list(labels), n)
        for reason, n in sorted(rejected.items()):
            families["modelmon_kserve_events_rejected_total"].add_metric([reason], n)
        for labels, n in sorted(unmatched.items()):
            families["modelmon_kserve_unmatched_total"].add_metric(list(labels), n)
        families["modelmon_kserve_join_pending"].add_metric([], pending)
