"""Checks that need the whole plan: mirrored pairs, forests, key modules, conflicts, exemptions."""

from __future__ import annotations

from itertools import combinations

from ..inventory.model import AuthMethod, Host, Inventory, Location, Policy
from ..inventory.problems import ProblemCollector
from ..objects import IPsecRule, MainModeRule
from .model import Plan
from .traffic import address_covered, addresses_overlap, ports_overlap, protocols_overlap

# Keying protocols of each KeyModule value. On Server 2019 "Default" is
# IKEv1 plus AuthIP.
KEY_MODULE_PROTOCOLS = {
    "Default": frozenset({"IKEv1", "AuthIP"}),
    "IKEv1": frozenset({"IKEv1"}),
    "AuthIP": frozenset({"AuthIP"}),
    "IKEv2": frozenset({"IKEv2"}),
}

# New-NetIPsecRule documents IKEv2 as not supported with Kerberos, a
# pre-shared key or NTLM.
IKEV2_UNSUPPORTED = {"kerberos": "Kerberos", "pre_shared_key": "a pre-shared key", "ntlm": "NTLM"}


def check_plan(inventory: Inventory, plan, problems: ProblemCollector) -> None:
    checker = _PlanChecker(inventory, plan, problems)
    checker.check_policies()
    checker.check_pairs()
    checker.check_unmanaged_peers()
    checker.check_conflicts()
    checker.check_domain_controller_exemptions()


