"""Ctrl-C while restore tasks are being armed leaves no task behind: the run removes what it armed."""
from __future__ import annotations

import json

import ipsec_deploy.executor.rollout as rollout_module
from tests.e2e_helpers import query_host, run_cli
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
    assert f"'ipsec-deploy revert {inventory} --run {run['run_id']} --journal-dir {journal}' restores the hosts." in message
