"""The HNSW parameter sweep at a small size: one row per graph and efSearch under ``sweep`` in
the report, the rows of another run kept, and recall against exact search as high as the
stored vectors allow."""

from __future__ import annotations

import json
from pathlib import Path

from sale.scripts.bench import hnsw_sweep
from sale.workers.memory import index as memory


def test_the_sweep_writes_one_row_per_setting(tmp_path: Path) -> None:
    (tmp_path / "retrieval.json").write_text(json.dumps({"notes": ["kept"]}))
    argv = ["--records", "5000", "--queries", "10", "--storage", "float16,int8"]
    argv += ["--graphs", "16:32", "--ef", "16,128", "--out", str(tmp_path)]
    defaults = (memory.HNSW_M, memory.EF_CONSTRUCTION, memory.EF_SEARCH)
    assert hnsw_sweep.main(argv) == 0
    assert defaults == (memory.HNSW_M, memory.EF_CONSTRUCTION, memory.EF_SEARCH)
    report = json.loads((tmp_path / "retrieval.json").read_text())
    assert report["notes"] == ["kept"]
    rows = report["sweep"]
    assert [(r["storage"], r["ef_search"]) for r in rows] == [
        ("float16", 16), ("float16", 128), ("int8", 16), ("int8", 128)
    ]  # fmt: skip
    for r in rows:
        assert r["records"] == 5000 and (r["hnsw_m"], r["ef_construction"]) == (16, 32)
        assert r["recall_at_8"] <= r["recall_at_8_exact_stored"] + 1e-9
        assert "hnsw_sweep --records 5000" in r["command"]
    wide = {r["storage"]: r for r in rows if r["ef_search"] == 128}
    assert wide["float16"]["recall_at_8_vs_stored"] >= 0.95
    assert wide["float16"]["recall_at_8_exact_stored"] >= 0.99
    assert wide["int8"]["recall_at_8_exact_stored"] >= 0.9
    assert hnsw_sweep.main(["--graphs", "32"]) == 2
