"""The controller's WinRM path: plan-time conflicts, the management exemption and the local address helper.

Every address below is rule data. Only ``local_address_towards`` touches the
network stack, and only with loopback addresses.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from ipsec_deploy.cli import app
from ipsec_deploy.inventory import parse_inventory
from ipsec_deploy.objects import IPsecRule
from ipsec_deploy.planner import build_plan
from ipsec_deploy.planner.management import ManagementConflict, management_path_problems
from ipsec_deploy.transport import local_address as local_address_module
from ipsec_deploy.transport.local_address import local_address_towards
from tests.inventory_texts import errors_of, plan_of
from tests.test_planner_properties import inventories
from tests.test_render_powershell import flattened, parse, script_calls, spec_problems, syntax_problems

EXEMPTION = "ipsec-deploy-rule-management-exemption"
FIX = "set management_exemption: true to plan a narrow exemption for the controller's WinRM traffic, or narrow the rule"

# Host A is reached by DNS name, so its data-plane address counts as its
# management address. Host B is reached by IP address over HTTP (port 5985).
# The policy requires IPsec for all traffic inside 10.0.1.0/24.
HOSTS = """\
hosts:
  A:
    address: a.corp.example
    ip: [10.0.1.10]
  B:
    address: 10.0.1.20
    ip: [10.0.1.20]
    connection: {transport: http}
networks:
  admin-lan: [10.0.9.0/28]
auth:
  corp-ca:
    phase1: [{method: certificate, authority: "CN=Corp CA"}]
crypto:
  strong:
    main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}]
    quick_mode: [{encryption: AES256, integrity: SHA256}]
"""

VLAN_POLICY = """\
policies:
  - name: vlan
    endpoint1: [10.0.1.0/24]
    endpoint2: [10.0.1.0/24]
    auth: corp-ca
    crypto: strong
"""


# Both hosts to the admin subnet, so the rules' remote side is 10.0.9.0/24.
TO_ADMIN_POLICY = """\
policies:
  - name: to-admin
    endpoint1: [A, B]
    endpoint2: [10.0.9.0/24]
    auth: corp-ca
    crypto: strong
"""

EXAMPLE = Path(__file__).resolve().parent.parent / "inventory" / "example.yaml"


def inventory(top: str = "", policies: str = VLAN_POLICY, exemptions: str = "") -> str:
    return top + HOSTS + exemptions + policies


def line_of(text: str, needle: str) -> int:
    """Return the 1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def rule_on(plan, host: str, name: str) -> IPsecRule:
    rule = plan.host(host).object("ipsec_rule", name)
    assert isinstance(rule, IPsecRule), (host, name)
    return rule


# -- conflicts -------------------------------------------------------------


def test_conflict_rejected_with_line():
    text = inventory("controller: [10.0.1.50]\n")
    errors = errors_of(text)

    policy_line = line_of(text, "- name: vlan")
    assert [line for line, _ in errors] == [policy_line, policy_line]
    for (_, message), host, address, port in zip(errors, ("A", "B"), ("10.0.1.10", "10.0.1.20"), (5986, 5985)):
        assert f"rule 'ipsec-deploy-rule-vlan' of policy 'vlan' on host '{host}'" in message
        assert f"from controller 10.0.1.50 to {address} TCP port {port}" in message
        assert "(Require/Require)" in message
        assert message.endswith(FIX)


def test_no_controller_no_check():
    assert errors_of(inventory()) == []


def test_request_rule_also_conflicts():
    policies = VLAN_POLICY.replace("    auth: corp-ca\n", "    security: request\n    auth: corp-ca\n")
    errors = errors_of(inventory("controller: [10.0.1.50]\n", policies))
    assert len(errors) == 2
    assert all("(Request/Request)" in message for _, message in errors)


def test_other_local_ports_not_conflict():
    policies = VLAN_POLICY.replace("    auth: corp-ca\n", "    protocol: TCP\n    endpoint1_ports: [443]\n    endpoint2_ports: [443]\n    auth: corp-ca\n")
    assert errors_of(inventory("controller: [10.0.1.50]\n", policies)) == []


def test_udp_rule_not_conflict():
    policies = VLAN_POLICY.replace("    auth: corp-ca\n", "    protocol: UDP\n    auth: corp-ca\n")
    assert errors_of(inventory("controller: [10.0.1.50]\n", policies)) == []


def test_winrm_port_range_conflicts():
    policies = TO_ADMIN_POLICY.replace("    auth: corp-ca\n", "    protocol: TCP\n    endpoint1_ports: [5980-5990]\n    auth: corp-ca\n")
    assert len(errors_of(inventory("controller: [10.0.9.5]\n", policies))) == 2


