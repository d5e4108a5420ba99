"""What verification expects of each planned pair: the probe to send and the SAs it should produce. Pure.

A probe is a TCP connection (Test-NetConnection) from one host to the other
on a port the rule covers, or a ping for an ICMP exemption. Windows starts
negotiating on that first packet; the SAs then show which auth method and
algorithms were agreed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..inventory.model import AuthMethod, Host, MainModeProposal, QuickModeProposal
from ..objects import IPsecRule, MainModeCryptoSet, MainModeRule, Phase1AuthSet, QuickModeCryptoSet
from ..planner.model import HostPlan, MirrorPair, Plan
from ..planner.traffic import address_covered

# SMB listens on every Windows server by default, so a TCP probe to it
# succeeds whenever IPsec lets the connection through.
DEFAULT_PROBE_PORT = 445


@dataclass(frozen=True)
class ExpectedSecurity:
    """The auth methods and proposals both sides of a pair share, in the initiator's order."""

    auth_methods: tuple[AuthMethod, ...]
    main_mode: tuple[MainModeProposal, ...]
    quick_mode: tuple[QuickModeProposal, ...]
    pfs_group: str


@dataclass(frozen=True)
class PairProbe:
    policy: str
    initiator: str
    responder: str
    initiator_rule: str
    responder_rule: str
    initiator_address: str
    responder_address: str
    protocol: str  # "TCP" or "ICMPv4"/"ICMPv6" for a ping
    port: int | None
    exemption: bool
    expected: ExpectedSecurity | None
    skip_reason: str | None = None

    @property
    def label(self) -> str:
        target = f"{self.responder_address}:{self.port}" if self.port else self.responder_address
        return f"{self.initiator} -> {self.responder} ({self.protocol} {target})"


def _pick_addresses(initiator: Host, initiator_rule: IPsecRule, responder: Host) -> tuple[str, str] | None:
    """Choose a data-plane address of each host inside the rule, IPv4 first, both of one family."""
    for version in (4, 6):
        local = [a for a in initiator.ip_addresses if a.version == version and address_covered(a, initiator_rule.local_address)]
        remote = [a for a in responder.ip_addresses if a.version == version and address_covered(a, initiator_rule.remote_address)]
        if local and remote:
            return str(local[0]), str(remote[0])
    return None


def _first_port(ports: tuple[str, ...]) -> int:
    return int(ports[0].partition("-")[0])


def _auth_methods(host_plan: HostPlan, rule: IPsecRule) -> tuple[AuthMethod, ...]:
    auth_set = host_plan.object(Phase1AuthSet.kind, rule.phase1_auth_set or "")
    return auth_set.proposals if isinstance(auth_set, Phase1AuthSet) else ()


def _main_mode_proposals(host_plan: HostPlan, rule: IPsecRule) -> tuple[MainModeProposal, ...]:
    # The planner names a rule's main mode rule after it: <group>-mmrule-<policy>[-side].
    main_mode_rule = host_plan.object(MainModeRule.kind, rule.name.replace("-rule-", "-mmrule-", 1))
    if not isinstance(main_mode_rule, MainModeRule):
        return ()
    crypto_set = host_plan.object(MainModeCryptoSet.kind, main_mode_rule.main_mode_crypto_set)
    return crypto_set.proposals if isinstance(crypto_set, MainModeCryptoSet) else ()


def _quick_mode(host_plan: HostPlan, rule: IPsecRule) -> QuickModeCryptoSet | None:
    crypto_set = host_plan.object(QuickModeCryptoSet.kind, rule.quick_mode_crypto_set or "")
    return crypto_set if isinstance(crypto_set, QuickModeCryptoSet) else None


def expected_security(initiator_plan: HostPlan, initiator_rule: IPsecRule, responder_plan: HostPlan, responder_rule: IPsecRule) -> ExpectedSecurity:
    def shared(first, second):
        return tuple(item for item in first if item in second)

    initiator_quick = _quick_mode(initiator_plan, initiator_rule)
    responder_quick = _quick_mode(responder_plan, responder_rule)
    return ExpectedSecurity(
        auth_methods=shared(_auth_methods(initiator_plan, initiator_rule), _auth_methods(responder_plan, responder_rule)),
        main_mode=shared(_main_mode_proposals(initiator_plan, initiator_rule), _main_mode_proposals(responder_plan, responder_rule)),
        quick_mode=shared(
            initiator_quick.proposals if initiator_quick else (),
            responder_quick.proposals if responder_quick else (),
        ),
        pfs_group=initiator_quick.perfect_forward_secrecy_group if initiator_quick else "None",
    )


def pair_probe(plan: Plan, pair: MirrorPair, probe_ports: dict[str, int]) -> PairProbe:
    """Build the probe of one mirrored pair; a pair that cannot be probed carries ``skip_reason``."""
    plan_a, plan_b = plan.host(pair.host_a), plan.host(pair.host_b)
    rule_a = plan_a.object(IPsecRule.kind, pair.rule_a)
    rule_b = plan_b.object(IPsecRule.kind, pair.rule_b)
    assert isinstance(rule_a, IPsecRule) and isinstance(rule_b, IPsecRule)

    # The host whose rule has no local port initiates, so that the
    # destination port is the one the rule names.
    if rule_a.local_port and not rule_a.remote_port:
        plan_a, plan_b, rule_a, rule_b = plan_b, plan_a, rule_b, rule_a
    initiator, responder = plan_a.host, plan_b.host

    skip = None
    protocol = "TCP"
    port: int | None = None
    if rule_a.is_exemption and rule_a.protocol in ("ICMPv4", "ICMPv6"):
        protocol, port = rule_a.protocol, None
    elif rule_a.protocol not in ("Any", "TCP", "6"):
        skip = f"the rule covers only {rule_a.protocol}, and the probe (Test-NetConnection) uses TCP or ping"
    elif rule_a.local_port:
        skip = "the rule fixes the initiator's source port, which Test-NetConnection cannot choose"
    elif rule_a.remote_port:
        port = _first_port(rule_a.remote_port)
    else:
        port = probe_ports.get(pair.policy, DEFAULT_PROBE_PORT)

    addresses = _pick_addresses(initiator, rule_a, responder)
    if addresses is None:
        skip = skip or "the hosts have no addresses of one IP version inside the rule"
        addresses = ("", "")
    if protocol == "ICMPv4" and addresses[0] and ipaddress.ip_address(addresses[0]).version != 4:
        skip = skip or "an ICMPv4 exemption between IPv6 addresses cannot be probed"

    expected = None if rule_a.is_exemption else expected_security(plan_a, rule_a, plan_b, rule_b)
    return PairProbe(
        policy=pair.policy,
        initiator=initiator.name,
        responder=responder.name,
        initiator_rule=rule_a.name,
        responder_rule=rule_b.name,
        initiator_address=addresses[0],
        responder_address=addresses[1],
        protocol=protocol,
        port=port,
        exemption=rule_a.is_exemption,
        expected=expected,
        skip_reason=skip,
    )


def plan_probes(plan: Plan, probe_ports: dict[str, int] | None = None) -> list[PairProbe]:
    """Return one probe per mirrored pair whose two hosts are both in the plan (see --limit)."""
    names = {host_plan.host.name for host_plan in plan.hosts}
    return [pair_probe(plan, pair, probe_ports or {}) for pair in plan.pairs if pair.host_a in names and pair.host_b in names]
