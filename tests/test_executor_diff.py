"""Diff and state parsing: pure functions between a host's objects and the plan."""

from __future__ import annotations

from dataclasses import replace

from ipsec_deploy.executor.diff import diff_host
from ipsec_deploy.executor.payload import operations_payload
from ipsec_deploy.executor.records import object_from_record, object_to_record
from ipsec_deploy.executor.state import normalize_addresses, parse_host_state
from tests.inventory_texts import TWO_HOSTS, plan_of

STORE = "PersistentStore"


def desired(host: str = "APP-SRV01", text: str = TWO_HOSTS):
    return plan_of(text).host(host).objects


def as_current(objects) -> dict:
    return {(o.kind, o.name): o for o in objects}


def test_empty_host_gets_creates_in_dependency_order():
    operations = diff_host({}, desired(), STORE)
    assert [op.action for op in operations] == ["create"] * len(desired())
    kinds = [op.kind for op in operations]
    assert kinds == ["phase1_auth_set", "main_mode_crypto_set", "quick_mode_crypto_set", "main_mode_rule", "ipsec_rule", "ipsec_rule"]
    for op in operations:
        assert op.call.name.startswith("New-")
        assert op.undo[0].name.startswith("Remove-")


def test_matching_host_has_no_operations():
    assert diff_host(as_current(desired()), desired(), STORE) == []


def test_changed_set_becomes_set_call_with_undo():
    changed = desired(text=TWO_HOSTS.replace("pfs_group: DH14", "pfs_group: DH19"))
    operations = diff_host(as_current(desired()), changed, STORE)
    assert [(op.action, op.kind) for op in operations] == [("update", "quick_mode_crypto_set")]
    operation = operations[0]
    assert operation.call.name == "Set-NetIPsecQuickModeCryptoSet"
    assert operation.call.parameter("PerfectForwardSecrecyGroup") == "DH19"
    assert operation.undo[0].parameter("PerfectForwardSecrecyGroup") == "DH14"


def test_removed_policy_deletes_rules_before_sets():
    without_policy = TWO_HOSTS[: TWO_HOSTS.index("policies:")] + "policies: []\n"
    operations = diff_host(as_current(desired()), desired(text=without_policy), STORE)
    kinds = [op.kind for op in operations]
    assert all(op.action == "delete" for op in operations)
    assert kinds == ["ipsec_rule", "main_mode_rule", "quick_mode_crypto_set", "main_mode_crypto_set", "phase1_auth_set"]
    assert operations[0].undo[0].name == "New-NetIPsecRule"


def test_unmanaged_objects_are_not_in_diff():
    # The executor reads only the managed group, so foreign objects never
    # reach diff_host; a rule disabled by hand is drift and is re-enabled.
    current = as_current(desired())
    rule_key = ("ipsec_rule", "ipsec-deploy-rule-app-db-endpoint1")
    current[rule_key] = replace(current[rule_key], enabled=False)
    operations = diff_host(current, desired(), STORE)
    assert [(op.action, op.name) for op in operations] == [("update", "ipsec-deploy-rule-app-db-endpoint1")]
    assert operations[0].call.parameter("Enabled") == "True"


def test_windows_default_lifetime_is_not_drift():
    current = as_current(desired())
    key = ("main_mode_crypto_set", "ipsec-deploy-mmcrypto-strong")
    current[key] = replace(current[key], max_minutes=480)
    assert diff_host(current, desired(), STORE) == []


def test_payload_carries_proposals_and_undo():
    operations = diff_host({}, desired(), STORE)
    payload = operations_payload(operations, environment={})
    first = payload[0]
    assert first["Cmdlet"] == "New-NetIPsecPhase1AuthSet"
    assert first["Parameters"]["Name"] == "ipsec-deploy-p1auth-kerberos"
    assert first["Proposals"]["Proposal"] == [{"Cmdlet": "New-NetIPsecAuthProposal", "Parameters": {"Machine": True, "Kerberos": True}}]
    assert first["Undo"] == [{"Cmdlet": "Remove-NetIPsecPhase1AuthSet", "Parameters": {"Name": "ipsec-deploy-p1auth-kerberos", "PolicyStore": STORE}}]


def test_records_round_trip():
    for obj in desired():
        assert object_from_record(object_to_record(obj)) == obj


def test_windows_address_forms_normalise():
    assert normalize_addresses(["10.0.1.0/255.255.255.0", "10.0.1.10", "fd00::/64"]) == ("10.0.1.0/24", "10.0.1.10", "fd00::/64")
    assert normalize_addresses("Any") == ()
    assert normalize_addresses(["10.0.1.20", "10.0.1.10"]) == ("10.0.1.10", "10.0.1.20")


def test_state_parsing_matches_plan():
    records = [
        {
            "Kind": "phase1_auth_set",
            "Name": "ipsec-deploy-p1auth-kerberos",
            "DisplayName": "ipsec-deploy phase 1 auth kerberos",
            "Description": "Managed by ipsec-deploy (auth profile kerberos). Changes made by hand are overwritten.",
            "Group": "ipsec-deploy",
            "Proposals": [{"CimClass": "MSFT_NetIKEAuthProposal", "AuthenticationMethod": "MachineKerberos"}],
        },
        {
            "Kind": "foreign_ipsec_rule",
            "Name": "legacy",
            "DisplayName": "Legacy rule",
            "Group": "Old team",
            "Enabled": "True",
            "InboundSecurity": "Request",
            "OutboundSecurity": "Request",
            "LocalAddress": ["Any"],
            "RemoteAddress": ["10.0.1.0/255.255.255.0"],
            "Protocol": "TCP",
            "LocalPort": ["Any"],
            "RemotePort": ["1433"],
        },
    ]
    state = parse_host_state(records)
    planned = plan_of(TWO_HOSTS).host("APP-SRV01").object("phase1_auth_set", "ipsec-deploy-p1auth-kerberos")
    assert state.managed[("phase1_auth_set", "ipsec-deploy-p1auth-kerberos")] == planned
    assert state.foreign_rules[0].remote_address == ("10.0.1.0/24",)
    assert state.foreign_rules[0].remote_port == ("1433",)
