"""Memory retrieval benchmark: top-8 through the memory index at 10 k, 100 k and 1 M records.

For each size a fresh memory of synthetic records (:mod:`sale.scripts.bench.memory_data`,
shaped like real ones) is written in bulk, to a SQLite file or, with ``--postgres``, to a
durable throwaway PostgreSQL server (:mod:`sale.scripts.bench.postgres`; ``--database-url`` for
one of your own, emptied first); then, in this process: the index build (the first query's
sync: reading every record's id, embedding and labels, and the HNSW graph), its RSS, the top-8
latency of refinement's retrieval (award rounds ``direct``/``verified`` left out, the 8 records
read in full) and of the index search alone over fresh queries, recall@8 against exact search
over the float32 embeddings the records were drawn with (and over the stored int8 ones),
the time to write one record through the ORM and to have the index pick it up, and the disk
per record, by column and by relation (SQLite dbstat; PostgreSQL pg_total_relation_size, TOAST
and indexes included). ``--before`` times the old path (every record of the kind through the
ORM, embeddings parsed, numpy cosine) at small sizes on SQLite. Writes
docs/benchmarks/retrieval.json and retrieval.md with the date and the command, keeping the
other database's rows.

    nice -n 19 .venv/bin/python -m sale.scripts.bench.retrieval --sizes 10000,100000,1000000
    nice -n 19 .venv/bin/python -m sale.scripts.bench.retrieval --sizes 10000,100000 --postgres

``--keep`` leaves each SQLite memory in the work directory and measures a kept one again
without writing it (generating a million records takes ~11 minutes); ``--generate-only`` with
it only writes them.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil
import sqlalchemy as sa
from sale.models.db import get_engine, init_db, session_scope
from sale.models.tables import Job, MemoryRecord
from sale.models.types import INT8, SCALE
from sale.scripts.bench.memory_data import Shape, bulk_insert, float32_vectors, rows, vectors
from sale.scripts.bench.postgres import throwaway_server
from sale.workers.memory import index as memory
from sale.workers.memory.index import forget_indexes, memory_index, nearest_records
from sale.workers.memory.retrieval import nearest
from sale.workers.stages.awarding import NO_AUCTION

ROOT = Path(__file__).resolve().parents[2]
K = 8


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def _fresh(workdir: Path, name: str, server: str | None) -> str:
    """An empty memory at the head schema: a new SQLite file, or the server's schema emptied."""
    if server is not None:
        with get_engine(server).begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        init_db(server)
        return server
    path = workdir / f"{name}.db"
    url = f"sqlite:///{path}"
    get_engine(url).dispose()  # no pooled connection to a file about to be replaced
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    init_db(url)
    return url


def _drop(url: str) -> None:
    get_engine(url).dispose()
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).unlink(missing_ok=True)


def _disk(url: str) -> tuple[int, int]:
    """(bytes of the memoryrecord table with its indexes (and TOAST on PostgreSQL), bytes of
    the whole database)."""
    engine = get_engine(url)
    with engine.connect() as conn:
        if not url.startswith("sqlite"):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
                auto.exec_driver_sql("VACUUM ANALYZE memoryrecord")  # the visibility map too
            table = conn.exec_driver_sql("SELECT pg_total_relation_size('memoryrecord')").scalar()
            whole = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
            return int(table or 0), int(whole or 0)
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        table = conn.exec_driver_sql(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = 'memoryrecord' "
            "OR name LIKE 'ix_memoryrecord%' OR name LIKE 'sqlite_autoindex_memoryrecord%'"
        ).scalar()
    return int(table or 0), Path(url.split("///", 1)[1]).stat().st_size