def test_remote_port_filter_not_conflict():
    # The controller's source port is ephemeral, so a rule that filters on
    # the remote port is not counted as matching its WinRM traffic.
    policies = """\
policies:
  - name: to-web
    endpoint1: [10.0.1.0/24]
    endpoint2: [10.0.0.0/16]
    protocol: TCP
    endpoint2_ports: [443]
    auth: corp-ca
    crypto: strong
"""
    assert errors_of(inventory("controller: [10.0.1.50]\n", policies)) == []


def test_other_remote_addresses_not_conflict():
    policies = """\
policies:
  - name: a-b
    endpoint1: [A]
    endpoint2: [B]
    auth: corp-ca
    crypto: strong
"""
    assert errors_of(inventory("controller: [10.0.1.50]\n", policies)) == []


def test_controller_outside_rule_not_conflict():
    assert errors_of(inventory("controller: [10.0.9.5]\n")) == []


# WinRM over HTTP and HTTPS from 10.0.1.50 to every host of the VLAN.
WINRM_EXEMPTION = """\
exemptions:
  - name: winrm-from-admin
    endpoint1: [10.0.1.0/24]
    endpoint2: [10.0.1.50]
    protocol: TCP
    endpoint1_ports: [5985, 5986]
"""


def test_existing_exemption_clears_conflict():
    assert errors_of(inventory("controller: [10.0.1.50]\n", exemptions=WINRM_EXEMPTION)) == []


def test_exemption_for_one_port_clears_one_host():
    exemptions = """\
exemptions:
  - name: winrm-https-from-admin
    endpoint1: [10.0.1.0/24]
    endpoint2: [10.0.1.50]
    protocol: TCP
    endpoint1_ports: [5986]
"""
    errors = errors_of(inventory("controller: [10.0.1.50]\n", exemptions=exemptions))
    assert len(errors) == 1
    assert "on host 'B'" in errors[0][1]
    assert "TCP port 5985" in errors[0][1]


def test_exemption_with_remote_port_does_not_clear():
    exemptions = WINRM_EXEMPTION + "    endpoint2_ports: [50000-60000]\n"
    assert len(errors_of(inventory("controller: [10.0.1.50]\n", exemptions=exemptions))) == 2


def test_partial_exemption_of_controller_subnet():
    plan = plan_of(inventory(policies=TO_ADMIN_POLICY))
    subnet = ipaddress.ip_network("10.0.9.0/28")
    assert [c.controller for c in management_path_problems(plan, [subnet])] == ["10.0.9.0/28", "10.0.9.0/28"]

    half = """\
exemptions:
  - name: admin-low
    endpoint1: [10.0.1.0/24]
    endpoint2: [10.0.9.0/29]
    protocol: TCP
"""
    plan = plan_of(inventory(policies=TO_ADMIN_POLICY, exemptions=half))
    assert len(management_path_problems(plan, [subnet])) == 2

    both = half + """\
  - name: admin-high
    endpoint1: [10.0.1.0/24]
    endpoint2: [10.0.9.8/29]
    protocol: TCP
"""
    plan = plan_of(inventory(policies=TO_ADMIN_POLICY, exemptions=both))
    assert management_path_problems(plan, [subnet]) == []


def test_controller_network_name():
    text = inventory("controller: [admin-lan]\n", policies=TO_ADMIN_POLICY)
    errors = errors_of(text)
    assert len(errors) == 2
    assert all("from controller 10.0.9.0/28 to" in message for _, message in errors)

    plan = plan_of("management_exemption: true\n" + text)
    assert rule_on(plan, "A", EXEMPTION).remote_address == ("10.0.9.0/28",)


# -- executor entry point --------------------------------------------------


def test_problems_with_extra_addresses():
    plan = plan_of(inventory("controller: [10.0.9.5]\n"))
    assert management_path_problems(plan, ["10.0.9.5"]) == []

    conflicts = management_path_problems(plan, ["10.0.9.5", "10.0.1.77"])
    assert conflicts == [
        ManagementConflict("A", "ipsec-deploy-rule-vlan", "vlan", "Require", "Require", "10.0.1.77", ("10.0.1.10",), 5986),
        ManagementConflict("B", "ipsec-deploy-rule-vlan", "vlan", "Require", "Require", "10.0.1.77", ("10.0.1.20",), 5985),
    ]


def test_problems_ipv4_mapped_address():
    plan = plan_of(inventory())
    conflicts = management_path_problems(plan, ["::ffff:10.0.1.77"])
    assert [c.controller for c in conflicts] == ["10.0.1.77", "10.0.1.77"]


