"""Properties of the planner over generated inventories: exact mirrors and stable plans."""

from __future__ import annotations

import ipaddress
import random

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec_deploy.inventory import InventoryError, parse_inventory
from ipsec_deploy.planner import build_plan
from ipsec_deploy.planner.traffic import address_covered

SUBNETS = ["10.0.1.0/24", "10.0.2.0/24", "10.0.0.0/16"]


@st.composite
def inventories(draw):
    host_count = draw(st.integers(min_value=2, max_value=6))
    hosts = {}
    for index in range(host_count):
        subnet = draw(st.sampled_from(["10.0.1", "10.0.2", "10.0.3"]))
        hosts[f"SRV{index:02d}"] = {"ip": [f"{subnet}.{index + 10}"], "domain": "corp.example"}
    names = sorted(hosts)

    groups = {}
    if draw(st.booleans()):
        groups["grp"] = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))

    references = names + list(groups) + SUBNETS

    def endpoint():
        if draw(st.integers(0, 9)) == 0:
            return "any"
        return draw(st.lists(st.sampled_from(references), min_size=1, max_size=3, unique=True))

    policies = []
    for index in range(draw(st.integers(min_value=1, max_value=4))):
        policy = {
            "name": f"p{index}",
            "endpoint1": endpoint(),
            "endpoint2": endpoint(),
            # One security level for every policy keeps generated
            # inventories free of deliberate conflicts.
            "security": "require",
            "auth": "kerberos",
            "crypto": "strong",
        }
        if draw(st.booleans()):
            policy["protocol"] = "TCP"
            if draw(st.booleans()):
                policy["endpoint2_ports"] = [draw(st.sampled_from([443, 1433, "5000-5100"]))]
            if draw(st.booleans()):
                policy["endpoint1_ports"] = [draw(st.sampled_from([80, 8080]))]
        policies.append(policy)

    exemptions = []
    if draw(st.booleans()):
        exemptions.append({"name": "icmp", "endpoint1": endpoint(), "endpoint2": endpoint(), "protocol": "ICMPv4"})

    document = {
        "forests": {"corp.example": {}},
        "hosts": hosts,
        "auth": {"kerberos": {"phase1": [{"method": "kerberos"}]}},
        "crypto": {
            "strong": {
                "main_mode": [{"encryption": "AES256", "hash": "SHA256", "key_exchange": "DH14"}],
                "quick_mode": [{"encapsulation": "ESP", "encryption": "AES256", "integrity": "SHA256"}],
            }
        },
        "policies": policies,
        "exemptions": exemptions,
    }
    if groups:
        document["groups"] = groups
    return document


def plan_document(document):
    return build_plan(parse_inventory(yaml.safe_dump(document, sort_keys=False), "generated.yaml"))


def planned_content(plan):
    """Return what a plan puts on hosts, leaving out where the inventory wrote each host."""
    return [(hp.host.name, hp.objects) for hp in plan.hosts], plan.pairs


def host_in_remote(rule, host) -> bool:
    return any(address_covered(address, rule.remote_address) for address in host.ip_addresses)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inventories())
def test_every_rule_has_exactly_one_mirror(document):
    plan = plan_document(document)
    hosts = {hp.host.name: hp for hp in plan.hosts}

    for host_plan in plan.hosts:
        for rule in host_plan.rules:
            expected_peers = sorted(
                name for name, peer_plan in hosts.items() if name != host_plan.host.name and host_in_remote(rule, peer_plan.host)
            )
            mirrored_peers = sorted(m.host for m in rule.mirrors)
            assert mirrored_peers == expected_peers, (rule.name, host_plan.host.name)

            for peer in expected_peers:
                swapped = [
                    other
                    for other in hosts[peer].rules
                    if other.policy == rule.policy
                    and other.local_address == rule.remote_address
                    and other.remote_address == rule.local_address
                    and other.local_port == rule.remote_port
                    and other.remote_port == rule.local_port
                    and other.protocol == rule.protocol
                ]
                assert len(swapped) == 1, (rule.name, host_plan.host.name, peer)
                assert any(m.host == peer and m.rule == swapped[0].name for m in rule.mirrors)


@settings(max_examples=40, deadline=None)
@given(inventories(), st.randoms(use_true_random=False))
def test_replanning_is_stable(document, rng: random.Random):
    first = plan_document(document)
    assert plan_document(document) == first

    # Listing hosts in another order must not rename or reorder anything.
    shuffled_hosts = list(document["hosts"].items())
    rng.shuffle(shuffled_hosts)
    reordered = dict(document, hosts=dict(shuffled_hosts))
    assert planned_content(plan_document(reordered)) == planned_content(first)


@settings(max_examples=40, deadline=None)
@given(inventories())
def test_rules_cover_only_member_hosts(document):
    plan = plan_document(document)
    for host_plan in plan.hosts:
        for rule in host_plan.rules:
            # A host named in an endpoint contributes its addresses to it, so
            # every rule's local side covers one of the host's own addresses.
            own = [ipaddress.ip_address(a) for a in host_plan.host.ip_addresses]
            assert any(address_covered(address, rule.local_address) for address in own), (rule.name, host_plan.host.name)


def test_generated_inventory_example_is_valid():
    # A fixed inventory in the generated shape, with the short forms of
    # auth methods and quick mode proposals.
    try:
        plan_document(
            {
                "forests": {"corp.example": {}},
                "hosts": {"A": {"ip": ["10.0.1.10"], "domain": "corp.example"}, "B": {"ip": ["10.0.1.20"], "domain": "corp.example"}},
                "auth": {"kerberos": {"phase1": ["kerberos"]}},
                "crypto": {"strong": {"main_mode": [{"encryption": "AES256", "hash": "SHA256", "key_exchange": "DH14"}], "quick_mode": [{"encryption": "AES256", "integrity": "SHA256"}]}},
                "policies": [{"name": "p", "endpoint1": ["A"], "endpoint2": ["B"], "auth": "kerberos", "crypto": "strong"}],
            }
        )
    except InventoryError as error:
        raise AssertionError([str(p) for p in error.problems]) from None
