"""The retrieval benchmark at a tiny size: it writes both reports, with the old path's figures,
and below the exact-search threshold the index finds exactly the exact search's records."""

from __future__ import annotations

import json
from pathlib import Path

from sale.scripts.bench import retrieval


def test_the_benchmark_writes_its_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--sizes", "300", "--before", "100", "--queries", "10", "--before-queries", "2"]
    argv += ["--inserts", "3", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    assert retrieval.main(argv) == 0
    report = json.loads((out / "retrieval.json").read_text())
    run = report["databases"]["SQLite"]
    (row,) = run["after"]
    # Exact search: the stored vectors' neighbours exactly; int8 rounding exchanges a few of the
    # float32 ones for their next ones.
    assert row["records"] == 300 and row["search"] == "exact" and row["recall_at_8"] >= 0.9
    assert row["embedding_bytes_per_record"] == 388 and row["disk_bytes_per_record"] > 388
    assert row["recall_at_8_vs_stored"] == 1.0 and row["bytes_per_record"]["column bids"] > 0
    assert [b["records"] for b in run["before"]] == [100]
    text = (out / "retrieval.md").read_text()
    assert row["date"] in text and "sale.scripts.bench.retrieval --sizes 300" in text
    assert retrieval.main(["--sizes", "ten"]) == 2


def test_a_kept_memory_is_measured_again_without_writing_it(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--sizes", "300", "--queries", "5", "--inserts", "2", "--keep"]
    argv += ["--workdir", str(work), "--out", str(out)]
    assert retrieval.main([*argv, "--generate-only"]) == 0
    assert (work / "after-300.db").exists() and not (out / "retrieval.json").exists()
    assert retrieval.main(argv) == 0
    assert retrieval.main(argv) == 0  # the records written through the ORM were removed
    (row,) = json.loads((out / "retrieval.json").read_text())["databases"]["SQLite"]["after"]
    assert row["records"] == 300 and row["generate_s"] is None
    assert row["recall_at_8_vs_stored"] == 1.0 and (work / "after-300.db").exists()
