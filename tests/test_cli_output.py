"""Command-line output and help: nothing a user copies or searches for is cut or split, and no value looks valid that is not."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipsec_deploy.cli import app
from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.planner import build_plan

EXAMPLE = Path(__file__).resolve().parent.parent / "inventory" / "example.yaml"
APPLY_RUN = "20260301T101500.250Z-a1b2c3"
REVERT_RUN = "20260302T080000.125Z-d4e5f6"
HOSTS = ("APP-SRV01", "DB-SRV01", "PARTNER-APP01", "REPORT-SRV01")


def run_at_width(width: int, *arguments: str):
    return CliRunner().invoke(app, list(arguments), env={"COLUMNS": str(width), "NO_COLOR": "1"})


def write_run(journal: Path, run_id: str, kind: str, started: str, reverts: str | None = None) -> None:
    directory = journal / "runs" / run_id
    directory.mkdir(parents=True)
    metadata = {
        "run_id": run_id,
        "kind": kind,
        "started": started,
        "inventory": "inventory/lab.yaml",
        "reverts": reverts,
        "hosts": {name: {"status": "changed", "detail": "", "changes": 3} for name in HOSTS},
        "result": "changed",
    }
    (directory / "run.json").write_text(json.dumps(metadata), encoding="utf-8")


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    write_run(tmp_path, APPLY_RUN, "apply", "2026-03-01T10:15:00.251+00:00")
    write_run(tmp_path, REVERT_RUN, "revert", "2026-03-02T08:00:00.126+00:00", reverts=APPLY_RUN)
    return tmp_path


@pytest.mark.parametrize("width", [80, 120])
def test_runs_keeps_ids_times_and_hosts_whole(journal, width):
    result = run_at_width(width, "runs", "--journal-dir", str(journal))
    assert result.exit_code == 0, result.output
    words = set(re.split(r"[\s,]+", result.stdout))
    assert APPLY_RUN in words
    assert REVERT_RUN in words
    assert f"reverts run {APPLY_RUN}" in result.stdout
    assert "2026-03-01 10:15:00.251" in result.stdout
    assert "2026-03-02 08:00:00.126" in result.stdout
    for host in HOSTS:
        assert host in words
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= width


@pytest.mark.parametrize("width", [80, 120])
def test_plan_table_keeps_rule_names_whole(width):
    result = run_at_width(width, "plan", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    words = set(result.stdout.split())
    plan = build_plan(load_inventory(EXAMPLE))
    for host_plan in plan.hosts:
        for rule in host_plan.rules:
            assert rule.name.removeprefix("ipsec-deploy-rule-") in words, rule.name
            for address in (*rule.local_address, *rule.remote_address):
                assert address in words, address


LONG_POLICY = """\
forests: {corp.example: {}}
hosts:
  REPORTING-SERVER01: {ip: [10.0.1.30], domain: corp.example}
  DB01: {ip: [10.0.1.20], domain: corp.example}
auth:
  kerberos: {phase1: [kerberos]}
crypto:
  strong:
    main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}]
    quick_mode: [{encryption: AES256, integrity: SHA256}]
policies:
  - name: reporting-servers-to-sql-cluster
    endpoint1: [REPORTING-SERVER01]
    endpoint2: [DB01]
    security: require
    auth: kerberos
    crypto: strong
"""


@pytest.mark.parametrize("width", [70, 80])
def test_plan_table_keeps_security_readable(width, tmp_path):
    # A long rule name must not squeeze the security column into "Req".
    inventory = tmp_path / "long.yaml"
    inventory.write_text(LONG_POLICY, encoding="utf-8")

    result = run_at_width(width, "plan", str(inventory))

    assert result.exit_code == 0, result.output
    words = set(result.stdout.split())
    assert "reporting-servers-to-sql-cluster-endpoint1" in words
    assert "Require" in words


def test_plan_counts_each_kind_of_supporting_object():
    result = run_at_width(200, "plan", str(EXAMPLE), "--limit", "DB-SRV01")
    assert result.exit_code == 0, result.output
    assert "The rules use 2 auth sets, 2 crypto sets and 4 main mode rules." in result.stdout


@pytest.mark.parametrize("command", [["apply"], ["revert"], ["verify"], ["plan"], ["lab", "up"]])
def test_help_shows_flags_without_values(command):
    result = run_at_width(120, *command, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert f"Usage: ipsec-deploy {' '.join(command)} [OPTIONS] INVENTORY" in result.stdout
    assert "{inventory}" not in result.stdout


def test_root_help_shows_flags_without_values():
    result = run_at_width(120, "--help")
    assert result.exit_code == 0, result.output
    assert "--version" in result.stdout
    assert "<bool>" not in result.stdout
    assert "Usage: ipsec-deploy [OPTIONS] COMMAND [ARGS]..." in result.stdout


def test_invalid_format_names_choices():
    result = run_at_width(120, "verify", str(EXAMPLE), "--format", "yaml")
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.stderr
    assert "'yaml' is not one of 'table', 'json'." in result.stderr
    assert "Value error" not in result.stderr


def test_version_prints_package_version():
    result = run_at_width(120, "--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ipsec-deploy {version('ipsec-deploy')}\n"
