"""A host whose restore task cannot be armed is left unchanged, and its peers keep mirroring its old rules."""
from __future__ import annotations

import yaml

import ipsec_deploy.executor.rollout as rollout_module
from ipsec_deploy.transport.base import RemoteCommandFailed, RemoteError
from tests.test_rollout_safety import ADDRESSES, INVENTORY, apply, invariant_violations, rules_of, start  # noqa: F401


def test_unarmed_host_keeps_peer_mirrors(start, monkeypatch):
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0
    assert invariant_violations(running, ADDRESSES) == []

    # Narrow server-vlan to DB+REPORT: APP loses its rule, DB/REPORT narrow theirs.
    document = yaml.safe_load(inventory.read_text())
    for policy in document["policies"]:
        if policy["name"] == "server-vlan":
            policy["endpoint1"] = policy["endpoint2"] = ["DB-SRV01", "REPORT-SRV01"]
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))

    original = rollout_module.arm_restore

    def arm(connection, *args, **kwargs):
        if connection.host == "REPORT-SRV01":  # e.g. Register-ScheduledTask: access denied
            raise RemoteCommandFailed(connection.host, "arm_restore.ps1", [RemoteError("Access is denied.")])
        return original(connection, *args, **kwargs)

    monkeypatch.setattr(rollout_module, "arm_restore", arm)
    result = apply(inventory, journal)
    print(result.stdout)
    report_rules = [(r["Name"], r["InboundSecurity"], r["OutboundSecurity"], r["RemoteAddress"]) for r in rules_of(running, "REPORT-SRV01")]
    print("REPORT-SRV01 rules:", report_rules)
    print("APP-SRV01 rules:", [(r["Name"], r["RemoteAddress"]) for r in rules_of(running, "APP-SRV01")])
    violations = invariant_violations(running, ADDRESSES)
    print("violations:", violations)
    assert violations == []


def test_unarmed_host_is_still_changed_by_remove_stage(start, monkeypatch):
    """The remove stage leaves a host alone when its restore task could not be armed."""
    running, inventory, journal = start(INVENTORY)
    assert apply(inventory, journal).exit_code == 0
    document = yaml.safe_load(inventory.read_text())
    for policy in document["policies"]:
        if policy["name"] == "server-vlan":
            policy["endpoint1"] = policy["endpoint2"] = ["APP-SRV01", "DB-SRV01"]
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))
    original = rollout_module.arm_restore

    def arm(connection, *args, **kwargs):
        if connection.host == "REPORT-SRV01":
            raise RemoteCommandFailed(connection.host, "arm_restore.ps1", [RemoteError("Access is denied.")])
        return original(connection, *args, **kwargs)

    monkeypatch.setattr(rollout_module, "arm_restore", arm)
    before = sorted(r["Name"] for r in rules_of(running, "REPORT-SRV01"))
    result = apply(inventory, journal)
    after = sorted(r["Name"] for r in rules_of(running, "REPORT-SRV01"))
    line = next(l for l in result.stdout.splitlines() if "REPORT-SRV01" in l and "restore task" in l)
    print("report line:", line.strip())
    print("before:", before)
    print("after: ", after)
    assert after == before, "REPORT-SRV01 was changed although it could not be armed"