def _columns(url: str, n: int) -> dict[str, float]:
    """Stored bytes per record of each column (SQLite: the value's length; PostgreSQL:
    pg_column_size, after TOAST compression), and of each index."""
    table = MemoryRecord.__table__  # type: ignore[attr-defined]
    names = [c.name for c in table.columns]
    sqlite = url.startswith("sqlite")
    size = "length(CAST({0} AS BLOB))" if sqlite else "pg_column_size({0})"
    with get_engine(url).connect() as conn:
        sums = conn.exec_driver_sql(
            "SELECT " + ", ".join(f"SUM({size.format(c)})" for c in names) + " FROM memoryrecord"
        ).one()
        if sqlite:
            parts = conn.exec_driver_sql(
                "SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE '%memoryrecord%' "
                "GROUP BY name"
            ).all()
        else:
            parts = conn.execute(
                sa.text(
                    "SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relname LIKE "
                    "'%memoryrecord%' AND relkind = 'i' UNION ALL SELECT 'toast', "
                    "pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'memoryrecord' "
                    "UNION ALL SELECT 'heap', pg_relation_size('memoryrecord')"
                )
            ).all()
    out = {f"column {c}": float(v or 0) / n for c, v in zip(names, sums, strict=True)}
    out |= {f"relation {name}": float(v or 0) / n for name, v in parts}
    return out


def before(workdir: Path, n: int, queries: int, shape: Shape) -> dict[str, Any]:
    """The old retrieval on the old schema: the memory migrated back to JSON embeddings
    (0004), every record of the kind loaded through the ORM, numpy cosine over all."""
    import sqlalchemy as sa
    from alembic import command
    from sale.models.db import alembic_config
    from sale.workers.memory.retrieval import MemoryEntry
    from sqlalchemy.orm import DeclarativeBase, Session

    url = _fresh(workdir, f"before-{n}", None)
    bulk_insert(url, n, shape)
    command.downgrade(alembic_config(url), "0004")
    engine = get_engine(url)

    class Base(DeclarativeBase):
        pass

    class OldRecord(Base):  # the 0004 table as the ORM loaded it
        __table__ = sa.Table("memoryrecord", sa.MetaData(), autoload_with=engine)

    c = OldRecord.__table__.c
    qs = vectors(queries, shape, n, seed=77)
    times = []
    for q in qs:
        began = time.perf_counter()
        with Session(engine) as s:
            found: list[Any] = list(
                s.scalars(
                    sa.select(OldRecord).where(c.kind == "coding", c.award_round.not_in(NO_AUCTION))
                )
            )
        entries = [MemoryEntry(r.id, r.embedding, r.bids, r.verdict) for r in found]
        nearest(q.tolist(), entries, K)
        times.append(time.perf_counter() - began)
    disk, _ = _disk(url)
    _drop(url)
    return {
        "records": n,
        "queries": queries,
        "p50_ms": _pct(times, 50),
        "p99_ms": _pct(times, 99),
        "disk_bytes_per_record": disk / n,
    }


def _kept(workdir: Path, n: int) -> str | None:
    """The SQLite memory of ``n`` records a run with ``--keep`` left in ``workdir`` (the
    records a run writes through the ORM removed), upgraded to the head schema; or None."""
    path = workdir / f"after-{n}.db"
    url = f"sqlite:///{path}"
    if not path.exists():
        return None
    init_db(url)
    with get_engine(url).begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM memoryrecord WHERE id > {n}")
        conn.exec_driver_sql(f"DELETE FROM job WHERE id > 'synthetic-{n:022d}'")
        count = conn.exec_driver_sql("SELECT COUNT(*), MAX(id) FROM memoryrecord").one()
    return url if tuple(count) == (n, n) else None


def generate(
    workdir: Path, n: int, shape: Shape, server: str | None, keep: bool
) -> tuple[str, float | None]:
    """(the url of a memory of ``n`` records, the seconds it took to write: None for one kept
    by an earlier run)."""
    url = _kept(workdir, n) if keep and server is None else None
    if url is not None:
        return url, None
    url = _fresh(workdir, f"after-{n}", server)
    began = time.perf_counter()
    bulk_insert(url, n, shape)
    return url, time.perf_counter() - began


