"""Commit-confirmed apply end to end: confirmed runs leave nothing behind; lost hosts restore themselves."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from ipsec_deploy.executor import restore_records
from ipsec_deploy.executor.rollout import Rollout
from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, managed_names, query_host, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"
HOSTS = ("APP-SRV01", "DB-SRV01", "REPORT-SRV01", "PARTNER-APP01")
HOSTS_SORTED = sorted(HOSTS)


@pytest.fixture
def lab(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(EXAMPLE_LAB)
    return running, with_password_env(inventory), tmp_path / "journal"


def apply(inventory, journal, *extra):
    return run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "0", *extra)


def restore_tasks(inventory, host) -> list:
    return query_host(inventory, host, PASSWORD, "Get-ScheduledTask", {"TaskName": "ipsec-deploy-restore-*"})


def crash_before_confirmation(monkeypatch) -> None:
    """Make the run end as if the controller died after its changes: nothing confirms the hosts."""
    monkeypatch.setattr(Rollout, "_confirm", lambda self, changes, armed, report: None)


def test_confirmed_run_leaves_no_restore_task(lab):
    running, inventory, journal = lab
    result = apply(inventory, journal)
    assert result.exit_code == 0, result.stdout + result.stderr
    for host in HOSTS:
        assert restore_tasks(inventory, host) == []
    run = json.loads(next((journal / "runs").glob("*/run.json")).read_text())
    assert {restore["state"] for restore in run["restores"].values()} == {"confirmed"}
    listing = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)
    assert listing[0]["pending_confirmation"] == []


def test_lost_controller_hosts_restore_themselves(lab, monkeypatch):
    running, inventory, journal = lab
    before = {host: managed_names(inventory, host, PASSWORD) for host in HOSTS}
    crash_before_confirmation(monkeypatch)
    assert apply(inventory, journal).exit_code == 0
    assert managed_names(inventory, "DB-SRV01", PASSWORD) != before["DB-SRV01"]
    assert len(restore_tasks(inventory, "DB-SRV01")) == 1
    listing = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)
    assert listing[0]["pending_confirmation"] == ["APP-SRV01", "DB-SRV01", "PARTNER-APP01", "REPORT-SRV01"]

    # Nothing happens before the deadline; after it every host is back.
    run = json.loads(next((journal / "runs").glob("*/run.json")).read_text())
    deadline = max(restore["deadline"] for restore in run["restores"].values())

    running.network.clock.set(datetime.fromisoformat(deadline) - timedelta(minutes=1))
    assert managed_names(inventory, "DB-SRV01", PASSWORD) != before["DB-SRV01"]
    running.network.clock.set(datetime.fromisoformat(deadline) + timedelta(minutes=1))
    for host in HOSTS:
        assert managed_names(inventory, host, PASSWORD) == before[host]
        assert restore_tasks(inventory, host) == []


def test_revert_removes_leftover_restore_tasks(lab, monkeypatch):
    running, inventory, journal = lab
    crash_before_confirmation(monkeypatch)
    assert apply(inventory, journal).exit_code == 0
    monkeypatch.undo()
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)

    result = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "DB-SRV01: removed the pending restore task of run" in result.stdout
    for host in HOSTS:
        assert restore_tasks(inventory, host) == []
        assert managed_names(inventory, host, PASSWORD) == set()


def test_unconfirmed_command_keeps_leftover_task(lab, monkeypatch):
    running, inventory, journal = lab
    crash_before_confirmation(monkeypatch)
    assert apply(inventory, journal).exit_code == 0
    monkeypatch.undo()
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)

    # Without --yes and without a terminal the run stops before changing
    # anything, so the crashed run's way back must stay.
    refused = run_cli("apply", str(inventory), "--journal-dir", str(journal))
    assert refused.exit_code == 2
    assert "remove the restore task that run" in refused.stdout
    assert len(restore_tasks(inventory, "DB-SRV01")) == 1

    confirmed = apply(inventory, journal)
    assert confirmed.exit_code == 0, confirmed.stdout + confirmed.stderr
    assert "DB-SRV01: removed the pending restore task of run" in confirmed.stdout
    assert restore_tasks(inventory, "DB-SRV01") == []
    listing = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)
    assert listing[0]["pending_confirmation"] == []


def test_host_clock_ahead_is_warned(lab):
    running, inventory, journal = lab
    running.network.clock.set(datetime.now(running.network.clock.now().tzinfo) + timedelta(minutes=5))
    result = apply(inventory, journal)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "DB-SRV01: its clock is 5 minute(s) ahead of this workstation's" in result.stdout


def test_next_run_clears_vanished_pending(lab):
    # A run interrupted while confirming removed its tasks but never
    # recorded it; the next run finds no task on the hosts.
    running, inventory, journal = lab
    assert apply(inventory, journal).exit_code == 0
    path = next((journal / "runs").glob("*/run.json"))
    run = json.loads(path.read_text())
    for restore in run["restores"].values():
        restore["state"] = "armed"
    path.write_text(json.dumps(run))
    before = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)

    # Before the deadline a missing task proves nothing: the name may reach another machine now.
    assert run_cli("apply", str(inventory), "--dry-run", "--journal-dir", str(journal)).exit_code == 0
    during = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)

    for restore in run["restores"].values():
        restore["deadline"] = "2026-01-01T00:00:00+00:00"
    path.write_text(json.dumps(run))
    assert run_cli("apply", str(inventory), "--dry-run", "--journal-dir", str(journal)).exit_code == 0
    after = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)

    assert before[0]["pending_confirmation"] == list(HOSTS_SORTED)
    assert during[0]["pending_confirmation"] == list(HOSTS_SORTED)
    assert after[0]["pending_confirmation"] == []
    assert {restore["state"] for restore in json.loads(path.read_text())["restores"].values()} == {"gone"}


def test_next_run_records_fired_restore(lab, monkeypatch):
    running, inventory, journal = lab
    crash_before_confirmation(monkeypatch)
    assert apply(inventory, journal).exit_code == 0
    path = next((journal / "runs").glob("*/run.json"))
    deadline = max(restore["deadline"] for restore in json.loads(path.read_text())["restores"].values())
    running.network.clock.set(datetime.fromisoformat(deadline) + timedelta(minutes=1))
    monkeypatch.undo()
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)

    assert run_cli("apply", str(inventory), "--dry-run", "--journal-dir", str(journal)).exit_code == 0

    assert {restore["state"] for restore in json.loads(path.read_text())["restores"].values()} == {"restored"}
    table = " ".join(run_cli("runs", "--journal-dir", str(journal)).stdout.split())
    assert f"restored itself to before the run: {', '.join(HOSTS_SORTED)}" in table


def test_unwritable_journal_only_warns(lab, monkeypatch):
    # A journal that cannot be updated must not turn a dry run into a traceback.
    running, inventory, journal = lab
    crash_before_confirmation(monkeypatch)
    assert apply(inventory, journal).exit_code == 0
    path = next((journal / "runs").glob("*/run.json"))
    deadline = max(restore["deadline"] for restore in json.loads(path.read_text())["restores"].values())
    running.network.clock.set(datetime.fromisoformat(deadline) + timedelta(minutes=1))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(restore_records, "mark_restore", read_only)
    result = run_cli("apply", str(inventory), "--dry-run", "--journal-dir", str(journal))

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "warning: cannot update the journal of run" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
