"""The scale-out benchmark, run for real on its smallest shape: a fresh cluster (redis-server,
`sale worker` processes, SQLite), the HTTP stub provider, jobs submitted at once, each one done."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sale.models.db import session_scope
from sale.models.tables import Job
from sale.scripts.bench.cluster import Hosts
from sale.scripts.bench.scaleout import run_shape, workers_of
from sqlmodel import select


def test_workers_are_one_control_and_replicas_per_agent_placed_round_robin() -> None:
    assert workers_of(1) == ["control", "small", "medium", "large"]
    names = workers_of(2)
    assert names == ["control", "small#1", "small#2", "medium#1", "medium#2", "large#1", "large#2"]
    hosts = Hosts(2)
    hosts.names = ["h-1", "h-2"]
    placed = hosts.place(names)
    assert placed["control"] == "h-1"
    assert [placed[n] for n in names[1:]] == ["h-1", "h-2"] * 3


def test_the_smallest_shape_runs_its_jobs_to_done_and_reports_them(tmp_path: Path) -> None:
    before = dict(os.environ)
    row = run_shape(1, 0, 0, 3, False, tmp_path / "shape", warm_up=1)
    assert (row["jobs"], row["worker_processes"], row["agent_processes"]) == (3, 4, 6)
    assert row["wall_s"] > 0
    assert row["throughput_jobs_per_s"] == pytest.approx(3 / row["wall_s"], rel=0.01)
    with session_scope(f"sqlite:///{tmp_path / 'shape' / 'sale.db'}") as s:
        statuses = [j.status for j in s.exec(select(Job))]
    assert statuses == ["done"] * 4  # the warm-up job and the three measured
    assert dict(os.environ) == before  # the cluster's settings do not outlive the shape
