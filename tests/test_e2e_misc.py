"""Smaller end-to-end behaviours: overlap warnings, retry logging, and 'lab up' as a command."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

from tests.e2e_helpers import EXAMPLE_LAB, PASSWORD_VARIABLE, free_listen_ports, run_cli, with_password_env

PASSWORD = "Lab-Passw0rd"

OVERLAPPING_RULE = """\
        - IPsecRuleName: old-sql-rule
          DisplayName: Old SQL rule
          Group: DBA team
          RemoteAddress: [10.0.1.0/24]
          Protocol: TCP
          LocalPort: ["1433"]
          InboundSecurity: Require
          OutboundSecurity: Request
"""


def test_overlapping_foreign_rule_is_warned_and_kept(lab_factory, monkeypatch, tmp_path):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    text = EXAMPLE_LAB.read_text(encoding="utf-8")
    anchor = "      foreign_rules:\n"
    assert anchor in text
    running, inventory = lab_factory(text.replace(anchor, anchor + OVERLAPPING_RULE, 1))
    inventory = with_password_env(inventory)

    result = run_cli("apply", str(inventory), "--dry-run", "--journal-dir", str(tmp_path / "j"))
    assert result.exit_code == 0
    assert "warning: unmanaged rule 'Old SQL rule' (group 'DBA team', Require/Request) overlaps planned rule" in result.stdout
    assert "legacy-backup-agent" not in result.stdout  # it covers no planned traffic


def test_retries_are_logged_with_host(lab_factory, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(EXAMPLE_LAB)
    inventory = with_password_env(inventory)
    running.listeners["DB-SRV01"].refuse_connections(True)

    with caplog.at_level(logging.WARNING, logger="ipsec_deploy.transport"):
        result = run_cli("apply", str(inventory), "--dry-run", "--attempts", "2", "--journal-dir", str(tmp_path / "j"))
    assert result.exit_code == 1
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert any(message.startswith("DB-SRV01: opening the session failed") and "attempt 2 of 2" in message for message in retries)
    assert not any(message.startswith("APP-SRV01") for message in retries)


def test_rejected_credentials_are_not_retried(lab_factory, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(PASSWORD_VARIABLE, "wrong-password")
    running, inventory = lab_factory(EXAMPLE_LAB)
    inventory = with_password_env(inventory)
    with caplog.at_level(logging.WARNING, logger="ipsec_deploy.transport"):
        result = run_cli("apply", str(inventory), "--dry-run", "--attempts", "3", "--journal-dir", str(tmp_path / "j"))
    assert result.exit_code == 1
    assert "rejected the credentials" in result.stdout
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    assert "wrong-password" not in result.stdout + result.stderr + caplog.text


def test_lab_up_serves_until_interrupted(tmp_path):
    [port] = free_listen_ports(1)
    inventory = tmp_path / "one.yaml"
    inventory.write_text(
        "connection: {transport: http, auth: negotiate, username: 'CORP\\\\ipsec-admin'}\n"
        "forests: {corp.example: {}}\n"
        f"hosts:\n  SRV01: {{address: 127.0.0.1, connection: {{port: {port}}}, ip: [10.0.1.10], domain: corp.example}}\n"
        "lab: {password: Lab-Passw0rd}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "ipsec_deploy.cli", "lab", "up", str(inventory), "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, COLUMNS="160", PYTHONFAULTHANDLER="1"),
    )
    lines: list[str] = []
    ready = threading.Event()

    def read_output() -> None:
        # The banner ends once the lab serves; a Ctrl-C before that aborts the start instead.
        for line in process.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                ready.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "the lab never printed its banner:\n" + "".join(lines)
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", port)) == 0

        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # SIGABRT makes faulthandler print every thread's stack, which shows where the stop hangs.
            process.send_signal(signal.SIGABRT)
            process.wait(timeout=10)
            reader.join(timeout=10)
            raise AssertionError("the lab did not stop on Ctrl-C:\n" + "".join(lines)) from None
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines)
    assert process.returncode == 0, output
    assert "Stopping the lab." in output
    assert "not Windows" in output
    assert f"127.0.0.1:{port}" in output
    assert "Traceback" not in output


def test_lab_port_in_use_suggests_without_lab(tmp_path):
    # Another process (here a plain socket) listens on the host's port.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        inventory = tmp_path / "one.yaml"
        inventory.write_text(
            "connection: {transport: http, auth: negotiate, username: 'CORP\\\\ipsec-admin'}\n"
            "forests: {corp.example: {}}\n"
            f"hosts:\n  SRV01: {{address: 127.0.0.1, connection: {{port: {port}}}, ip: [10.0.1.10], domain: corp.example}}\n"
            "lab: {password: Lab-Passw0rd}\n"
        )

        result = run_cli("apply", str(inventory), "--lab", "--lab-state", str(tmp_path / "state"), "--dry-run")

    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert f"cannot listen for host 'SRV01' on 127.0.0.1 port {port}" in message
    assert "run the command without --lab" in message
    assert "the lab did not start, and nothing was changed." in message
    assert "the inventory is invalid" not in message


def test_apply_refuses_domain_gpo_store(lab_factory, monkeypatch, tmp_path):
    # Each host would write its own objects into the one GPO and delete the other hosts' objects.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(EXAMPLE_LAB)
    inventory = with_password_env(inventory)
    inventory.write_text("policy_store: 'CORP\\ipsec-gpo'\n" + inventory.read_text(encoding="utf-8"), encoding="utf-8")

    result = run_cli("apply", str(inventory), "--yes", "--journal-dir", str(tmp_path / "j"))

    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "error: policy_store 'CORP\\ipsec-gpo' is a domain GPO, which the hosts share" in message
    assert "Nothing was changed." in message
    assert all(host.write_count == 0 for host in running.hosts.values())


def test_revert_refuses_run_into_domain_gpo(lab_factory, monkeypatch, tmp_path):
    # The store of a revert comes from the run's journal, not from the inventory.
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    running, inventory = lab_factory(EXAMPLE_LAB)
    inventory = with_password_env(inventory)
    journal = tmp_path / "j"
    assert run_cli("apply", str(inventory), "--yes", "--journal-dir", str(journal), "--verify-timeout", "0").exit_code == 0
    path = next((journal / "runs").glob("*/run.json"))
    run = json.loads(path.read_text(encoding="utf-8"))
    run["policy_store"] = "CORP\\ipsec-gpo"
    path.write_text(json.dumps(run), encoding="utf-8")
    writes = {name: host.write_count for name, host in running.hosts.items()}

    result = run_cli("revert", str(inventory), "--yes", "--journal-dir", str(journal))

    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "policy_store 'CORP\\ipsec-gpo' is a domain GPO" in message
    assert "restore the GPO with the Group Policy tools instead" in message
    assert {name: host.write_count for name, host in running.hosts.items()} == writes