def test_problems_with_connected_addresses():
    # The executor reads the address it connected to from its socket. An
    # address outside the rule replaces the inferred one.
    plan = plan_of(inventory())
    conflicts = management_path_problems(plan, ["10.0.1.77"], {"A": ["192.168.5.5"]})
    assert [c.host for c in conflicts] == ["B"]


def test_describe_after_exemption_planned():
    conflict = ManagementConflict("A", "r", "p", "Require", "Require", "10.0.1.77", ("10.0.1.10",), 5986)
    assert conflict.describe(management_exemption=True).endswith(
        "add 10.0.1.77 to controller so that the planned management exemption covers it, or narrow the rule"
    )


# -- the management exemption ----------------------------------------------


def test_management_exemption_planned():
    plan = plan_of(inventory("controller: [10.0.1.50]\nmanagement_exemption: true\n"))

    for host, local, port in (("A", "10.0.1.10", "5986"), ("B", "10.0.1.20", "5985")):
        rule = rule_on(plan, host, EXEMPTION)
        assert rule.is_exemption
        assert rule.local_address == (local,)
        assert rule.remote_address == ("10.0.1.50",)
        assert rule.protocol == "TCP"
        assert rule.local_port == (port,)
        assert rule.remote_port == ()
        assert rule.phase1_auth_set is None
        assert rule.quick_mode_crypto_set is None
        assert rule.key_module == "Default"
        assert rule.group == "ipsec-deploy"
        assert rule.display_name == "ipsec-deploy exemption management-exemption"
        assert rule.description.startswith("Managed by ipsec-deploy (exemption management-exemption")
        assert rule.mirrors == ()

    assert [(p.policy, p.host_a, p.host_b) for p in plan.pairs] == [("vlan", "A", "B")]


def test_management_exemption_only_with_rules():
    policies = """\
policies:
  - name: a-only
    endpoint1: [A]
    endpoint2: [10.0.2.0/24]
    auth: corp-ca
    crypto: strong
"""
    plan = plan_of(inventory("controller: [10.0.1.50]\nmanagement_exemption: true\n", policies))
    assert plan.host("A").object("ipsec_rule", EXEMPTION) is not None
    assert plan.host("B").object("ipsec_rule", EXEMPTION) is None


def test_management_exemption_address_family():
    # Host A is reached by IPv4 only, so an IPv6 controller address is left
    # out of its exemption.
    plan = plan_of(inventory("controller: [10.0.1.50, 'fd00:9::5']\nmanagement_exemption: true\n"))
    assert rule_on(plan, "A", EXEMPTION).remote_address == ("10.0.1.50",)


def test_management_exemption_needs_controller():
    text = inventory("management_exemption: true\n")
    assert errors_of(text) == [
        (
            1,
            "management_exemption: true needs the admin workstations' addresses, which are the remote side of the exemption: "
            "add 'controller: [ADDRESS]' to the inventory",
        )
    ]


def test_management_exemption_name_reserved():
    exemptions = """\
exemptions:
  - name: management-exemption
    endpoint1: [A]
    endpoint2: [10.0.0.10]
"""
    text = inventory("controller: [10.0.1.50]\nmanagement_exemption: true\n", exemptions=exemptions)
    errors = errors_of(text)
    assert errors == [
        (
            line_of(text, "- name: management-exemption"),
            "exemption name 'management-exemption' is taken by the exemption that management_exemption: true plans; rename the exemption",
        )
    ]
    # Without the option the name is free.
    assert errors_of(inventory("controller: [10.0.9.5]\n", exemptions=exemptions)) == []


def test_managed_controller_rejected():
    text = inventory("controller: [10.0.1.10]\nmanagement_exemption: true\n")
    errors = errors_of(text)
    assert len(errors) == 1
    line, message = errors[0]
    assert line == line_of(text, "- name: vlan")
    assert "controller includes managed host 'A', whose rule 'ipsec-deploy-rule-vlan'" in message
    assert "B (10.0.1.20 port 5985)" in message


def test_management_exemption_false_changes_nothing():
    with_option = plan_of(inventory("controller: [10.0.9.5]\nmanagement_exemption: false\n"))
    assert [hp.objects for hp in with_option.hosts] == [hp.objects for hp in plan_of(inventory()).hosts]


