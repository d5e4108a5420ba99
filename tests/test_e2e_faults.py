"""apply against lab hosts that fail: each failure is reported, the other hosts complete, nothing is half-applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, managed_names, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"


def with_fault(fault_yaml: str) -> str:
    """Return the example lab inventory with faults added to DB-SRV01's lab entry."""
    text = EXAMPLE_LAB.read_text(encoding="utf-8")
    anchor = "    DB-SRV01:\n"
    assert anchor in text.split("\nlab:")[1]
    head, lab_section = text.split("\nlab:", 1)
    lab_section = lab_section.replace(anchor, anchor + "      faults:\n" + fault_yaml, 1)
    return head + "\nlab:" + lab_section


@pytest.fixture
def start(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)

    def start_with(fault_yaml: str):
        running, inventory = lab_factory(with_fault(fault_yaml))
        return running, with_password_env(inventory), tmp_path / "journal"

    return start_with


def apply(inventory: Path, journal: Path, *extra: str):
    return run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--no-verify", "--attempts", "1", *extra)


def host_rows(stdout: str) -> dict[str, str]:
    """Return the summary table's status per host."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("APP-SRV01", "DB-SRV01", "REPORT-SRV01", "PARTNER-APP01") and parts[1] in ("changed", "failed", "unreachable", "unchanged"):
            rows[parts[0]] = parts[1]
    return rows


def test_refused_connection_reported(start):
    running, inventory, journal = start("        refuse_connections: true\n")
    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert "DB-SRV01: not read: cannot connect to the WinRM listener" in result.stdout
    assert host_rows(result.stdout) == {"APP-SRV01": "changed", "DB-SRV01": "unreachable", "REPORT-SRV01": "changed", "PARTNER-APP01": "changed"}
    run = json.loads(next((journal / "runs").glob("*/run.json")).read_text())
    assert run["hosts"]["DB-SRV01"]["status"] == "unreachable"
    assert "cannot connect" in run["hosts"]["DB-SRV01"]["detail"]
    assert run["result"] == "failed"


def test_rejected_credentials_reported(start):
    running, inventory, journal = start("        reject_credentials: true\n")
    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert "the host rejected the credentials (HTTP 401)" in result.stdout
    assert host_rows(result.stdout)["DB-SRV01"] == "unreachable"
    assert host_rows(result.stdout)["APP-SRV01"] == "changed"


def test_slow_host_times_out(start):
    running, inventory, journal = start("        latency_seconds: 7\n")
    text = inventory.read_text()
    # A one-second WS-Man timeout gives a six-second HTTP read timeout.
    text = text.replace("connection:\n  transport: http", "connection:\n  operation_timeout_seconds: 1\n  transport: http", 1)
    assert "operation_timeout_seconds: 1" in text
    inventory.write_text(text)
    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert "DB-SRV01: not read: timed out waiting for the WinRM listener" in result.stdout
    assert host_rows(result.stdout)["REPORT-SRV01"] == "changed"


def test_failed_cmdlet_rolls_back_host(start):
    running, inventory, journal = start(
        "        fail_cmdlets:\n"
        "          - cmdlet: New-NetIPsecRule\n"
        "            message: The RPC server is unavailable.\n"
        "            object_name: ipsec-deploy-rule-reports-sql-endpoint2\n"
    )
    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert host_rows(result.stdout) == {"APP-SRV01": "changed", "DB-SRV01": "failed", "REPORT-SRV01": "changed", "PARTNER-APP01": "changed"}
    assert "New-NetIPsecRule 'ipsec-deploy-rule-reports-sql-endpoint2' failed: The RPC server is unavailable." in result.stdout
    assert "were undone" in result.stdout

    # DB-SRV01 is back where it was: it held no managed object before.
    assert managed_names(inventory, "DB-SRV01", PASSWORD) == set()

    lines = [json.loads(line) for line in next((journal / "runs").glob("*/operations.jsonl")).read_text().splitlines()]
    failed = [line for line in lines if line["status"] == "failed"]
    assert [(line["host"], line["name"]) for line in failed] == [("DB-SRV01", "ipsec-deploy-rule-reports-sql-endpoint2")]
    run = json.loads(next((journal / "runs").glob("*/run.json")).read_text())
    assert run["hosts"]["DB-SRV01"]["status"] == "failed"
    assert run["result"] == "failed"


def test_dropped_connection_reported(start):
    running, inventory, journal = start("        drop_after_requests: 4\n")
    result = apply(inventory, journal)
    assert result.exit_code == 1
    assert host_rows(result.stdout)["DB-SRV01"] in ("unreachable", "failed")
    assert host_rows(result.stdout)["APP-SRV01"] == "changed"
    assert "Traceback" not in result.stdout + result.stderr


def test_connection_lost_mid_session_says_so(start):
    # The session opens (five requests with NTLM), then every later request is dropped.
    running, inventory, journal = start("        drop_after_requests: 5\n")
    result = run_cli("apply", str(inventory), "--dry-run", "--journal-dir", str(journal), "--attempts", "1")
    output = " ".join(result.stdout.split())
    assert result.exit_code == 1
    assert "DB-SRV01: not read: lost the connection to http://127.0.0.1:" in output
    assert "during the session" in output
    assert "Check the host's transport and port" not in output
