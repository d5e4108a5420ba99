"""A host whose restore task cannot be cancelled fails the run, since it will undo the run at the deadline."""
from __future__ import annotations

import json

import ipsec_deploy.executor.rollout as rollout_module
from ipsec_deploy.transport.base import RemoteCommandFailed, RemoteError
from tests.e2e_helpers import query_host
from tests.test_rollout_safety import INVENTORY, PASSWORD, apply, start  # noqa: F401


def test_disarm_failure(start, monkeypatch):
    running, inventory, journal = start(INVENTORY)
    original = rollout_module.disarm_restore

    def disarm(connection, run_id):
        if connection.host == "DB-SRV01":
            raise RemoteCommandFailed(connection.host, "disarm_restore.ps1", [RemoteError("Access is denied.")])
        return original(connection, run_id)

    monkeypatch.setattr(rollout_module, "disarm_restore", disarm)
    result = apply(inventory, journal)
    print("exit:", result.exit_code)
    print([l.strip() for l in result.stdout.splitlines() if "restores its objects" in l])
    tasks = query_host(inventory, "DB-SRV01", PASSWORD, "Get-ScheduledTask", {"TaskName": "ipsec-deploy-restore-*"})
    print("DB-SRV01 tasks:", [t.adapted_properties["TaskName"] for t in tasks])
    run = json.loads(next((journal / "runs").glob("*/run.json")).read_text())
    print("journal result:", run["result"], "DB host:", run["hosts"]["DB-SRV01"]["status"])
    assert result.exit_code != 0, "apply reported success although DB-SRV01 will restore its pre-run objects at the deadline"
