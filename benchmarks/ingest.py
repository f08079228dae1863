"""Ingest benchmark: prints the exporter's throughput next to the pure JSON-parse rate, memory, render time.

    python benchmarks/ingest.py [--records 5000000] [--quick]

Figures (targets from issue 12):
  * pure parse rate: orjson.loads of every line of the same data, nothing else (and, for context,
    the same with each 5000-line batch of parsed objects kept alive, as any consumer must);
  * file path rate: the exporter's real file path on a log file of `--file-records` lines (FileSource:
    tail 4 MiB reads, parse, validate, counters, histograms, windows, joins, offset commit with fsync),
    2 binary models x 20 features (15 numeric, 5 categorical), 30% late labels;
    target >= 0.5 x the parse rate (stretch 0.8); the lines taken by the columnar fast path are shown;
  * ingest rate in 5000-line calls of Exporter.ingest_lines (the size of a POST /ingest slab), over
    `--records` lines, with the same data;
  * peak RSS after 1M and after N records;  target: RSS(N) within 10% of RSS(1M) (bounded state);
  * /metrics render time for 20 models x 30 features;  target < 50 ms;
  * checkpoint write and restore time and size for the state after the run (no target; the
    exporter holds its lock while it copies the state, so this is the ingest pause per checkpoint).
Windowed gauges are refreshed once per batch-second as in production (throttled refresh); the
multivariate worker is off, as it runs on its own thread and interval in production.
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelmon.config import parse_config  # noqa: E402
from modelmon.exporter import gc_tuning  # noqa: E402
from modelmon.exporter.checkpoint import Checkpointer  # noqa: E402
from modelmon.exporter.collector import ExporterCollector  # noqa: E402
from modelmon.exporter.pipeline import Exporter  # noqa: E402

T0 = 1_790_000_000.0
BATCH = 5000  # lines per ingest call, like one poll of the log follower


def wide_config(n_models: int, n_numeric: int, n_categorical: int, multivariate: bool = False):
    models = [{
        "name": f"m{i}", "task": "binary", "positive_class": 1,
        "features": {"numeric": [f"n{j}" for j in range(n_numeric)],
                     "categorical": [f"c{j}" for j in range(n_categorical)]},
        "reference": {"first": 5000}, "quality_window": 10000, "drift_window": 5000,
    } for i in range(n_models)]
    return parse_config({"models": models, "exporter": {"multivariate": {"enabled": multivariate}}})


class LineFactory:
    """Distinct, realistic lines, generated chunk by chunk (outside the timed sections)."""

    def __init__(self, n_models: int, n_numeric: int, n_categorical: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.n_models, self.n_numeric, self.n_categorical = n_models, n_numeric, n_categorical
        self.next_id = 0
        self.pending_labels: list[bytes] = []

    def chunk(self, n: int) -> list[bytes]:
        rng = self.rng
        num = np.round(rng.normal(0, 1, (n, self.n_numeric)), 4).tolist()
        cats = rng.integers(0, 8, (n, self.n_categorical)).tolist()
        scores = np.round(rng.random(n), 4).tolist()
        lat = np.round(rng.lognormal(3, 0.4, n), 2).tolist()
        late = rng.random(n) < 0.3
        out = []
        for i in range(n):
            rid = self.next_id
            self.next_id += 1
            ts = T0 + rid * 0.001
            model = f"m{rid % self.n_models}"
            feats = {f"n{j}": v for j, v in enumerate(num[i])}
            feats.update({f"c{j}": f"v{v}" for j, v in enumerate(cats[i])})
            label = int(rng.random() < scores[i])
            rec = {"ts": ts, "id": f"r{rid}", "model": model, "version": "v1", "features": feats,
                   "prediction": int(scores[i] >= 0.5), "score": scores[i], "latency_ms": lat[i], "status": "ok"}
            if late[i]:
                self.pending_labels.append(orjson.dumps({"ts": ts + 60, "id": f"r{rid}", "model": model,
                                                         "label": label}))
            else:
                rec["label"] = label
            out.append(orjson.dumps(rec))
        # Late labels arrive a chunk later, interleaved with new predictions.
        k = len(self.pending_labels) // 2
        out.extend(self.pending_labels[:k])
        self.pending_labels = self.pending_labels[k:]
        return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Resident memory now (Linux /proc), so the generator's transient peak does not hide state growth."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def parse_rate(lines: list[bytes]) -> float:
    loads = orjson.loads
    t = time.perf_counter()
    for line in lines:
        loads(line)
    return len(lines) / (time.perf_counter() - t)


def parse_keep_rate(lines: list[bytes]) -> float:
    """Parse rate when each batch of parsed objects stays alive until the batch is done, as it must
    for anything that reads them (allocation instead of reuse of one freed dict)."""
    loads = orjson.loads
    t = time.perf_counter()
    for i in range(0, len(lines), BATCH):
        batch = [loads(line) for line in lines[i:i + BATCH]]
    del batch
    return len(lines) / (time.perf_counter() - t)


def ingest(exporter: Exporter, lines: list[bytes]) -> float:
    """Seconds to ingest `lines` in batches, with the throttled refresh the exporter does."""
    t = time.perf_counter()
    last_refresh = t
    for i in range(0, len(lines), BATCH):
        exporter.ingest_lines(lines[i:i + BATCH], "file")
        now = time.perf_counter()
        if now - last_refresh >= exporter.refresh_interval:
            exporter.refresh()
            last_refresh = now
    return time.perf_counter() - t


def file_path_rate(lines_per_chunk: int, total: int) -> tuple[float, float, dict]:
    """(lines/s through FileSource on a log file of `total` lines, the orjson parse rate of the same
    lines, the exporter's fast/slow line counts), with the throttled refresh of production."""
    from modelmon.exporter.source import FileSource

    factory = LineFactory(2, 15, 5, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "predictions.jsonl"
        written, parse_seconds = 0, 0.0
        with open(log, "wb") as f:
            while written < total:
                chunk = factory.chunk(min(lines_per_chunk, total - written))
                t = time.perf_counter()
                for line in chunk:
                    orjson.loads(line)
                parse_seconds += time.perf_counter() - t
                f.write(b"\n".join(chunk) + b"\n")
                written += len(chunk)
        ex = Exporter(wide_config(2, 15, 5))
        source = FileSource(ex, log, Path(tmp) / "offset.json", from_start=True)
        done = 0
        t = time.perf_counter()
        last_refresh = t
        while done < written:
            n = source.step()
            if n == 0:
                raise SystemExit(f"the file source stopped after {done} of {written} lines")
            done += n
            now = time.perf_counter()
            if now - last_refresh >= ex.refresh_interval:
                ex.refresh()
                last_refresh = now
        seconds = time.perf_counter() - t
        return written / seconds, written / parse_seconds, dict(ex.columnar.stats)


def render_time(n_models: int = 20, n_features: int = 30, repeats: int = 20) -> float:
    from prometheus_client import CollectorRegistry, generate_latest

    ex = Exporter(wide_config(n_models, n_features - 6, 6))
    factory = LineFactory(n_models, n_features - 6, 6, seed=1)
    for _ in range(4):
        ex.ingest_lines(factory.chunk(n_models * 2000 // 4), "file")
    ex.refresh(force=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(ex))
    generate_latest(registry)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - t)
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return float(np.median(times)), series


def checkpoint_figures(ex: Exporter) -> tuple[float, float, float]:
    """(write seconds, restore seconds, MiB) of a checkpoint of `ex`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt"
        t = time.perf_counter()
        if not Checkpointer(ex, path).save():
            raise SystemExit("checkpoint failed")
        write_s = time.perf_counter() - t
        size = path.stat().st_size / 2**20
        fresh = Exporter(ex.config)
        t = time.perf_counter()
        Checkpointer(fresh, path).restore()
        return write_s, time.perf_counter() - t, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--file-records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="300k records (a smoke run; RSS figures not meaningful)")
    args = ap.parse_args()
    total = 300_000 if args.quick else args.records
    file_total = 300_000 if args.quick else args.file_records
    gc_tuning.tune()  # as `modelmon serve` does once its references are loaded
    # First, on a fresh heap: the real file path, and orjson on the very same lines.
    file_rate, file_parse_rate, paths = file_path_rate(20_000, file_total)
    gc.collect()
    first_mark = min(1_000_000, total)

    ex = Exporter(wide_config(2, 15, 5))
    factory = LineFactory(2, 15, 5, seed=2)
    done, seconds, rss_first = 0, 0.0, None
    while done < total:
        lines = factory.chunk(min(20_000, total - done))
        seconds += ingest(ex, lines)
        done += len(lines)
        del lines
        if rss_first is None and done >= first_mark:
            gc.collect()
            rss_first, peak_first = rss_mib(), peak_rss_mib()
    gc.collect()
    rss_last, peak_last = rss_mib(), peak_rss_mib()
    rate_ingest = done / seconds
    # The pure-parse baselines run after the memory readings: a heap that held 100k parsed
    # records stays large (the allocator keeps its arenas), which would hide the state's own growth.
    sample = LineFactory(2, 15, 5).chunk(100_000)
    rate_parse = parse_rate(sample)
    rate_keep = parse_keep_rate(sample)
    del sample
    render_s, series = render_time()
    ckpt_write, ckpt_restore, ckpt_mib = checkpoint_figures(ex)

    print(f"file path: orjson parse rate:    {file_parse_rate:12,.0f} lines/s   (the same {file_total:,} lines)")
    print(f"file path: exporter ingest rate: {file_rate:12,.0f} lines/s   (FileSource: tail, parse, apply, commit)")
    print(f"file path / parse ratio:         {file_rate / file_parse_rate:12.2f}      (target >= 0.50, stretch 0.80)")
    print(f"  lines on the columnar path:    {paths['fast']:12,d}      (per line: {paths['slow']:,d})")
    print(f"pure JSON parse rate (orjson):   {rate_parse:12,.0f} lines/s")
    print(f"  ... keeping each batch alive:  {rate_keep:12,.0f} lines/s   (ingest / this: {done / seconds / rate_keep:.2f})")
    print(f"ingest_lines, 5000-line calls:   {rate_ingest:12,.0f} lines/s   ({done:,} lines, 2 models x 20 features)")
    print(f"  / parse ratio:                 {rate_ingest / rate_parse:12.2f}")
    print(f"RSS after {first_mark / 1e6:.1f}M lines:            {rss_first:12.1f} MiB   (peak so far {peak_first:.1f} MiB)")
    print(f"RSS after {done / 1e6:.1f}M lines:            {rss_last:12.1f} MiB   (peak so far {peak_last:.1f} MiB; "
          f"{100 * (rss_last / rss_first - 1):+.1f}%, target within 10%)")
    print(f"/metrics render, 20 models x 30: {render_s * 1000:12.1f} ms        ({series} series, target < 50 ms)")
    print(f"join buffer waiting:             {len(ex.joiner):12,d} predictions")
    print(f"checkpoint of that state:        {ckpt_write * 1000:12.1f} ms write, {ckpt_restore * 1000:.1f} ms restore, "
          f"{ckpt_mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