def test_plan_json_shows_exemption(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(inventory("controller: [10.0.1.50]\nmanagement_exemption: true\n"), encoding="utf-8")

    result = CliRunner().invoke(app, ["plan", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output

    document = json.loads(result.stdout)
    for host in document["hosts"]:
        rules = [obj for obj in host["objects"] if obj["name"] == EXEMPTION]
        assert len(rules) == 1, host["name"]
        assert rules[0]["policy"] == "management-exemption"
        assert rules[0]["mirrors"] == []
        parameters = {p["name"]: p["value"] for p in rules[0]["new"]["parameters"]}
        assert parameters["InboundSecurity"] == "None"
        assert parameters["RemoteAddress"] == ["10.0.1.50"]
        assert parameters["Protocol"] == "TCP"


def test_plan_powershell_shows_exemption(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(inventory("controller: [10.0.1.50]\nmanagement_exemption: true\n"), encoding="utf-8")

    result = CliRunner().invoke(app, ["plan", str(path), "--format", "powershell", "--out", str(tmp_path / "scripts")])
    assert result.exit_code == 0, result.output

    for host, port in (("A", "5986"), ("B", "5985")):
        script = (tmp_path / "scripts" / f"{host}.ps1").read_text(encoding="utf-8-sig")
        assert syntax_problems(parse(script)) == [], host
        calls = list(flattened(script_calls(script)))
        assert [problem for call in calls for problem in spec_problems(call)] == [], host

        exemption = [c for c in calls if dict(c.parameters).get("IPsecRuleName") == EXEMPTION]
        assert len(exemption) == 1, host
        parameters = dict(exemption[0].parameters)
        assert parameters["LocalPort"] == (port,)
        assert parameters["OutboundSecurity"] == "None"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inventories())
def test_exemption_adds_only_itself(document):
    # A controller outside every generated subnet: the option adds the
    # exemption to hosts with IPsec rules and leaves the rest of the plan,
    # mirrors and pairs included, unchanged.
    without = build_plan(parse_inventory(yaml.safe_dump(document, sort_keys=False), "generated.yaml"))
    with_exemption = dict(document, controller=["10.9.0.5"], management_exemption=True)
    plan = build_plan(parse_inventory(yaml.safe_dump(with_exemption, sort_keys=False), "generated.yaml"))

    assert plan.pairs == without.pairs
    for host_plan, plain in zip(plan.hosts, without.hosts):
        has_rules = any(not rule.is_exemption for rule in plain.rules)
        assert (host_plan.object("ipsec_rule", EXEMPTION) is not None) == has_rules, host_plan.host.name
        assert [obj for obj in host_plan.objects if obj.name != EXEMPTION] == list(plain.objects)
        assert [(r.name, r.mirrors) for r in host_plan.rules if r.name != EXEMPTION] == [(r.name, r.mirrors) for r in plain.rules]


# -- inventory checks ------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ("controller: []\n", "controller is empty: list the addresses of the admin workstations that run ipsec-deploy, or remove the key"),
        ("controller: [admin-lam]\n", "unknown network 'admin-lam' in controller (did you mean 'admin-lan'?): use an IP address, a subnet such as 10.0.9.0/24, or a name defined under networks"),
        ("controller: [A]\n", "controller 'A' is a host: controller takes IP addresses, subnets or network names, so write the admin workstation's address"),
        ("controller: any\n", "controller 'any' would take every address as the admin workstation: list its addresses or subnets"),
        ("controller: [0.0.0.0/0]\n", "controller 0.0.0.0/0 covers every address: list the admin workstations' addresses or subnets"),
        ("controller: [10.0.9.5/24]\n", "invalid subnet '10.0.9.5/24' for controller: it has host bits set; did you mean 10.0.9.0/24?"),
        ("management_exemption: yes please\n", "'management_exemption' in the inventory must be true or false, not 'yes please'"),
    ],
)
def test_controller_errors(top, message):
    assert (1, message) in errors_of(inventory(top))


def test_controller_key_misspelled():
    errors = errors_of(inventory("controler: [10.0.9.5]\n"))
    assert len(errors) == 1
    assert errors[0][1].startswith("unknown key 'controler' in the inventory (did you mean 'controller'?)")


def test_controller_single_address():
    plan_inventory = parse_inventory(inventory("controller: 10.0.9.5\n"), "inv.yaml")
    assert plan_inventory.controller == (ipaddress.ip_network("10.0.9.5/32"),)
    assert plan_inventory.controller_location.line == 1


def test_example_inventory_plans():
    assert errors_of(EXAMPLE.read_text(encoding="utf-8")) == []


# -- local address helper --------------------------------------------------


def test_local_address_ipv4_loopback():
    assert local_address_towards("127.0.0.1", 5985) == "127.0.0.1"


def test_local_address_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect(("::1", 5986))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    assert local_address_towards("::1", 5986) == "::1"


def test_local_address_resolution_failure(monkeypatch):
    def fail(*arguments, **keywords):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(local_address_module.socket, "getaddrinfo", fail)
    assert local_address_towards("127.0.0.1", 5985) is None
