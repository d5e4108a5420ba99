"""Messages of apply, revert and verify against lab hosts: each states what happened and what was left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ipsec_deploy.cli import app
from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, run_cli, with_password_env
from tests.inventory_texts import lab_inventory

PASSWORD = "Lab-Passw0rd"


@pytest.fixture
def lab(lab_factory, monkeypatch, tmp_path):
    """The example topology on free ports; returns (inventory path, journal dir)."""
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    _, inventory = lab_factory(EXAMPLE_LAB)
    return with_password_env(inventory), tmp_path / "journal"


def apply(inventory: Path, journal: Path, *extra: str):
    return run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "1", *extra)


def test_apply_without_password_reads_no_host(lab, monkeypatch):
    inventory, journal = lab
    monkeypatch.delenv(PASSWORD_VARIABLE)

    result = apply(inventory, journal)

    assert result.exit_code == 1
    assert result.stdout.count("not read") == 4
    assert "No host could be read, so nothing was changed." in result.stdout
    assert "No changes" not in result.stdout
    assert "already holds" not in result.stdout


def test_apply_counts_hosts_not_read(lab):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    document["hosts"]["DB-SRV01"]["connection"]["password_env"] = "IPSEC_DEPLOY_TEST_UNSET_PASSWORD"
    inventory.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    result = apply(inventory, journal)

    assert result.exit_code == 1
    assert "DB-SRV01: not read" in result.stdout
    assert "1 of 4 host(s) could not be read and were not changed." in result.stdout
    assert "No changes on the others" in result.stdout


@pytest.mark.parametrize("dry_run", [True, False])
def test_revert_names_reverted_run(lab, dry_run):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    run = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[0]

    extra = ["--dry-run"] if dry_run else ["--yes", "--verify-timeout", "1"]
    result = run_cli("revert", str(inventory), "--journal-dir", str(journal), *extra)

    assert result.exit_code == 0, result.stdout + result.stderr
    first_line = result.stdout.splitlines()[0]
    assert first_line.startswith(f"Reverting run {run['run_id']}: apply started ")
    assert first_line.endswith(f" UTC with {inventory}.")
    assert run["started"][:10] in first_line


def test_revert_refuses_other_inventory_run(lab, tmp_path):
    # The latest apply used a copy of the inventory: a revert with the
    # original must not pick that run unless --run names it.
    inventory, journal = lab
    copy = tmp_path / "copy.yaml"
    copy.write_text(inventory.read_text(encoding="utf-8"), encoding="utf-8")
    assert apply(copy, journal).exit_code == 0
    run = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[-1]

    refused = run_cli("revert", str(inventory), "--journal-dir", str(journal), "--yes", "--verify-timeout", "1")
    chosen = run_cli("revert", str(inventory), "--journal-dir", str(journal), "--run", run["run_id"], "--dry-run")

    assert refused.exit_code == 1
    message = " ".join(refused.stderr.split())
    assert f"the latest apply, run {run['run_id']}, used {copy}, not {inventory}." in message
    assert f"Pass --run {run['run_id']} to revert it anyway" in message
    assert chosen.exit_code == 0, chosen.stdout + chosen.stderr
    assert "- delete" in chosen.stdout


def test_revert_from_other_directory_matches_file(lab, tmp_path, monkeypatch):
    # The apply names the inventory relative to its directory; the revert
    # runs elsewhere and names the same file by its absolute path.
    inventory, journal = lab
    monkeypatch.chdir(inventory.parent)
    assert apply(Path(inventory.name), journal).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / inventory.name).write_text(inventory.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(elsewhere)

    same = run_cli("revert", str(inventory), "--journal-dir", str(journal), "--dry-run")
    other = run_cli("revert", inventory.name, "--journal-dir", str(journal), "--dry-run")

    assert same.exit_code == 0, same.stdout + same.stderr
    assert other.exit_code == 1
    assert "the latest apply, run" in " ".join(other.stderr.split())


def test_revert_without_journal_mentions_journal_dir(lab, tmp_path, monkeypatch):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = run_cli("revert", str(inventory), "--dry-run")

    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "no apply run found" in message
    assert f"The journal directory is {elsewhere / '.ipsec-deploy'}." in message
    assert "pass the same --journal-dir here" in message


def test_full_revert_has_nothing_to_verify(lab):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0

    result = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "1")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Nothing to verify: after this run the hosts hold no rules of the managed group." in result.stdout
    assert "no mirrored pair has both of its hosts" not in result.stdout


def test_verify_single_host_verifies_nothing(lab):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0

    result = run_cli("verify", str(inventory), "--limit", "DB-SRV01", "--verify-timeout", "1")

    assert result.exit_code == 1
    message = " ".join(result.stdout.split())
    assert "Nothing was verified: no mirrored pair has both of its hosts in the selection" in message
    assert "--limit DB-SRV01,APP-SRV01,PARTNER-APP01,REPORT-SRV01" in message


def test_verify_single_host_json_fails(lab):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0

    result = run_cli("verify", str(inventory), "--limit", "DB-SRV01", "--verify-timeout", "1", "--format", "json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False
    assert report["pairs"] == []
    assert report["nothing_verified"].startswith("Nothing was verified: no mirrored pair has both of its hosts")


UNMANAGED_PEERS_ONLY = lab_inventory(
    [("APP-SRV01", "10.0.1.10"), ("REPORT-SRV01", "10.0.1.30")], "[APP-SRV01, REPORT-SRV01]", "[172.16.5.0/24]", "to-partner"
)


def test_verify_unmanaged_peers_explains(lab_factory, monkeypatch):
    # Every rule points at a subnet outside the inventory, so no pair can be probed.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    _, inventory = lab_factory(UNMANAGED_PEERS_ONLY)

    result = run_cli("verify", str(with_password_env(inventory)), "--verify-timeout", "1")

    assert result.exit_code == 1
    message = " ".join(result.stdout.split())
    assert "Nothing was verified: the plan has no mirrored pair of two managed hosts to probe." in message
    assert "--limit" not in message


def test_verify_pair_names_connection_error(lab):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    document["hosts"]["DB-SRV01"]["connection"]["password_env"] = "IPSEC_DEPLOY_TEST_UNSET_PASSWORD"
    inventory.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    result = run_cli("verify", str(inventory), "--verify-timeout", "1", "--format", "json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    pair = next(p for p in report["pairs"] if p["policy"] == "app-db")
    assert pair["status"] == "not verified"
    assert "DB-SRV01 could not be read: the environment variable IPSEC_DEPLOY_TEST_UNSET_PASSWORD" in pair["reason"]
    assert "no session to this host" not in result.stdout


def test_result_heading_keeps_run_id_whole(lab):
    inventory, journal = lab
    result = CliRunner().invoke(
        app, ["apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "1"],
        env={"COLUMNS": "80", "NO_COLOR": "1"},
    )
    run = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[0]

    assert result.exit_code == 0, result.output
    assert f"Result of run {run['run_id']}" in result.stdout.splitlines()


def test_result_table_explains_extra_writes(lab):
    inventory, journal = lab

    result = apply(inventory, journal)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Writes" in result.stdout
    assert "Operations" not in result.stdout
    message = " ".join(result.stdout.split())
    assert "Set- writes that lower, request and raise the rules" in message


def test_verify_and_revert_print_warnings(lab):
    # A warning about the connection settings matters most to the commands that connect.
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    document["connection"]["cert_validation"] = False
    inventory.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    verified = run_cli("verify", str(inventory), "--verify-timeout", "1")
    reverted = run_cli("revert", str(inventory), "--journal-dir", str(journal), "--dry-run")

    for result in (verified, reverted):
        assert "warning: cert_validation is off in connection" in " ".join(result.stderr.split())


def test_revert_of_older_run_warns_about_later_runs(lab):
    inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    first = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[0]["run_id"]
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    for policy in document["policies"]:
        if policy["name"] == "reports-sql":
            policy["endpoint2_ports"] = [1433, 1434]
    inventory.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    assert apply(inventory, journal).exit_code == 0
    second = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)[-1]["run_id"]

    result = run_cli("revert", str(inventory), "--journal-dir", str(journal), "--run", first, "--dry-run")

    assert result.exit_code == 0, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert f"warning: run {second} (apply) changed DB-SRV01, REPORT-SRV01 after this run" in message
    assert "so it undoes that change too" in message
