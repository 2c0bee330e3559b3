"""The README's configuration table is the one generated from ``Settings`` (sale.scripts.docs),
and the generator's ``--check`` tells a stale README from a current one."""

from __future__ import annotations

from pathlib import Path

import pytest
from sale.broker.settings import Settings
from sale.scripts import docs


def test_the_readme_table_is_the_generated_one() -> None:
    text = docs.README.read_text()
    assert docs.BEGIN in text and docs.END in text
    assert docs.with_table(text, docs.settings_table()) == text, (
        "README.md's settings table is stale: run `python -m sale.scripts.docs`"
    )


def test_every_setting_has_one_meaning_and_no_fallback_is_stale() -> None:
    fields = Settings.model_fields
    assert set(docs.MEANINGS) <= set(fields), "MEANINGS names a setting that no longer exists"
    described_twice = [n for n in docs.MEANINGS if fields[n].description]
    assert described_twice == [], "these settings have a description now: drop them from MEANINGS"
    assert [n for n, f in fields.items() if not docs.meaning(n, f)] == []


def test_a_row_names_the_variable_its_default_and_its_choices() -> None:
    table = docs.settings_table()
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    assert len(rows) == len(Settings.model_fields)
    assert rows["SALE_BID_MAX_TOKENS"].split(" | ")[1] == "`128`"
    assert rows["SALE_REFINE"].split(" | ")[1] == "`false`"
    assert rows["SALE_BROKER_URL"].split(" | ")[1] == "unset"
    assert rows["SALE_STATE_DIR"].split(" | ")[1] == "`~/.local/state/sale`"
    assert "Values: `batched`, `per_bid`." in rows["SALE_JURY_MODE"]


def test_check_exits_1_on_a_stale_readme_and_0_once_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{docs.BEGIN}\n| old | table |\n{docs.END}\n\nafter\n")
    assert docs.main(["--check", "--readme", str(readme)]) == 1
    assert "stale" in capsys.readouterr().out
    assert docs.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| old | table |" not in text and text.endswith(f"{docs.END}\n\nafter\n")
    assert docs.main(["--check", "--readme", str(readme)]) == 0


def test_a_readme_without_markers_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    assert docs.main(["--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the README lacks the markers") and err.count("\n") == 1
    assert readme.read_text() == "# no table here\n"
