"""apply, revert and runs end to end: the CLI and pypsrp over HTTP (NTLM, encrypted) against lab hosts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.planner import build_plan
from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, managed_names, query_host, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"


@pytest.fixture
def lab(lab_factory, monkeypatch, tmp_path):
    """The example topology on free ports; returns (running lab, inventory path, journal dir)."""
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(EXAMPLE_LAB)
    return running, with_password_env(inventory), tmp_path / "journal"


def apply(inventory: Path, journal: Path, *extra: str):
    return run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "1", *extra)


def planned_names(inventory: Path, host: str) -> set[tuple[str, str]]:
    plan = build_plan(load_inventory(inventory))
    return {(obj.kind, obj.name) for obj in plan.host(host).objects}


def write_counts(running) -> dict[str, int]:
    """Count each host's writes to its IPsec policy; removing SAs before a verification is not one."""
    return {
        name: sum(1 for entry in host.write_log if not entry["cmdlet"].endswith("SA"))
        for name, host in running.hosts.items()
    }


def test_apply_creates_exactly_the_plan(lab):
    running, inventory, journal = lab
    result = apply(inventory, journal)
    assert result.exit_code == 0, result.stdout + result.stderr
    for host in ("APP-SRV01", "DB-SRV01", "REPORT-SRV01", "PARTNER-APP01"):
        assert managed_names(inventory, host, PASSWORD) == planned_names(inventory, host)
    assert "11 of 11 pair(s) as planned" in result.stdout


def test_second_apply_sends_no_write(lab):
    running, inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    before = write_counts(running)

    again = apply(inventory, journal)
    assert again.exit_code == 0, again.stdout
    assert "No changes" in again.stdout
    assert write_counts(running) == before


def test_changed_policy_touches_only_its_hosts(lab):
    running, inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    before = write_counts(running)

    text = inventory.read_text().replace("endpoint2_ports:\n  - 1433", "endpoint2_ports:\n  - 1434")
    assert "1434" in text
    inventory.write_text(text)
    result = apply(inventory, journal)
    assert result.exit_code == 0, result.stdout + result.stderr
    after = write_counts(running)

    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"DB-SRV01", "REPORT-SRV01"}
    # One Set- each in the lower, request and raise stages.
    assert after["DB-SRV01"] - before["DB-SRV01"] == 3
    assert "update ipsec_rule ipsec-deploy-rule-reports-sql-endpoint2" in result.stdout
    assert "update ipsec_rule ipsec-deploy-rule-reports-sql-endpoint1" in result.stdout


def foreign_rule(inventory: Path) -> list:
    return query_host(inventory, "DB-SRV01", PASSWORD, "Get-NetIPsecRule", {"IPsecRuleName": "legacy-backup-agent"})


def test_foreign_rule_survives_apply_and_revert(lab):
    running, inventory, journal = lab
    before = foreign_rule(inventory)[0].adapted_properties

    assert apply(inventory, journal).exit_code == 0
    assert foreign_rule(inventory)[0].adapted_properties == before
    revert = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal))
    assert revert.exit_code == 0, revert.stdout + revert.stderr
    assert foreign_rule(inventory)[0].adapted_properties == before


def test_revert_restores_and_is_idempotent(lab):
    running, inventory, journal = lab
    before = {host: managed_names(inventory, host, PASSWORD) for host in running.hosts}
    assert apply(inventory, journal).exit_code == 0

    revert = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal))
    assert revert.exit_code == 0, revert.stdout + revert.stderr
    assert {host: managed_names(inventory, host, PASSWORD) for host in running.hosts} == before

    # The revert itself is a run, so revert the apply explicitly the second time.
    apply_run = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[0]["run_id"]
    counts = write_counts(running)
    again = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal), "--run", apply_run)
    assert again.exit_code == 0
    assert "No changes" in again.stdout
    assert write_counts(running) == counts


def test_runs_lists_apply_and_revert(lab):
    running, inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    assert run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal)).exit_code == 0
    listing = run_cli("runs", "--journal-dir", str(journal))
    assert listing.exit_code == 0
    assert "apply" in listing.stdout
    apply_run = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[0]["run_id"]
    assert f"reverts run {apply_run}" in listing.stdout
    assert "changed: APP-SRV01, DB-SRV01, PARTNER-APP01, REPORT-SRV01" in listing.stdout


def test_altered_snapshot_refuses_revert(lab):
    running, inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    snapshot = next((journal / "runs").glob("*/snapshots/DB-SRV01.json"))
    # Before the first apply the host had no managed objects; any edit counts.
    snapshot.write_text(snapshot.read_text().replace('"objects": []', '"objects": [ ]'))
    result = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal))
    assert result.exit_code == 1
    assert "was altered since the run" in result.stderr


def test_missing_snapshot_refuses_revert(lab):
    running, inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    next((journal / "runs").glob("*/snapshots/APP-SRV01.json")).unlink()
    result = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal))
    assert result.exit_code == 1
    assert "snapshot of APP-SRV01 is missing" in result.stderr


def test_dry_run_changes_nothing(lab):
    running, inventory, journal = lab
    result = apply(inventory, journal, "--dry-run")
    assert result.exit_code == 0
    assert "+ create ipsec_rule ipsec-deploy-rule-app-db-endpoint1" in result.stdout
    assert "Dry run: nothing was changed." in result.stdout
    assert sum(write_counts(running).values()) == 0
    assert not (journal / "runs").exists()


def test_no_terminal_without_yes_is_refused(lab):
    running, inventory, journal = lab
    result = run_cli("apply", str(inventory), "--journal-dir", str(journal))
    assert result.exit_code == 2
    assert "pass --yes" in result.stderr
    assert sum(write_counts(running).values()) == 0


def test_journal_files_private_and_without_password(lab):
    running, inventory, journal = lab
    result = apply(inventory, journal)
    assert result.exit_code == 0
    files = [p for p in journal.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"run.json", "plan.json", "operations.jsonl", "DB-SRV01.json"}
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert PASSWORD not in path.read_text()
    assert PASSWORD not in result.stdout + result.stderr


def test_dropping_ports_converges(lab):
    running, inventory, journal = lab
    text = inventory.read_text()
    document = yaml.safe_load(text)
    for policy in document["policies"]:
        if policy["name"] == "app-db":
            policy["protocol"] = "TCP"
            policy["endpoint2_ports"] = [1433]
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))
    assert apply(inventory, journal).exit_code == 0

    # Back to any protocol and no ports: Set- must clear the old ports.
    inventory.write_text(text)
    result = apply(inventory, journal)
    assert result.exit_code == 0, result.stdout + result.stderr
    again = apply(inventory, journal)
    assert "No changes" in again.stdout