def after(
    workdir: Path,
    n: int,
    queries: int,
    shape: Shape,
    inserts: int,
    server: str | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """The memory index at ``n`` records (module docstring); with ``keep`` (SQLite), the memory
    stays in ``workdir`` and a later run with ``keep`` measures it again without writing it."""
    url, generate_s = generate(workdir, n, shape, server, keep)
    disk = _disk(url)
    columns = _columns(url, n)
    forget_indexes()
    gc.collect()
    rss0 = _rss()
    began = time.perf_counter()
    index = memory_index(url)
    index.sync()
    build_s = time.perf_counter() - began
    gc.collect()
    index_rss = _rss() - rss0
    qs = vectors(queries, shape, n, seed=77)
    full, search = [], []
    space = index._spaces[("coding", shape.dim)]
    allowed = ~np.isin(space.rounds[: space.n], [index._rounds[r] for r in NO_AUCTION])
    ids_of_allowed = set(space.ids[: space.n][allowed].tolist())
    truth32 = _exact_float32(qs, n, shape, ids_of_allowed)
    found = found16 = 0
    for q, want32 in zip(qs, truth32, strict=True):
        query = q.tolist()
        t0 = time.perf_counter()
        got = nearest_records(url, "coding", query, K, NO_AUCTION)
        t1 = time.perf_counter()
        hits = index.search("coding", query, K, NO_AUCTION)
        t2 = time.perf_counter()
        full.append(t1 - t0)
        search.append(t2 - t1)
        sims = space.vectors() @ q
        sims[~allowed] = -np.inf
        truth16 = set(space.ids[np.argpartition(-sims, K)[:K]].tolist())
        hit_ids = {h.record_id for h in hits}
        found += len(want32 & hit_ids)
        found16 += len(truth16 & hit_ids)
        assert [r.id for r, _ in got] == [h.record_id for h in hits]
    # One record at a time through the ORM (as the memory update writes it), then the index
    # picks it up at the next query's sync.
    write, pick = [], []
    for item in rows(n + 1, inserts, shape, total=n + inserts):
        values = {k: v for k, v in item.items() if k not in ("id", "created_at")}
        values["embedding"] = values["embedding"].tolist()
        t0 = time.perf_counter()
        with session_scope(url) as s:
            s.add(Job(id=values["job_id"], kind="coding", prompt="p", spec={}, pool_path=""))
            s.flush()
            s.add(MemoryRecord(**values))
        t1 = time.perf_counter()
        assert index.sync() == 1
        t2 = time.perf_counter()
        write.append(t1 - t0)
        pick.append(t2 - t1)
    graph = space._graph is not None
    result = {
        "records": n,
        "queries": queries,
        "search": "hnsw" if graph else "exact",
        "top8_p50_ms": _pct(full, 50),
        "top8_p99_ms": _pct(full, 99),
        "index_search_p50_ms": _pct(search, 50),
        "index_search_p99_ms": _pct(search, 99),
        "recall_at_8": found / (K * queries),  # against exact float32 search
        "recall_at_8_vs_stored": found16 / (K * queries),  # against exact search of the stored
        "generate_s": generate_s,
        "index_build_s": build_s,
        "index_rss_bytes": index_rss,
        "index_rss_bytes_per_record": index_rss / n,
        "insert_orm_ms_per_record": _pct(write, 50),
        "insert_index_sync_ms_per_record": _pct(pick, 50),
        "disk_bytes_per_record": disk[0] / n,  # the memoryrecord table and its indexes
        "file_bytes_per_record": disk[1] / n,  # with the jobs' rows
        "embedding_bytes_per_record": SCALE.itemsize + shape.dim * INT8.itemsize,
        "embedding_storage": "int8",
        "hnsw": [memory.HNSW_M, memory.EF_CONSTRUCTION, memory.EF_SEARCH],
        "bytes_per_record": columns,
    }
    forget_indexes()
    del index, space
    gc.collect()
    if not keep or server is not None:
        _drop(url)
    return result


def _exact_float32(
    qs: npt.NDArray[np.float32], n: int, shape: Shape, allowed: set[int]
) -> list[set[int]]:
    """The ids of each query's K nearest allowed records by exact search over the float32
    embeddings the records were drawn with (before int8 storage), batch by batch."""
    best = np.full((len(qs), K), -np.inf)
    best_ids = np.zeros((len(qs), K), dtype=np.int64)
    first = 1
    for block in float32_vectors(n, shape):
        ids = np.arange(first, first + len(block))
        keep = np.fromiter((i in allowed for i in ids.tolist()), dtype=np.bool_, count=len(ids))
        sims = np.concatenate([best, qs @ block[keep].T], axis=1)
        both = np.concatenate([best_ids, np.broadcast_to(ids[keep], (len(qs), keep.sum()))], 1)
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        best = np.take_along_axis(sims, top, 1)
        best_ids = np.take_along_axis(both, top, 1)
        first += len(block)
    return [set(row.tolist()) for row in best_ids]


def _row(r: dict[str, Any]) -> str:
    graph = "/".join(str(x) for x in r["hnsw"]) if r["search"] == "hnsw" else "-"
    return (
        f"| {r['records']:,} | {r['embedding_storage']} | {r['search']} | {graph} "
        f"| {r['top8_p50_ms']:.2f} / {r['top8_p99_ms']:.2f} "
        f"| {r['index_search_p50_ms']:.2f} / {r['index_search_p99_ms']:.2f} "
        f"| {r['recall_at_8']:.3f} | {r['index_build_s']:.1f} "
        f"| {r['index_rss_bytes_per_record']:.0f} "
        f"| {r['insert_orm_ms_per_record']:.2f} + {r['insert_index_sync_ms_per_record']:.2f} "
        f"| {r['disk_bytes_per_record']:.0f} |"
    )


HEADER = [
    "| records | embedding | search | M / efConstruction / efSearch "
    "| top-8 p50 / p99 ms (with the 8 rows) | index only p50 / p99 ms "
    "| recall@8 | build s | index RSS B/record | write + sync ms/record | disk B/record |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def _sweep(rows: list[dict[str, Any]]) -> list[str]:
    """The HNSW parameter sweep (:mod:`sale.scripts.bench.hnsw_sweep`), one table per size."""
    lines: list[str] = []
    for n in sorted({r["records"] for r in rows}):
        at = [r for r in rows if r["records"] == n]
        lines += ["", f"## HNSW parameters at {n:,} vectors (index only, no database)", ""]
        for when in dict.fromkeys((r["date"], r["command"]) for r in at):
            lines.append(f"- {when[0]}, `{when[1]}`")
        lines += [
            "",
            "| stored as | M | efConstruction | efSearch | index only p50 / p99 ms | recall@8 "
            "| recall@8 vs exact over the stored | exact over the stored | queries under 4 of 8 "
            "| build s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['storage']} | {r['hnsw_m']} | {r['ef_construction']} | {r['ef_search']} "
            f"| {r['index_search_p50_ms']:.2f} / {r['index_search_p99_ms']:.2f} "
            f"| {r['recall_at_8']:.3f} | {r['recall_at_8_vs_stored']:.3f} "
            f"| {r['recall_at_8_exact_stored']:.3f} | {r.get('queries_under_half_found', '')} "
            f"| {r['build_s']:.0f} |"
            for r in at
        ]
    return lines


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Memory retrieval",
        "",
        "Synthetic memories shaped like the recorded ones (384-dim unit vectors in clusters; "
        "auctioned records with four bids of ~1,000-character plans, verified and direct ones "
        "as written); top-8 as refinement asks for it (direct and verified rounds left out), "
        f"over {report['queries']} fresh queries; exact search up to "
        f"{report['exact_max']} vectors, a faiss HNSW graph above (the index's parameters now: "
        f"M={report['hnsw_m']}, efConstruction={report['ef_construction']}, efSearch="
        f"{report['ef_search']}; each row says those it ran with), in process on both "
        "databases. Recall@8 is against exact search over the float32 embeddings the records "
        "were drawn with; each row says how they were stored (int8: a float32 scale and one "
        "byte per component, 388 B; float16: 768 B; float32: 1,536 B). Machine: "
        f"{report['machine']}.",
    ]
    for database, run in report["databases"].items():
        lines += ["", f"## {database}", ""]
        for when in dict.fromkeys((r["date"], r["command"]) for r in run["after"]):
            sizes = ", ".join(
                f"{r['records']:,}" for r in run["after"] if (r["date"], r["command"]) == when
            )
            lines.append(f"- {sizes} records: {when[0]}, `{when[1]}`")
        lines += ["", *HEADER, *(_row(r) for r in run["after"])]
        parts = run["after"][-1]["bytes_per_record"] if run["after"] else {}
        if parts:
            lines += ["", f"Bytes per record at {run['after'][-1]['records']:,} records:", ""]
            lines += ["| part | B/record |", "|---|---|"]
            lines += [f"| {k} | {v:.0f} |" for k, v in parts.items()]
    lines += _sweep(report.get("sweep", []))
    for earlier in report.get("earlier", []):
        lines += ["", f"## Before: {earlier['title']}", "", earlier["note"]]
        for database, measured in earlier["databases"].items():
            lines += ["", f"{database}:", ""]
            for when in dict.fromkeys((r["date"], r["command"]) for r in measured):
                sizes = ", ".join(
                    f"{r['records']:,}" for r in measured if (r["date"], r["command"]) == when
                )
                lines.append(f"- {sizes} records: {when[0]}, `{when[1]}`")
            lines += ["", *HEADER, *(_row(r) for r in measured)]
    previous = report.get("previous")
    if previous:
        lines += ["", "## Before: schema 0006 (float32 embedding, plain text and JSON)", ""]
        since = f"Date: {previous['date']}. Command: `{previous['command']}`. "
        lines += [since + previous["note"], "", *HEADER, *(_row(r) for r in previous["after"])]
        if previous["before"]:
            lines += [
                "",
                "Older still (the same records migrated back to JSON embeddings, schema 0004; "
                "every record of the kind loaded through the ORM, numpy cosine over all):",
                "",
                "| records | top-8 p50 / p99 ms | disk B/record |",
                "|---|---|---|",
            ]
            lines += [
                f"| {r['records']:,} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} "
                f"| {r['disk_bytes_per_record']:.0f} |"
                for r in previous["before"]
            ]
    lines += ["", *(f"- {note}" for note in report["notes"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--before", default="", help="sizes for the old path (SQLite only)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--before-queries", type=int, default=20)
    parser.add_argument("--inserts", type=int, default=50)
    parser.add_argument("--postgres", action="store_true", help="on a durable throwaway server")
    parser.add_argument("--database-url", help="a PostgreSQL database to empty and use")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sale-bench-retrieval"))
    parser.add_argument(
        "--keep",
        action="store_true",
        help="SQLite: keep each memory in --workdir and measure a kept one again unwritten",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="with --keep: write the memories only"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        small = [int(s) for s in args.before.split(",") if s]
    except ValueError:
        print("error: --sizes and --before take comma-separated integers", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        server = args.database_url
        if args.postgres and server is None:
            server = stack.enter_context(throwaway_server("sale_bench", durable=True))
        return _run(args, sizes, small, server, argv)


def _run(
    args: argparse.Namespace,
    sizes: list[int],
    small: list[int],
    server: str | None,
    argv: list[str] | None,
) -> int:
    shape = Shape()
    path = args.out / "retrieval.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("databases", {})
    report.setdefault("notes", [])
    report |= {
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "queries": args.queries,
        "exact_max": memory.EXACT_MAX,
        "hnsw_m": memory.HNSW_M,
        "ef_construction": memory.EF_CONSTRUCTION,
        "ef_search": memory.EF_SEARCH,
    }
    when = {
        "date": datetime.now(UTC).date().isoformat(),
        "command": "nice -n 19 .venv/bin/python -m sale.scripts.bench.retrieval "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    # A size measured again replaces its row; the other sizes' rows stay, each with its run.
    run = report["databases"].setdefault("PostgreSQL" if server else "SQLite", {})
    run["before"] = [r for r in run.get("before", []) if r["records"] not in small]
    run["after"] = [r for r in run.get("after", []) if r["records"] not in sizes]
    if args.generate_only:
        for n in sizes:
            url, took = generate(args.workdir, n, shape, server, args.keep)
            print(json.dumps({"records": n, "url": url, "generate_s": took}), flush=True)
        return 0
    for n in small:
        run["before"].append(when | before(args.workdir, n, args.before_queries, shape))
        print(json.dumps(run["before"][-1]), flush=True)
    for n in sizes:
        run["after"].append(
            when | after(args.workdir, n, args.queries, shape, args.inserts, server, args.keep)
        )
        run["after"].sort(key=lambda r: r["records"])
        print(json.dumps(run["after"][-1]), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "retrieval.md").write_text(_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
