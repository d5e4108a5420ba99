"""Ctrl-C while restore tasks are being armed leaves no task behind: the run removes what it armed."""
from __future__ import annotations

import json

import ipsec_deploy.executor.rollout as rollout_module
from ipsec_deploy.executor.run import Executor
from tests.e2e_helpers import free_listen_ports, query_host, run_cli
from tests.test_rollout_safety import INVENTORY, PASSWORD, apply, start  # noqa: F401


def test_ctrl_c_during_arm(start, monkeypatch):
    running, inventory, journal = start(INVENTORY)
    original = rollout_module.arm_restore

    def arm(connection, *args, **kwargs):
        restore = original(connection, *args, **kwargs)
        if connection.host == "DB-SRV01":
            raise KeyboardInterrupt  # Ctrl-C arrives while arming
        return restore

    monkeypatch.setattr(rollout_module, "arm_restore", arm)
    result = apply(inventory, journal)
    print("exit:", result.exit_code, result.stderr.strip().splitlines()[-1])
    tasks = {h: [t.adapted_properties["TaskName"] for t in query_host(inventory, h, PASSWORD, "Get-ScheduledTask", {"TaskName": "ipsec-deploy-restore-*"})]
             for h in ("APP-SRV01", "DB-SRV01", "REPORT-SRV01")}
    print("tasks left on hosts:", tasks)
    run = json.loads(next((journal / "runs").glob("*/run.json")).read_text())
    print("journal restores:", run.get("restores"), "result:", run["result"])
    listing = json.loads(run_cli("runs", "--journal-dir", str(journal), "--format", "json").stdout)
    print("runs pending_confirmation:", listing[0]["pending_confirmation"])
    assert all(not t for t in tasks.values()), "restore tasks left armed after Ctrl-C"
    # The command it suggests runs as printed: inventory, run id and journal directory.
    message = " ".join(result.stderr.split())
    assert f"this restores the hosts: ipsec-deploy revert {inventory} --run {run['run_id']} --journal-dir {journal}" in message


def test_ctrl_c_hint_repeats_lab_options(tmp_path, monkeypatch):
    # Under --lab the printed revert must reach the same lab hosts, and paths with spaces stay one word.
    first, second = free_listen_ports(2)
    folder = tmp_path / "change window"
    folder.mkdir()
    inventory = folder / "lab inventory.yaml"
    inventory.write_text(
        "connection: {transport: http, auth: negotiate, username: 'CORP\\\\ipsec-admin'}\n"
        "forests: {corp.example: {}}\n"
        "hosts:\n"
        f"  APP-SRV01: {{address: 127.0.0.1, connection: {{port: {first}}}, ip: [10.0.1.10], domain: corp.example}}\n"
        f"  DB-SRV01: {{address: 127.0.0.1, connection: {{port: {second}}}, ip: [10.0.1.20], domain: corp.example}}\n"
        "auth: {kerberos: {phase1: [kerberos]}}\n"
        "crypto: {strong: {main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}], quick_mode: [{encryption: AES256, integrity: SHA256}]}}\n"
        "policies: [{name: app-db, endpoint1: [APP-SRV01], endpoint2: [DB-SRV01], auth: kerberos, crypto: strong}]\n"
        "lab: {password: Lab-Passw0rd}\n"
    )

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Executor, "apply_operations", interrupted)
    state = folder / "lab state"
    result = run_cli("apply", str(inventory), "--lab", "--lab-state", str(state), "--yes", "--journal-dir", str(folder / "j"))

    assert result.exit_code == 130
    message = " ".join(result.stderr.split())
    assert f"'{inventory}' --run " in message
    assert f"--lab --lab-state '{state}'" in message
