"""The minimal inventory in docs/inventory.md plans exactly as the page shows."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ipsec_deploy.cli import app

DOC = Path(__file__).resolve().parent.parent / "docs" / "inventory.md"


def fenced_block(text: str, opening: str, after: str) -> str:
    """Return the body of the first fenced block that opens with ``opening`` after the text ``after``."""
    start = text.index(opening, text.index(after)) + len(opening)
    return text[start:text.index("```\n", start)]


def test_minimal_inventory_output_matches_doc(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    inventory = tmp_path / "minimal.yaml"
    inventory.write_text(fenced_block(text, "```yaml\n", "## A minimal inventory"), encoding="utf-8")
    shown = fenced_block(text, "```\n", "`ipsec-deploy plan` on this file prints")

    result = CliRunner().invoke(app, ["plan", str(inventory)], env={"COLUMNS": "110", "NO_COLOR": "1"})

    assert result.exit_code == 0, result.output
    printed = "\n".join(line.rstrip() for line in result.stdout.splitlines()).strip()
    assert printed == shown.strip()
