"""`sale submit` with the broker unreachable: it fails within seconds with one line and exit
code 2, and leaves no job behind that nothing would ever send (SALE_BROKER_URL points at a
closed loopback port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sale.models.db import init_db, session_scope
from sale.models.tables import Job
from sqlmodel import select

from tests.conftest import SCRIPTED_POOL, free_port

SPEC = {"kind": "search", "prompt": "Who wrote Hamlet?", "answer": "Shakespeare"}


def test_submit_with_the_broker_down_exits_2_with_one_line_and_stores_nothing(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'sale.db'}"
    init_db(db)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    # A wide terminal, so the one message is one line (rich wraps at the terminal's width).
    env = dict(os.environ, COLUMNS="400", SALE_BROKER_URL=url, SALE_DATABASE_URL=db,
               SALE_POOL_FILE=str(SCRIPTED_POOL), SALE_STATE_DIR=str(tmp_path))  # fmt: skip
    sale = str(Path(sys.executable).parent / "sale")

    done = subprocess.run(
        [sale, "submit", str(spec)], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"the broker at {url} is unreachable" in lines[0]
    assert "nothing was submitted" in lines[0]
    with session_scope(db) as s:
        assert s.exec(select(Job)).all() == []
