"""What PredictionLogger.log() costs a model service, next to serialising the same record yourself.

    python benchmarks/client_overhead.py [--records 200000] [--features 10]

Prints, for one typical record (binary model, `--features` features: 70% numeric, 30% categorical,
id, version, score, latency):

  * the peers, in the same run: `orjson.dumps(record)` and the stdlib `json.dumps(record)`;
  * log(), enqueue path only: rounds of 10,000 calls into a queue of 10,000 (the default), emptied
    between rounds, untimed; the worker sleeps during a round, so this is validation + copy +
    append under the lock -- what a request pays (median over rounds, as for the peers);
  * log() with the worker draining to a transport that discards (batches of 500):
    mean and percentiles of single calls (timed one by one, timer included) while the worker
    serialises batches on the same GIL, and the whole cost per record (logging + background
    serialisation, from the first call to the end of flush; the queue holds the whole run, so
    nothing is dropped);
  * end to end to a live `python -m modelmon serve` over HTTP (gzip, batches of 500) and to a file
    (the exporter not following it): records/s from the first log() to flush(), and drops (none
    expected: the queue holds the run).
Timings are wall clock on whatever machine runs this; run it on a quiet one.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelmon.client import Delivery, PredictionLogger  # noqa: E402


def make_record(n_features: int, i: int = 0) -> dict:
    rng = random.Random(i)
    n_cat = max(1, round(n_features * 0.3))
    feats = {f"x{j}": rng.gauss(0, 1) for j in range(n_features - n_cat)}
    feats.update({f"c{j}": rng.choice(("de", "fr", "it", "es")) for j in range(n_cat)})
    score = rng.random()
    return dict(model="bench", version="v1", id=f"req-{i:08d}", features=feats, prediction=int(score >= 0.5),
                score=score, latency_ms=rng.lognormvariate(3, 0.3))


ROUND = 10_000  # calls timed together: the default queue_size, so one round fills the queue once


def per_call_ns(fn, records: list[dict], before_round=None) -> float:
    """Median over rounds of ROUND calls of the mean ns per call (rounds damp a busy machine's noise)."""
    rounds = []
    for start in range(0, len(records) - ROUND + 1, ROUND):
        if before_round is not None:
            before_round()
        chunk = records[start:start + ROUND]
        t0 = time.perf_counter_ns()
        for r in chunk:
            fn(r)
        rounds.append((time.perf_counter_ns() - t0) / ROUND)
    return statistics.median(rounds)


class Discard:
    def send(self, lines):
        return Delivery(sent=len(lines))

    def close(self):
        pass


def bench_peers(records):
    dumps, jdumps = orjson.dumps, json.dumps
    full = [{**r, "ts": 1_790_000_000.0 + i, "status": "ok"} for i, r in enumerate(records)]
    return per_call_ns(dumps, full), per_call_ns(jdumps, full)


def bench_enqueue(records):
    """The queue (default size) fills once per round; the worker empties it between rounds, untimed."""
    logger = PredictionLogger(transport=Discard(), queue_size=ROUND, batch_size=ROUND, flush_interval=3600)
    log = logger.log
    ns = per_call_ns(lambda r: log(**r), records, before_round=lambda: logger.flush(60))
    stats = logger.stats()
    assert stats["dropped"] == 0 and stats["invalid"] == 0, stats
    logger.close()
    return ns


def bench_with_worker(records):
    n = len(records)
    # A queue as long as the run: this producer never pauses (a service does), and a dropped record
    # would cost less than a sent one and flatter the per-record figure.
    logger = PredictionLogger(transport=Discard(), queue_size=n + 1, batch_size=500, flush_interval=0.05)
    log = logger.log
    clock = time.perf_counter_ns
    calls = []
    t0 = clock()
    for r in records:
        a = clock()
        log(**r)
        calls.append(clock() - a)
    assert logger.flush(120)
    total = (clock() - t0) / n
    stats = logger.stats()
    logger.close()
    calls.sort()
    pct = lambda q: calls[min(n - 1, int(q * n))]  # noqa: E731
    return statistics.fmean(calls), pct(0.5), pct(0.99), calls[-1], total, stats


def end_to_end(records, **kwargs):
    n = len(records)
    logger = PredictionLogger(queue_size=n + 1, batch_size=500, **kwargs)
    log = logger.log
    t0 = time.perf_counter()
    for r in records:
        log(**r)
    assert logger.flush(600)
    elapsed = time.perf_counter() - t0
    stats = logger.stats()
    logger.close()
    return n / elapsed, elapsed / n * 1e9, stats


CONFIG = """
models:
  - name: bench
    task: binary
    features: {{numeric: [{numeric}], categorical: [{categorical}]}}
    reference: {{first: 1000}}
exporter:
  multivariate: {{enabled: false}}
"""


def start_exporter(tmp: Path, record: dict) -> tuple[subprocess.Popen, int]:
    numeric = [k for k, v in record["features"].items() if isinstance(v, float)]
    categorical = [k for k in record["features"] if k not in numeric]
    (tmp / "modelmon.yaml").write_text(CONFIG.format(numeric=", ".join(numeric), categorical=", ".join(categorical)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "modelmon", "serve", "--config", str(tmp / "modelmon.yaml"),
                             "--port", str(port), "--log-level", "WARNING"],
                            cwd=Path(__file__).resolve().parent.parent, stderr=open(tmp / "serve.log", "wb"))
    deadline = time.time() + 60
    import urllib.request
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("exporter did not start: " + (tmp / "serve.log").read_text()[-2000:])


def ingested(port: int) -> float:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('modelmon_records_ingested_total{source="http"}'))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--features", type=int, default=10)
    args = p.parse_args()
    n = args.records
    records = [make_record(args.features, i) for i in range(n)]  # one shape, values and ids differ
    base = records[0]
    # The harness's own records out of the cyclic GC's sight: otherwise every full collection
    # walks them, and the slowest log() call measures the benchmark's heap, not the client.
    gc.collect()
    gc.freeze()
    size = statistics.fmean(len(orjson.dumps(r)) for r in records[:1000])
    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; {n} records of {args.features} features, ~{size:.0f} bytes each as JSON\n")

    o, j = bench_peers(records)
    q = bench_enqueue(records)
    mean, p50, p99, worst, total, stats = bench_with_worker(records)
    rows = [("orjson.dumps(record)  [peer]", o), ("json.dumps(record)  [peer]", j),
            ("log(), enqueue path (worker idle)", q),
            ("log(), worker draining: mean of single calls", mean),
            ("log(), worker draining: p50 single call", p50),
            ("log(), worker draining: p99 single call", p99),
            ("log() + background serialisation, per record", total)]
    for name, ns in rows:
        print(f"  {name:<48} {ns:>10,.0f} ns")
    print(f"  {'log(), worker draining: slowest single call':<48} {worst / 1e6:>10,.2f} ms   (dropped {stats['dropped']})")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc, port = start_exporter(tmp, base)
        try:
            rate, ns, stats = end_to_end(records, url=f"http://127.0.0.1:{port}/ingest")
            deadline = time.time() + 60
            while ingested(port) < stats["sent"] and time.time() < deadline:
                time.sleep(0.1)
            seen = ingested(port)
        finally:
            proc.terminate()
            proc.wait(30)
        print(f"\n  {'HTTP to a live exporter (gzip, 500/batch)':<48} {rate:>10,.0f} records/s  ({ns:,.0f} ns/record; "
              f"sent {stats['sent']}, failed {stats['failed']}, dropped {stats['dropped']}, exporter ingested "
              f"{seen:.0f}, {stats['bytes'] / max(1, stats['sent']):.0f} bytes/record on the wire)")
        rate, ns, stats = end_to_end(records, path=tmp / "preds.jsonl")
        print(f"  {'file (append, 500/batch)':<48} {rate:>10,.0f} records/s  ({ns:,.0f} ns/record; "
              f"sent {stats['sent']}, dropped {stats['dropped']}, {stats['bytes'] / max(1, stats['sent']):.0f} "
              "bytes/record)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
