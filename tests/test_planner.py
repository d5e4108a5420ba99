"""Planner: the example scenarios produce the expected objects, and plan-wide checks fire."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.inventory.model import AuthMethod, MainModeProposal, QuickModeProposal
from ipsec_deploy.objects import (
    IPsecRule,
    MainModeCryptoSet,
    MainModeRule,
    Phase1AuthSet,
    QuickModeCryptoSet,
)
from ipsec_deploy.planner import build_plan
from tests.inventory_texts import TWO_HOSTS, errors_of, plan_of, problems_of

EXAMPLE = Path(__file__).resolve().parent.parent / "inventory" / "example.yaml"


@pytest.fixture(scope="module")
def example_plan():
    return build_plan(load_inventory(EXAMPLE))


def rule(plan, host: str, name: str) -> IPsecRule:
    obj = plan.host(host).object("ipsec_rule", f"ipsec-deploy-rule-{name}")
    assert obj is not None, f"{host} has no rule {name}"
    return obj


# -- scenarios of the example inventory ---------------------------------


def test_host_pair_rules_mirror(example_plan):
    app = rule(example_plan, "APP-SRV01", "app-db-endpoint1")
    db = rule(example_plan, "DB-SRV01", "app-db-endpoint2")

    assert app.local_address == ("10.0.1.10", "fd00:10::10")
    assert app.remote_address == ("10.0.1.20",)
    assert (db.local_address, db.remote_address) == (app.remote_address, app.local_address)
    assert (app.inbound_security, app.outbound_security) == ("Require", "Require")
    assert app.protocol == "Any"
    assert app.phase1_auth_set == "ipsec-deploy-p1auth-kerberos"
    assert app.phase2_auth_set is None
    assert app.quick_mode_crypto_set == "ipsec-deploy-qmcrypto-strong"
    assert [(m.host, m.rule) for m in app.mirrors] == [("DB-SRV01", "ipsec-deploy-rule-app-db-endpoint2")]
    assert [(m.host, m.rule) for m in db.mirrors] == [("APP-SRV01", "ipsec-deploy-rule-app-db-endpoint1")]


def test_host_pair_crypto_and_auth_sets(example_plan):
    db = example_plan.host("DB-SRV01")

    phase1 = db.object("phase1_auth_set", "ipsec-deploy-p1auth-kerberos")
    assert isinstance(phase1, Phase1AuthSet)
    assert phase1.proposals == (AuthMethod("kerberos", "machine"),)

    main_mode = db.object("main_mode_crypto_set", "ipsec-deploy-mmcrypto-strong")
    assert isinstance(main_mode, MainModeCryptoSet)
    assert main_mode.proposals == (MainModeProposal("AES256", "SHA256", "DH14"),)

    quick_mode = db.object("quick_mode_crypto_set", "ipsec-deploy-qmcrypto-strong")
    assert isinstance(quick_mode, QuickModeCryptoSet)
    assert quick_mode.proposals == (QuickModeProposal("ESP", "AES256", "SHA256"),)
    assert quick_mode.perfect_forward_secrecy_group == "DH14"
    assert db.object("phase2_auth_set", "ipsec-deploy-p2auth-kerberos") is None


def test_main_mode_rule_binds_crypto_set(example_plan):
    main_mode_rule = example_plan.host("APP-SRV01").object("main_mode_rule", "ipsec-deploy-mmrule-app-db-endpoint1")
    assert isinstance(main_mode_rule, MainModeRule)
    assert main_mode_rule.main_mode_crypto_set == "ipsec-deploy-mmcrypto-strong"
    assert main_mode_rule.phase1_auth_set == "ipsec-deploy-p1auth-kerberos"
    assert main_mode_rule.local_address == ("10.0.1.10", "fd00:10::10")
    assert main_mode_rule.remote_address == ("10.0.1.20",)


def test_subnet_rule_on_every_vlan_host(example_plan):
    vlan_hosts = ["APP-SRV01", "DB-SRV01", "REPORT-SRV01"]
    for host in vlan_hosts:
        vlan = rule(example_plan, host, "server-vlan")
        assert (vlan.local_address, vlan.remote_address) == (("10.0.1.0/24",), ("10.0.1.0/24",))
        assert vlan.protocol == "Any"
        assert sorted(m.host for m in vlan.mirrors) == [h for h in vlan_hosts if h != host]
    assert example_plan.host("PARTNER-APP01").object("ipsec_rule", "ipsec-deploy-rule-server-vlan") is None
    vlan_pairs = {(p.host_a, p.host_b) for p in example_plan.pairs if p.policy == "server-vlan"}
    assert vlan_pairs == {("APP-SRV01", "DB-SRV01"), ("APP-SRV01", "REPORT-SRV01"), ("DB-SRV01", "REPORT-SRV01")}


def test_icmp_exemption_in_vlan(example_plan):
    icmp = rule(example_plan, "DB-SRV01", "icmp-in-vlan")
    assert icmp.is_exemption
    assert (icmp.inbound_security, icmp.outbound_security) == ("None", "None")
    assert icmp.protocol == "ICMPv4"
    assert icmp.phase1_auth_set is None and icmp.quick_mode_crypto_set is None


def test_domain_controller_exemption(example_plan):
    for host in ("APP-SRV01", "DB-SRV01", "REPORT-SRV01"):
        exemption = rule(example_plan, host, "domain-controllers-endpoint1")
        assert exemption.is_exemption
        assert exemption.remote_address == ("10.0.0.10", "10.0.0.11")
        assert exemption.protocol == "Any"
        assert exemption.mirrors == ()
    assert not any("domain controller" in w.message for w in example_plan.warnings)


def test_partner_subnet_uses_certificates(example_plan):
    vlan_side = rule(example_plan, "APP-SRV01", "vlan-partner-endpoint1")
    partner_side = rule(example_plan, "PARTNER-APP01", "vlan-partner-endpoint2")
    assert (vlan_side.local_address, vlan_side.remote_address) == (("10.0.1.0/24",), ("172.16.5.0/24",))
    assert (partner_side.local_address, partner_side.remote_address) == (("172.16.5.0/24",), ("10.0.1.0/24",))

    certificate = example_plan.host("PARTNER-APP01").object("phase1_auth_set", "ipsec-deploy-p1auth-corp-ca")
    assert certificate.proposals == (AuthMethod("certificate", "machine", "CN=Corp Issuing CA 01, O=Corp, C=US", "Intermediate"),)
    assert example_plan.host("PARTNER-APP01").object("phase1_auth_set", "ipsec-deploy-p1auth-kerberos") is None
    assert sorted(m.host for m in partner_side.mirrors) == ["APP-SRV01", "DB-SRV01", "REPORT-SRV01"]


def test_ports_land_on_database_side(example_plan):
    client = rule(example_plan, "REPORT-SRV01", "reports-sql-endpoint1")
    server = rule(example_plan, "DB-SRV01", "reports-sql-endpoint2")
    assert (client.protocol, client.local_port, client.remote_port) == ("TCP", (), ("1433",))
    assert (server.protocol, server.local_port, server.remote_port) == ("TCP", ("1433",), ())


def test_objects_ordered_sets_before_rules(example_plan):
    for host_plan in example_plan.hosts:
        kinds = [obj.kind for obj in host_plan.objects]
        assert kinds.index("ipsec_rule") > max(i for i, k in enumerate(kinds) if k != "ipsec_rule")
        for obj in host_plan.objects:
            if isinstance(obj, IPsecRule) and obj.quick_mode_crypto_set:
                assert host_plan.object("quick_mode_crypto_set", obj.quick_mode_crypto_set) is not None
                assert host_plan.object("phase1_auth_set", obj.phase1_auth_set) is not None


def test_every_object_in_managed_group(example_plan):
    for host_plan in example_plan.hosts:
        for obj in host_plan.objects:
            assert obj.group == "ipsec-deploy"
            assert obj.new_call("PersistentStore").parameter("Group") == "ipsec-deploy"


def test_replanning_is_stable(example_plan):
    again = build_plan(load_inventory(EXAMPLE))
    assert again == example_plan


def test_change_affects_only_changed_objects():
    before = plan_of(TWO_HOSTS)
    after = plan_of(TWO_HOSTS.replace("pfs_group: DH14", "pfs_group: DH19"))
    for host in ("APP-SRV01", "DB-SRV01"):
        old = {(o.kind, o.name): o for o in before.host(host).objects}
        new = {(o.kind, o.name): o for o in after.host(host).objects}
        assert old.keys() == new.keys()
        changed = [key for key in old if old[key] != new[key]]
        assert changed == [("quick_mode_crypto_set", "ipsec-deploy-qmcrypto-strong")]


def test_managed_group_prefixes_names():
    plan = plan_of("managed_group: sec-team\n" + TWO_HOSTS)
    names = [obj.name for obj in plan.host("APP-SRV01").objects]
    assert names and all(name.startswith("sec-team-") for name in names)


# -- plan-wide checks ----------------------------------------------------

CROSS_FOREST = TWO_HOSTS.replace(
    "    domain_controllers: [10.0.0.10, 10.0.0.11]\n",
    "    domain_controllers: [10.0.0.10, 10.0.0.11]\n  partner.example: {}\n",
).replace("    ip: [10.0.1.20]\n    domain: corp.example\n", "    ip: [10.0.1.20]\n    domain: partner.example\n")


def test_kerberos_across_forests_needs_certificates():
    errors = errors_of(CROSS_FOREST)
    assert len(errors) == 1
    line, message = errors[0]
    assert line == CROSS_FOREST.splitlines().index("  - name: app-db") + 1
    assert "Kerberos needs both hosts in the same forest" in message
    assert "certificate" in message


def test_declared_forest_trust_allows_kerberos():
    trusted = CROSS_FOREST.replace("  partner.example: {}\n", "  partner.example:\n    trusts: [corp.example]\n")
    assert errors_of(trusted) == []


def test_kerberos_to_foreign_network_rejected():
    text = TWO_HOSTS.replace(
        "networks:\n", "networks:\n  partner-subnet: {addresses: [172.16.5.0/24], forest: partner.example}\n"
    ).replace("    domain_controllers: [10.0.0.10, 10.0.0.11]\n", "    domain_controllers: [10.0.0.10, 10.0.0.11]\n  partner.example: {}\n")
    text = text.replace("endpoint2: [DB-SRV01]", "endpoint2: [partner-subnet]")
    errors = errors_of(text)
    assert any("network 'partner-subnet' is in 'partner.example'" in m and "certificate" in m for _, m in errors)


def test_missing_domain_controller_exemption_warns():
    text = TWO_HOSTS[: TWO_HOSTS.index("exemptions:")] + TWO_HOSTS[TWO_HOSTS.index("policies:") :]
    warnings = [m for _, severity, m in problems_of(text) if severity == "warning"]
    assert any("no exemption for domain controller traffic to 10.0.0.10, 10.0.0.11" in m and "add an exemption" in m for m in warnings)


def test_undeclared_domain_controllers_warn():
    text = TWO_HOSTS.replace("    domain_controllers: [10.0.0.10, 10.0.0.11]\n", "    {}\n").replace("  corp.example:\n    {}\n", "  corp.example: {}\n")
    warnings = [m for _, severity, m in problems_of(text) if severity == "warning"]
    assert any("declares no domain_controllers" in m for m in warnings)


def test_ikev2_with_kerberos_rejected():
    text = TWO_HOSTS.replace("    crypto: strong\n", "    crypto: strong\n    key_module: IKEv2\n")
    errors = errors_of(text)
    assert len(errors) == 1
    assert "key module IKEv2 does not support Kerberos" in errors[0][1]


def test_ikev2_with_certificates_allowed():
    text = TWO_HOSTS.replace("phase1: [{method: kerberos}]", "phase1: [{method: certificate, authority: 'CN=Root CA'}]")
    text = text.replace("    crypto: strong\n", "    crypto: strong\n    key_module: IKEv2\n")
    assert errors_of(text) == []


def test_phase2_auth_needs_authip():
    text = TWO_HOSTS.replace("phase1: [{method: kerberos}]", "phase1: [{method: kerberos}]\n    phase2: [{method: kerberos, identity: user}]")
    text = text.replace("    crypto: strong\n", "    crypto: strong\n    key_module: IKEv1\n")
    errors = errors_of(text)
    assert any("phase 2 authentication needs AuthIP" in m for _, m in errors)


def test_conflicting_actions_on_same_traffic():
    text = TWO_HOSTS + "  - name: app-db-request\n    endpoint1: [APP-SRV01]\n    endpoint2: [10.0.1.0/24]\n    security: request\n    auth: kerberos\n    crypto: strong\n"
    errors = errors_of(text)
    assert any("conflict on host 'APP-SRV01'" in m and "'app-db'" in m and "'app-db-request'" in m for _, m in errors)


def test_disjoint_ports_do_not_conflict():
    text = TWO_HOSTS.replace("    security: require\n", "    protocol: TCP\n    endpoint2_ports: [1433]\n    security: require\n")
    text += "  - name: app-db-web\n    endpoint1: [APP-SRV01]\n    endpoint2: [DB-SRV01]\n    protocol: TCP\n    endpoint2_ports: [443]\n    security: request\n    auth: kerberos\n    crypto: strong\n"
    assert errors_of(text) == []


def test_override_without_common_crypto_rejected():
    text = TWO_HOSTS.replace(
        "crypto:\n",
        "crypto:\n  gcm:\n    main_mode: [{encryption: AES128, hash: SHA384, key_exchange: DH19}]\n"
        "    quick_mode: [{encapsulation: ESP, encryption: AESGCM256, integrity: AESGMAC256}]\n    pfs_group: DH14\n",
    ).replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    policy_overrides:\n      app-db: {crypto: gcm}\n")
    errors = errors_of(text)
    line = text.splitlines().index("      app-db: {crypto: gcm}") + 1
    assert (line, "policy 'app-db' between APP-SRV01 and DB-SRV01: crypto profiles 'strong' and 'gcm' share no main mode proposal, so main mode negotiation would fail") in errors
    assert any("share no quick mode proposal" in m for _, m in errors)


def test_override_require_against_none_rejected():
    # Request inbound, None outbound is a valid rule, but the peer requires
    # IPsec inbound, so DB-SRV01's clear traffic to APP-SRV01 is dropped.
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    policy_overrides:\n      app-db: {inbound_security: Request, outbound_security: None}\n")
    errors = errors_of(text)
    assert any("would be dropped" in m and "from DB-SRV01 to APP-SRV01" in m for _, m in errors)


def test_override_with_invalid_combination_rejected():
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    policy_overrides:\n      app-db: {inbound_security: None}\n")
    errors = errors_of(text)
    assert any("inbound None with outbound Require is not a combination Windows supports" in m for _, m in errors)


def test_override_to_exemption_rejected():
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    policy_overrides:\n      app-db: {inbound_security: None, outbound_security: None}\n")
    errors = errors_of(text)
    assert any("turns policy 'app-db' into an exemption" in m for _, m in errors)


def test_empty_group_endpoint_rejected():
    text = TWO_HOSTS.replace("endpoint1: [APP-SRV01]", "endpoint1: [web]") + "groups:\n  web: []\n"
    errors = errors_of(text)
    assert any("endpoint1 of policy 'app-db' resolves to no address" in m and "'any'" in m for _, m in errors)


def test_override_request_is_compatible():
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    policy_overrides:\n      app-db: {security: request}\n")
    assert errors_of(text) == []
    plan = plan_of(text)
    assert rule(plan, "DB-SRV01", "app-db-endpoint2").inbound_security == "Request"
    assert rule(plan, "APP-SRV01", "app-db-endpoint1").inbound_security == "Require"


def test_override_of_unknown_policy():
    text = TWO_HOSTS.replace("    ip: [10.0.1.20]\n", "    ip: [10.0.1.20]\n    policy_overrides:\n      app-dbb: {security: request}\n")
    errors = errors_of(text)
    assert any("overrides unknown policy 'app-dbb'" in m and "did you mean 'app-db'" in m for _, m in errors)


def test_policy_without_hosts_warns():
    text = TWO_HOSTS + "  - name: nowhere\n    endpoint1: [192.168.9.0/24]\n    endpoint2: [192.168.8.0/24]\n    auth: kerberos\n    crypto: strong\n"
    warnings = [m for _, severity, m in problems_of(text) if severity == "warning"]
    assert any("policy 'nowhere' matches no managed host" in m for m in warnings)


def test_overlapping_main_mode_rules_conflict():
    # A host pair inside a subnet policy, with another crypto profile: both
    # main mode rules match the pair's main mode.
    text = TWO_HOSTS.replace("  domain-controllers: [10.0.0.10, 10.0.0.11]\n", "  domain-controllers: [10.0.0.10, 10.0.0.11]\n  vlan: [10.0.1.0/24]\n")
    text = text.replace("    pfs_group: DH14\n", "    pfs_group: DH14\n  other:\n    main_mode: [{encryption: AES256, hash: SHA384, key_exchange: DH14}]\n"
                        "    quick_mode: [{encapsulation: ESP, encryption: AES256, integrity: SHA256}]\n")
    text += "  - name: vlan-wide\n    endpoint1: [vlan]\n    endpoint2: [vlan]\n    auth: kerberos\n    crypto: other\n"

    conflicts = [(line, message) for line, message in errors_of(text) if "cover overlapping addresses with different crypto or auth" in message]

    assert conflicts, errors_of(text)
    # Reported at one of the two policies, where the fix goes, not at the hosts section.
    policy_lines = {number for number, line in enumerate(text.splitlines(), 1) if line.startswith("  - name: app-db") or line.startswith("  - name: vlan-wide")}
    assert {line for line, _ in conflicts} <= policy_lines
