"""The docs show what the tool does: the minimal inventory's plan, and the fields of the JSON outputs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ipsec_deploy.cli import app
from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, run_cli, with_password_env

DOC = Path(__file__).resolve().parent.parent / "docs" / "inventory.md"


def fenced_block(text: str, opening: str, after: str) -> str:
    """Return the body of the first fenced block that opens with ``opening`` after the text ``after``."""
    start = text.index(opening, text.index(after)) + len(opening)
    return text[start:text.index("```\n", start)]


def test_minimal_inventory_output_matches_doc(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    inventory = tmp_path / "minimal.yaml"
    inventory.write_text(fenced_block(text, "```yaml\n", "## A minimal inventory"), encoding="utf-8")
    documented_output = fenced_block(text, "```\n", "`ipsec-deploy plan` on this file prints")

    result = CliRunner().invoke(app, ["plan", str(inventory)], env={"COLUMNS": "110", "NO_COLOR": "1"})

    assert result.exit_code == 0, result.output
    printed = "\n".join(line.rstrip() for line in result.stdout.splitlines()).strip()
    assert printed == documented_output.strip()


JSON_DOC = DOC.parent / "json-output.md"


def documented_fields(section: str, heading_row: str) -> set[str]:
    """Return the backquoted names in the first column of the table that follows ``heading_row`` in a section."""
    text = JSON_DOC.read_text(encoding="utf-8")
    part = text[text.index(section):]
    table = part[part.index(heading_row):].split("\n\n", 1)[0]
    names = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        names.update(name for name in first_cell.split("`")[1::2])
    return names


def test_json_doc_lists_real_fields(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, "Lab-Passw0rd")
    _, inventory = lab_factory(EXAMPLE_LAB)
    inventory = with_password_env(inventory)
    journal = tmp_path / "j"
    assert run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "1").exit_code == 0

    report = json.loads(run_cli("verify", str(inventory), "--format", "json", "--verify-timeout", "1").stdout)
    runs = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)

    # nothing_verified appears only when no pair was checked.
    assert set(report) | {"nothing_verified"} == documented_fields("## verify", "| Field | Type | Meaning |")
    pair_fields = documented_fields("Each entry of `pairs`", "| Field | Type | Meaning |")
    assert set(report["pairs"][0]) == pair_fields
    assert set(runs[0]) == documented_fields("## runs", "| Field | Type | Meaning |")