class _PlanChecker:
    def __init__(self, inventory: Inventory, plan: Plan, problems: ProblemCollector) -> None:
        self.inventory = inventory
        self.plan = plan
        self.problems = problems
        self.policies = {p.name: p for p in inventory.all_policies()}

    # -- helpers -------------------------------------------------------

    def policy_location(self, policy: Policy, host: Host | None = None) -> Location:
        if host is not None:
            override = host.override_for(policy.name)
            if override is not None and override.location is not None:
                return override.location
        return policy.location or Location(self.inventory.path, 1)

    def rule(self, host: str, name: str) -> IPsecRule:
        obj = self.plan.host(host).object("ipsec_rule", name)
        assert isinstance(obj, IPsecRule)
        return obj

    def auth_methods(self, rule: IPsecRule, phase: int) -> tuple[AuthMethod, ...]:
        name = rule.phase1_auth_set if phase == 1 else rule.phase2_auth_set
        if name is None:
            return ()
        prefix = f"{self.plan.managed_group}-p{phase}auth-"
        return self._auth_profile_methods(name.removeprefix(prefix), phase)

    def _auth_profile_methods(self, profile: str, phase: int) -> tuple[AuthMethod, ...]:
        auth = self.inventory.auth_profiles[profile]
        return auth.phase1 if phase == 1 else auth.phase2

    def crypto_profile(self, rule: IPsecRule):
        if rule.quick_mode_crypto_set is None:
            return None
        prefix = f"{self.plan.managed_group}-qmcrypto-"
        return self.inventory.crypto_profiles[rule.quick_mode_crypto_set.removeprefix(prefix)]

    def forests_trust(self, forest_a: str | None, forest_b: str | None) -> bool | None:
        """Return whether Kerberos can work between two forests; None when a forest is unknown."""
        if forest_a is None or forest_b is None:
            return None
        if forest_a == forest_b:
            return True
        a = self.inventory.forests.get(forest_a)
        b = self.inventory.forests.get(forest_b)
        # A trust declared on either forest counts both ways: Kerberos
        # IPsec between forests needs a two-way forest trust.
        return bool((a and forest_b in a.trusts) or (b and forest_a in b.trusts))

    def usable_methods(self, methods_a, methods_b, forest_a, forest_b) -> list[AuthMethod]:
        usable = []
        for method in methods_a:
            if not any(_same_method(method, other) for other in methods_b):
                continue
            if method.method == "kerberos" and self.forests_trust(forest_a, forest_b) is False:
                continue
            usable.append(method)
        return usable

    # -- checks --------------------------------------------------------

    def check_policies(self) -> None:
        rules_per_policy: dict[str, int] = {}
        key_module_problems: dict[tuple[Location, str, str], list[str]] = {}
        for host_plan in self.plan.hosts:
            for rule in host_plan.rules:
                rules_per_policy[rule.policy] = rules_per_policy.get(rule.policy, 0) + 1
                # Exemptions have no key module to check, and the planned
                # management exemption has no policy in the inventory.
                if rule.is_exemption:
                    continue
                policy = self.policies[rule.policy]
                location = self.policy_location(policy, host_plan.host)
                for reason in self.key_module_problems(rule):
                    key_module_problems.setdefault((location, policy.name, reason), []).append(host_plan.host.name)

        # One message per policy and reason, naming the hosts, rather than
        # one per host.
        for (location, policy_name, reason), hosts in key_module_problems.items():
            self.problems.error(location, f"policy '{policy_name}' (on {', '.join(sorted(set(hosts)))}): {reason}")

        for policy in self.inventory.all_policies():
            if policy.name not in rules_per_policy:
                kind = "exemption" if policy.is_exemption else "policy"
                self.problems.warning(self.policy_location(policy), f"{kind} '{policy.name}' matches no managed host, so it plans nothing: check its endpoints")

        for profile in self.inventory.auth_profiles.values():
            used_by = sorted(
                {rule.policy for hp in self.plan.hosts for rule in hp.rules if rule.phase1_auth_set == f"{self.plan.managed_group}-p1auth-{profile.name}"}
            )
            if used_by and any(m.method == "pre_shared_key" for m in profile.phase1):
                self.problems.warning(
                    profile.location,
                    f"auth profile '{profile.name}' uses a pre-shared key (policies: {', '.join(used_by)}): "
                    "pre-shared keys are for test labs only; use Kerberos or certificates in production",
                )

    def key_module_problems(self, rule: IPsecRule) -> list[str]:
        reasons = []
        if rule.key_module == "IKEv2":
            for method in self.auth_methods(rule, 1):
                if method.method in IKEV2_UNSUPPORTED:
                    reasons.append(
                        f"key module IKEv2 does not support {IKEV2_UNSUPPORTED[method.method]}; use certificate "
                        "authentication with IKEv2, or key module Default (IKEv1 and AuthIP)"
                    )
        if rule.phase2_auth_set and rule.key_module in ("IKEv1", "IKEv2"):
            reasons.append(
                f"phase 2 authentication needs AuthIP, but key module is {rule.key_module}; "
                "use key module Default or AuthIP, or drop phase2"
            )
        return reasons

    def check_pairs(self) -> None:
        for pair in self.plan.pairs:
            policy = self.policies[pair.policy]
            host_a = self.inventory.hosts[pair.host_a]
            host_b = self.inventory.hosts[pair.host_b]
            rule_a = self.rule(pair.host_a, pair.rule_a)
            rule_b = self.rule(pair.host_b, pair.rule_b)
            location = self.policy_location(policy, host_b if host_b.override_for(policy.name) else host_a)
            where = f"policy '{policy.name}' between {host_a.name} and {host_b.name}"

            if (rule_a.local_address, rule_a.remote_address) != (rule_b.remote_address, rule_b.local_address):
                self.problems.error(location, f"{where}: addresses are not swapped between the two rules")
            if (rule_a.local_port, rule_a.remote_port) != (rule_b.remote_port, rule_b.local_port):
                self.problems.error(location, f"{where}: ports are not swapped between the two rules")
            if rule_a.protocol != rule_b.protocol:
                self.problems.error(location, f"{where}: protocols differ ({rule_a.protocol} and {rule_b.protocol})")
            if rule_a.is_exemption or rule_b.is_exemption:
                continue

            self.check_security(where, location, host_a.name, rule_a.outbound_security, host_b.name, rule_b.inbound_security)
            self.check_security(where, location, host_b.name, rule_b.outbound_security, host_a.name, rule_a.inbound_security)

            if not KEY_MODULE_PROTOCOLS[rule_a.key_module] & KEY_MODULE_PROTOCOLS[rule_b.key_module]:
                self.problems.error(location, f"{where}: key modules {rule_a.key_module} and {rule_b.key_module} have no keying protocol in common")

            usable = self.usable_methods(self.auth_methods(rule_a, 1), self.auth_methods(rule_b, 1), host_a.forest, host_b.forest)
            if not usable:
                self.problems.error(location, self.no_auth_message(where, host_a, host_b, rule_a, rule_b))
            phase2_a, phase2_b = self.auth_methods(rule_a, 2), self.auth_methods(rule_b, 2)
            if (phase2_a or phase2_b) and not self.usable_methods(phase2_a, phase2_b, host_a.forest, host_b.forest):
                self.problems.error(location, f"{where}: the two sides share no phase 2 authentication method; use the same auth profile on both hosts")

            self.check_crypto(where, location, rule_a, rule_b)

    def no_auth_message(self, where, host_a: Host, host_b: Host, rule_a: IPsecRule, rule_b: IPsecRule) -> str:
        kerberos_only = all(m.method == "kerberos" for m in self.auth_methods(rule_a, 1) + self.auth_methods(rule_b, 1))
        if kerberos_only and self.forests_trust(host_a.forest, host_b.forest) is False:
            return (
                f"{where}: Kerberos needs both hosts in the same forest or in forests that trust each other, "
                f"but {host_a.name} is in '{host_a.forest}' and {host_b.name} in '{host_b.forest}'; "
                "use an auth profile with method certificate, or declare the trust under forests"
            )
        return f"{where}: the two sides share no phase 1 authentication method; give both hosts the same auth profile"

    def check_security(self, where, location, sender, outbound, receiver, inbound) -> None:
        # One side insisting on IPsec while the other exempts the traffic is
        # an outage in that direction.
        if {outbound, inbound} == {"Require", "None"}:
            self.problems.error(
                location,
                f"{where}: traffic from {sender} to {receiver} is {outbound} outbound on {sender} "
                f"but {inbound} inbound on {receiver}, so it would be dropped; make both Require or Request",
            )

    def check_crypto(self, where, location, rule_a: IPsecRule, rule_b: IPsecRule) -> None:
        crypto_a, crypto_b = self.crypto_profile(rule_a), self.crypto_profile(rule_b)
        if crypto_a is None or crypto_b is None or crypto_a.name == crypto_b.name:
            return
        if not set(crypto_a.main_mode) & set(crypto_b.main_mode):
            self.problems.error(location, f"{where}: crypto profiles '{crypto_a.name}' and '{crypto_b.name}' share no main mode proposal, so main mode negotiation would fail")
        if not set(crypto_a.quick_mode) & set(crypto_b.quick_mode):
            self.problems.error(location, f"{where}: crypto profiles '{crypto_a.name}' and '{crypto_b.name}' share no quick mode proposal, so quick mode negotiation would fail")
        if crypto_a.pfs_group != crypto_b.pfs_group:
            self.problems.error(location, f"{where}: perfect forward secrecy groups differ ({crypto_a.pfs_group} and {crypto_b.pfs_group}); use the same pfs_group on both sides")

    def check_unmanaged_peers(self) -> None:
        """Check Kerberos against peer networks that declare their forest but have no managed host."""
        for host_plan in self.plan.hosts:
            host = host_plan.host
            for rule in host_plan.rules:
                if rule.is_exemption:
                    continue
                policy = self.policies[rule.policy]
                methods = self.auth_methods(rule, 1)
                if not methods or any(m.method != "kerberos" for m in methods):
                    continue
                for endpoint in (policy.endpoint1, policy.endpoint2):
                    for network in endpoint.networks:
                        remote = tuple(str(n) for n in network.addresses)
                        if not addresses_overlap(remote, rule.remote_address) or network.forest is None:
                            continue
                        if self.forests_trust(host.forest, network.forest) is False:
                            self.problems.error(
                                self.policy_location(policy, host),
                                f"policy '{policy.name}' on host '{host.name}': Kerberos needs both peers in the same forest or in trusting forests, "
                                f"but network '{network.name}' is in '{network.forest}' and {host.name} in '{host.forest}'; "
                                "use an auth profile with method certificate",
                            )

    def check_conflicts(self) -> None:
        for host_plan in self.plan.hosts:
            host = host_plan.host
            rules = [r for r in host_plan.rules if not r.is_exemption]
            for first, second in combinations(rules, 2):
                if (first.inbound_security, first.outbound_security) == (second.inbound_security, second.outbound_security):
                    continue
                if self.rules_overlap(first, second):
                    policy = self.policies[second.policy]
                    self.problems.error(
                        self.policy_location(policy, host),
                        f"conflict on host '{host.name}': policies '{first.policy}' and '{second.policy}' match the same traffic "
                        f"with different actions ({first.inbound_security}/{first.outbound_security} and "
                        f"{second.inbound_security}/{second.outbound_security}); give them the same security or make them disjoint",
                    )

            main_mode_rules = [obj for obj in host_plan.objects if isinstance(obj, MainModeRule)]
            for first, second in combinations(main_mode_rules, 2):
                # Overlap, not only equality: a /24 rule and a host rule inside
                # it both match the host's main mode, and which wins is not documented.
                overlapping = (addresses_overlap(first.local_address, second.local_address)
                               and addresses_overlap(first.remote_address, second.remote_address))
                same_binding = (first.main_mode_crypto_set, first.phase1_auth_set) == (second.main_mode_crypto_set, second.phase1_auth_set)
                if overlapping and not same_binding:
                    # Reported at the policy of the second rule, which the admin edits to fix it.
                    rule = next((r for r in rules if r.name == second.name.replace("-mmrule-", "-rule-", 1)), None)
                    policy = self.policies.get(rule.policy) if rule is not None else None
                    location = self.policy_location(policy, host) if policy is not None else host.location
                    self.problems.error(
                        location or Location(self.inventory.path, 1),
                        f"conflict on host '{host.name}': main mode rules '{first.name}' and '{second.name}' cover overlapping "
                        "addresses with different crypto or auth; main mode has no ports or protocol, so policies between "
                        "overlapping addresses must share their auth and crypto profiles",
                    )

    @staticmethod
    def rules_overlap(first: IPsecRule, second: IPsecRule) -> bool:
        return (
            addresses_overlap(first.local_address, second.local_address)
            and addresses_overlap(first.remote_address, second.remote_address)
            and protocols_overlap(first.protocol, second.protocol)
            and ports_overlap(first.local_port, second.local_port)
            and ports_overlap(first.remote_port, second.remote_port)
        )

    def check_domain_controller_exemptions(self) -> None:
        warned: set[tuple[str, str]] = set()
        for host_plan in self.plan.hosts:
            host = host_plan.host
            kerberos_rules = [r for r in host_plan.rules if not r.is_exemption and any(m.method == "kerberos" for m in self.auth_methods(r, 1))]
            if not kerberos_rules:
                continue
            exemptions = [r for r in host_plan.rules if r.is_exemption and r.protocol == "Any" and not r.remote_port and not r.local_port]
            policy = self.policies[kerberos_rules[0].policy]
            forest = self.inventory.forests.get(host.forest or "")
            if forest is None or not forest.domain_controllers:
                key = (policy.name, "no-dcs")
                if key not in warned:
                    warned.add(key)
                    whose = f"the forest of {host.name}" if host.forest else f"host {host.name} has no domain or forest, and so"
                    self.problems.warning(
                        self.policy_location(policy),
                        f"policy '{policy.name}' uses Kerberos, but {whose} declares no domain_controllers, "
                        "so no exemption for domain controller traffic can be checked: list them under forests and add an "
                        "exemption with the domain controllers as endpoint2, or Kerberos cannot reach them once IPsec is required",
                    )
                continue
            missing = [dc for dc in forest.domain_controllers if not any(address_covered(dc, r.remote_address) for r in exemptions)]
            if missing:
                key = (policy.name, host.name)
                warned.add(key)
                self.problems.warning(
                    self.policy_location(policy),
                    f"policy '{policy.name}' uses Kerberos, but host {host.name} has no exemption for domain controller "
                    f"traffic to {', '.join(str(a) for a in missing)}: add an exemption with those addresses as endpoint2 "
                    "(any protocol), or Kerberos, LDAP and DNS to them may fail once IPsec is required",
                )


def _same_method(first: AuthMethod, second: AuthMethod) -> bool:
    if first.method != second.method or first.identity != second.identity:
        return False
    if first.method == "certificate":
        return (first.authority or "").lower() == (second.authority or "").lower()
    if first.method == "pre_shared_key":
        return first.key_env == second.key_env
    return True
