"""Every fixed script the package ships parses as PowerShell and has a current lab counterpart."""

from __future__ import annotations

from importlib import resources

import pytest
from tree_sitter_language_pack import get_parser

from ipsec_deploy.lab.netsecurity.scripts import ScriptRegistry
from ipsec_deploy.lab.shipped_scripts import SHIPPED_SCRIPTS, register_shipped_scripts

SCRIPT_FILES = sorted(p.name for p in resources.files("ipsec_deploy.scripts").iterdir() if p.name.endswith(".ps1"))


def error_nodes(node) -> list:
    found = [node] if node.type == "ERROR" or node.is_missing else []
    for child in node.children:
        found.extend(error_nodes(child))
    return found


@pytest.mark.parametrize("file_name", SCRIPT_FILES)
def test_script_parses(file_name):
    text = resources.files("ipsec_deploy.scripts").joinpath(file_name).read_bytes()
    tree = get_parser("powershell").parse(text)
    assert [(n.start_point, n.text[:40]) for n in error_nodes(tree.root_node)] == []


def test_every_script_has_current_counterpart():
    registry = ScriptRegistry()
    stale = register_shipped_scripts(registry)
    assert stale == []
    for file_name in SCRIPT_FILES:
        text = resources.files("ipsec_deploy.scripts").joinpath(file_name).read_text(encoding="utf-8")
        assert registry.find(text) is not None, f"{file_name} has no lab counterpart"
    assert {s.file_name for s in SHIPPED_SCRIPTS} <= set(SCRIPT_FILES)
