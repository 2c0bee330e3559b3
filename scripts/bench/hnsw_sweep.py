"""The memory index's HNSW parameters against recall@8 and latency, on vectors alone.

Draws the float32 embeddings the retrieval benchmark's records are drawn with
(:func:`sale.scripts.bench.memory_data.float32_vectors`), stores each as a memory record would
(float16 bytes, or a float32 scale and int8 components: :mod:`sale.models.types`), reads them
back as the index does (unit float32) and adds them to one index space
(:class:`sale.workers.memory.index._Space`) in batches of the index's sync, for each graph
shape (M, efConstruction); then, for each efSearch, times top-8 over fresh queries with award
rounds left out as refinement asks (each record's round drawn as the synthetic records draw
them; no database) and counts recall@8 against exact search over the float32 vectors, and over
the stored ones (what a perfect graph would give). Writes the rows under ``sweep`` in
docs/benchmarks/retrieval.json, with the date and the command; the retrieval benchmark's
report shows them.

    nice -n 19 .venv/bin/python -m sale.scripts.bench.hnsw_sweep --records 1000000 \\
        --storage float16,int8 --graphs 32:64 --ef 256,384,512,768
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sale.models import types
from sale.scripts.bench.memory_data import ROUNDS, Shape, float32_vectors, vectors
from sale.workers.memory import index as memory
from sale.workers.stages.awarding import NO_AUCTION

ROOT = Path(__file__).resolve().parents[2]
K = 8
F32 = npt.NDArray[np.float32]


def stored(block: F32, storage: str) -> F32:
    """``block`` as the index reads it back from the database: stored, then unit float32."""
    if storage == "float16":
        back = types.unpack(b"".join(types.pack(v) for v in block)).reshape(block.shape)
    elif storage == "int8":
        back = types.unpack_int8_rows(b"".join(types.pack_int8(v) for v in block), block.shape[1])
    else:
        raise ValueError(f"unknown storage {storage!r}")
    norms = np.linalg.norm(back, axis=1, keepdims=True)
    return (back / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def _top(qs: F32, matrix: F32, allowed: npt.NDArray[np.bool_]) -> list[set[int]]:
    """Each query's K nearest allowed rows (positions) by exact search, in blocks."""
    out = []
    positions = np.flatnonzero(allowed)
    for first in range(0, len(qs), 50):
        sims = qs[first : first + 50] @ matrix[positions].T
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        out += [set(positions[row].tolist()) for row in top]
    return out


def sweep(
    n: int,
    queries: int,
    storage: str,
    graphs: list[tuple[int, int]],
    efs: list[int],
    shape: Shape,
) -> list[dict[str, Any]]:
    """One row per (graph shape, efSearch) for ``n`` vectors stored as ``storage``."""
    original = np.concatenate(list(float32_vectors(n, shape)))
    rng = np.random.default_rng(shape.seed)
    rounds = rng.integers(0, len(ROUNDS), n).astype(np.int16)
    allowed = ~np.isin(rounds, [i for i, r in enumerate(ROUNDS) if r in NO_AUCTION])
    qs = vectors(queries, shape, n, seed=77)
    truth32 = _top(qs, original, allowed)
    unit = np.concatenate([stored(original[i : i + 20_000], storage) for i in range(0, n, 20_000)])
    del original
    truth_stored = _top(qs, unit, allowed)
    ceiling = sum(len(a & b) for a, b in zip(truth32, truth_stored, strict=True)) / (K * queries)
    rows = []
    for m, ef_construction in graphs:
        memory.HNSW_M, memory.EF_CONSTRUCTION = m, ef_construction
        space = memory._Space(shape.dim)
        began = time.perf_counter()
        for i in range(0, n, memory.SYNC_BATCH):
            j = min(n, i + memory.SYNC_BATCH)
            space.add(range(i, j), unit[i:j], rounds[i:j].tolist(), [set() for _ in range(i, j)])
        build_s = time.perf_counter() - began
        for ef in efs:
            memory.EF_SEARCH = ef
            times, found, found_stored, lost = [], 0, 0, 0
            for q, want32, want_stored in zip(qs, truth32, truth_stored, strict=True):
                t0 = time.perf_counter()
                hits = {rid for rid, _ in space.search(q, K, allowed)}
                times.append(time.perf_counter() - t0)
                found += len(hits & want32)
                lost += len(hits & want_stored) < K // 2  # the graph missed the neighbourhood
                found_stored += len(hits & want_stored)
            ms = np.asarray(times) * 1000.0
            rows.append(
                {
                    "records": n,
                    "queries": queries,
                    "storage": storage,
                    "hnsw_m": m,
                    "ef_construction": ef_construction,
                    "ef_search": ef,
                    "build_s": build_s,
                    "index_search_p50_ms": float(np.percentile(ms, 50)),
                    "index_search_p99_ms": float(np.percentile(ms, 99)),
                    "recall_at_8": found / (K * queries),
                    "recall_at_8_vs_stored": found_stored / (K * queries),
                    "recall_at_8_exact_stored": ceiling,
                    "queries_under_half_found": lost,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        del space
        gc.collect()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--storage", default="float16,int8")
    parser.add_argument("--graphs", default="32:64", help="M:efConstruction,...")
    parser.add_argument("--ef", default="256,384,512,768")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    try:
        graphs = [(int(g.split(":")[0]), int(g.split(":")[1])) for g in args.graphs.split(",")]
        efs = [int(e) for e in args.ef.split(",")]
    except (ValueError, IndexError):
        print("error: --graphs takes M:efConstruction pairs, --ef integers", file=sys.stderr)
        return 2
    when = {
        "date": datetime.now(UTC).date().isoformat(),
        "command": "nice -n 19 .venv/bin/python -m sale.scripts.bench.hnsw_sweep "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    defaults = (memory.HNSW_M, memory.EF_CONSTRUCTION, memory.EF_SEARCH)
    path = args.out / "retrieval.json"
    try:
        for storage in args.storage.split(","):
            rows = sweep(args.records, args.queries, storage, graphs, efs, Shape())
            report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            # A row measured again (same size, storage, graph and efSearch) replaces the old one.
            keys = ("records", "storage", "hnsw_m", "ef_construction", "ef_search")
            new = {tuple(r[k] for k in keys) for r in rows}
            kept = [r for r in report.get("sweep", []) if tuple(r[k] for k in keys) not in new]
            report["sweep"] = sorted(
                kept + [when | r for r in rows], key=lambda r: tuple(r[k] for k in keys)
            )
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        memory.HNSW_M, memory.EF_CONSTRUCTION, memory.EF_SEARCH = defaults
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
