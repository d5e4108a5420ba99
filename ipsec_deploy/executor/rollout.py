"""Staged rollout: never leave a pair with Require on one host while the peer lacks its rule.

A Require rule drops every packet that arrives without an SA, so the order of
changes across hosts matters. The rollout runs in stages:

1. lower, then request: first every existing Require rule that will change
   or go is lowered to Request on every host. Then every new or changed
   rule goes in with Request inbound and outbound. Request negotiates IPsec
   when the peer can and lets clear traffic through when it cannot, so no
   pair can break. A host leaves unchanged any rule that covers a host which
   could not lower its own rules, because that host's old Require rule still
   needs it as a mirror.
2. raise: the pairs are verified, and only rules whose every pair negotiated
   as planned are raised to the security the plan asks for. A rule with a
   failing pair stays in Request and is reported (``--strict`` instead
   restores the pre-run state of the hosts with failing pairs).
3. remove: rules and sets that the plan no longer has are removed, once
   every managed peer they cover has passed the request stage.

Each stage applies a host's operations in one pipeline that the host undoes
by itself if a step fails, so after any failure a host is either at its
previous stage or at the new one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from ..inventory.model import Host
from ..objects import IPsecRule, MainModeRule, PlannedObject
from ..planner.model import Plan
from ..planner.traffic import address_covered
from ..transport.base import RemoteCommandFailed, TransportError
from ..verify.classify import SKIPPED, PairResult
from ..verify.expectations import PairProbe
from .confirm import ArmedRestore, arm_restore, disarm_restore
from .diff import comparable, diff_host
from .journal import RunJournal
from .payload import PayloadError
from .run import ChangeSet, Executor, HostChange, HostResult
from .state import HostState

log = logging.getLogger("ipsec_deploy.rollout")

Objects = dict[tuple[str, str], PlannedObject]

# How far a host's clock may run ahead of the controller's before apply
# warns that the host's restore task will fire early.
CLOCK_TOLERANCE = timedelta(minutes=1)


@dataclass(frozen=True)
class RolloutOptions:
    strict: bool = False

    # How long a host waits for the run to confirm it before restoring its
    # pre-run objects by itself; None arms no restore.
    confirm_timeout: timedelta | None = timedelta(minutes=10)
    batch_size: int | None = None  # hosts per batch in the lower and request stages; None is all at once
    max_fail_percent: float | None = None  # stop starting batches once more hosts than this have failed


@dataclass
class RolloutReport:
    results: dict[str, HostResult] = field(default_factory=dict)
    pair_results: list[PairResult] = field(default_factory=list)
    held_in_request: list[str] = field(default_factory=list)  # "HOST: rule (reason)"
    kept_unchanged: list[str] = field(default_factory=list)  # changes not made, at the rule's old security
    restored_hosts: list[str] = field(default_factory=list)
    skipped_hosts: list[str] = field(default_factory=list)  # not started: too many failures
    kept_for_peers: list[str] = field(default_factory=list)  # removals deferred because a peer failed
    pending_restores: list[str] = field(default_factory=list)  # "HOST: restores itself at ..." when not confirmed
    clock_warnings: list[str] = field(default_factory=list)  # hosts whose clock runs ahead of the controller's
    raised_unverified: list[str] = field(default_factory=list)  # rules raised although their pair cannot be probed

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "unreachable") for r in self.results.values()) or bool(self.skipped_hosts)


def _lowered(rule: IPsecRule) -> IPsecRule:
    return replace(rule, inbound_security="Request", outbound_security="Request")


def _needs_staging(rule: IPsecRule) -> bool:
    return not rule.is_exemption and "Require" in (rule.inbound_security, rule.outbound_security)


def affected_rules(current: Objects, desired: tuple[PlannedObject, ...]) -> set[str]:
    """Return the names of current rules whose negotiation changes: the rule itself, or a set or main mode rule it uses.

    A crypto or auth set changes in place under its name, so the rules that
    use it must be staged as if they changed themselves.
    """
    wanted = {(obj.kind, obj.name): obj for obj in desired}
    changed = {
        name
        for (kind, name), obj in current.items()
        if kind != IPsecRule.kind and (kind, name) in wanted and comparable(obj, wanted[(kind, name)]) != wanted[(kind, name)]
    }
    affected = set()
    for key, obj in current.items():
        if not isinstance(obj, IPsecRule):
            continue
        main_mode_rule = current.get((MainModeRule.kind, obj.name.replace("-rule-", "-mmrule-", 1)))
        uses = {obj.phase1_auth_set, obj.phase2_auth_set, obj.quick_mode_crypto_set}
        if isinstance(main_mode_rule, MainModeRule):
            uses |= {main_mode_rule.name, main_mode_rule.main_mode_crypto_set, main_mode_rule.phase1_auth_set}
        if wanted.get(key) != obj or uses & changed:
            affected.add(obj.name)
    return affected


def stage_lower(current: Objects, desired: tuple[PlannedObject, ...], keep: set[str] = frozenset()) -> Objects:
    """Return one host's objects with every Require rule that will change or go lowered to Request.

    Rules named in ``keep`` stay as they are: the run will not change them.
    """
    affected = affected_rules(current, desired) - set(keep)
    stage = dict(current)
    for key, obj in current.items():
        if isinstance(obj, IPsecRule) and _needs_staging(obj) and obj.name in affected:
            stage[key] = _lowered(obj)
    return stage


def stage_request(current: Objects, desired: tuple[PlannedObject, ...], frozen: set[str] = frozenset()) -> tuple[Objects, set[str]]:
    """Return the request-stage objects of one host and the names of the rules lowered for it.

    New and changed rules go in at Request; rules and sets the plan drops
    stay, with the rules lowered to Request, until the remove stage. Rules
    named in ``frozen`` keep their current form, because a peer they cover
    still has its old rule, which needs them as its mirror.
    """
    # A frozen rule keeps the sets and main mode rule it negotiates with,
    # too, or its blocked peer's old Require rule could no longer agree.
    kept = {(IPsecRule.kind, name) for name in frozen}
    for name in frozen:
        rule = current.get((IPsecRule.kind, name))
        if not isinstance(rule, IPsecRule):
            continue
        main_mode_rule = current.get((MainModeRule.kind, name.replace("-rule-", "-mmrule-", 1)))
        references = [rule.phase1_auth_set, rule.phase2_auth_set, rule.quick_mode_crypto_set]
        if isinstance(main_mode_rule, MainModeRule):
            kept.add((MainModeRule.kind, main_mode_rule.name))
            references += [main_mode_rule.main_mode_crypto_set, main_mode_rule.phase1_auth_set]
        kept |= {key for key in current if key[0] != IPsecRule.kind and key[1] in references}

    stage: Objects = {}
    lowered: set[str] = set()
    for obj in desired:
        key = (obj.kind, obj.name)
        if key in kept and key in current:
            stage[key] = current[key]
        elif isinstance(obj, IPsecRule) and _needs_staging(obj) and current.get(key) != obj:
            stage[key] = _lowered(obj)
            lowered.add(obj.name)
        else:
            stage[key] = obj

    for key, obj in current.items():
        if key in stage:
            continue
        if isinstance(obj, IPsecRule) and _needs_staging(obj):
            stage[key] = _lowered(obj)
        else:
            stage[key] = obj
    return stage, lowered


def removal_allowed(obj: PlannedObject, host: str, peers: list[Host], passed_request: set[str]) -> bool:
    """Return whether a dropped object may go: a rule only once every managed peer it covers passed the request stage."""
    if not isinstance(obj, (IPsecRule, MainModeRule)):
        return True
    for peer in peers:
        if peer.name == host:
            continue
        if any(address_covered(address, obj.remote_address) for address in peer.ip_addresses) and peer.name not in passed_request:
            return False
    return True


class Rollout:
    def __init__(
        self,
        executor: Executor,
        plan: Plan,
        journal: RunJournal,
        options: RolloutOptions | None = None,
        outside_hosts: tuple[Host, ...] = (),
    ) -> None:
        self.executor = executor
        self.plan = plan
        self.journal = journal
        self.options = options or RolloutOptions()

        # Managed hosts that this run does not touch (--limit). Their rules
        # are as they were, so they count as hosts that did not lower theirs.
        self.outside_hosts = outside_hosts
        self.all_hosts = [host_plan.host for host_plan in plan.hosts] + list(outside_hosts)

    def run(self, change_set: ChangeSet, verify_pairs) -> RolloutReport:
        """Arm the restores, run the stages, confirm.

        ``verify_pairs(hosts, rules, states)`` returns the PairResults of the
        pairs between ``hosts`` that involve one of ``rules`` ((host, rule
        name)); ``states`` are the hosts' objects as the run left them.
        """
        report = RolloutReport()
        self.raised_unverified = report.raised_unverified
        self._verify_pairs = verify_pairs
        changes = {name: c for name, c in change_set.changes.items()}
        desired = {name: {(o.kind, o.name): o for o in c.desired} for name, c in changes.items()}
        expected: dict[str, Objects] = {name: dict(c.state.managed) for name, c in changes.items() if c.state is not None}

        for name, change in changes.items():
            if not change.reachable:
                report.results[name] = HostResult(name, "unreachable", detail=change.error or "")
                self.journal.record_host(name, "unreachable", change.error or "")
            elif change.operations:
                self.journal.write_snapshot(name, change.state.objects())
        snapshots = {name: dict(objects) for name, objects in expected.items()}

        # Before the first change on a host, leave on it a restore of its
        # snapshot that fires at the deadline unless this run confirms it.
        # Arming happens inside the try, so a Ctrl-C while arming still
        # cancels the restores already left.
        armed: dict[str, ArmedRestore] = {}
        self.not_armed: set[str] = set()
        self.attempted: set[str] = set()
        try:
            self._arm(changes, armed, report)
            self._stages(changes, desired, expected, snapshots, report)
        finally:
            # Confirm the hosts still reachable, also after Ctrl-C: the run
            # has not lost them. A host it cannot reach keeps its restore
            # armed, and so does every host if the controller dies.
            self._confirm(changes, armed, report)

        for name, change in changes.items():
            report.results.setdefault(name, HostResult(name, "unchanged"))
        return report

    def _arm(self, changes: dict[str, HostChange], armed: dict[str, ArmedRestore], report: RolloutReport) -> None:
        """Arm each host's restore, recording each one as soon as it is on the host."""
        if self.options.confirm_timeout is None:
            return
        deadline = datetime.now(timezone.utc) + self.options.confirm_timeout

        def arm(change: HostChange) -> None:
            name = change.host.name
            # Recorded before the call: a failure or Ctrl-C midway can leave
            # files or a task on the host, which the confirmation removes.
            self.attempted.add(name)
            try:
                restore = arm_restore(change.connection, self.journal.run_id, self.executor.group, self.executor.policy_store, change.state.objects(), deadline)
            except (TransportError, RemoteCommandFailed, PayloadError, ValueError) as error:
                # Without a way back, the host is not changed at all; it
                # keeps its old rules, so its peers treat it as blocked.
                self.not_armed.add(name)
                detail = f"cannot leave the restore task on the host, so it was not changed: {str(error).removeprefix(name + ': ')}"
                log.warning("%s: %s", name, detail)
                report.results[name] = HostResult(name, "failed", detail=detail)
                self.journal.record_host(name, "failed", detail)
                return
            armed[name] = restore
            self.journal.record_restore(name, restore.task_name, restore.deadline.isoformat(), "armed")
            log.info("%s: restore task %s armed for %s", name, restore.task_name, restore.deadline.isoformat(timespec="seconds"))
            ahead = restore.host_time - datetime.now(timezone.utc) if restore.host_time else timedelta(0)
            if ahead > CLOCK_TOLERANCE:
                # The deadline is the controller's, so a host whose clock
                # runs ahead restores itself that much earlier.
                minutes = ahead.total_seconds() / 60
                report.clock_warnings.append(f"{name}: its clock is {minutes:.0f} minute(s) ahead of this workstation's, so its restore task fires that much before the deadline")

        self.executor.parallel([c for c in changes.values() if c.reachable and c.operations], arm)

    def _confirm(self, changes: dict[str, HostChange], armed: dict[str, ArmedRestore], report: RolloutReport) -> None:
        def disarm(name: str):
            try:
                return name, disarm_restore(changes[name].connection, self.journal.run_id), None
            except (TransportError, RemoteCommandFailed) as error:
                return name, None, str(error).removeprefix(f"{name}: ")

        for name, result, error in self.executor.parallel(sorted(set(armed) | self.attempted), disarm):
            if name not in armed:
                # Arming failed or was interrupted: whatever it left is gone
                # now, or the next run lists it as left behind.
                if result is None:
                    report.pending_restores.append(f"{name}: cannot remove what a failed arming may have left ({error}); the next apply or revert lists it")
                continue
            if result is None:
                deadline = armed[name].deadline.isoformat(timespec="seconds")
                detail = f"not confirmed ({error}); it restores its objects from before the run at {deadline}"
                report.pending_restores.append(f"{name}: {detail}")
                report.results[name] = HostResult(name, "failed", detail=detail)
                self.journal.record_host(name, "failed", detail)
                log.warning("%s: %s", name, detail)
                continue
            if result.restore_ran:
                report.results[name] = HostResult(name, "failed", detail="the host restored its objects from before the run before the run could confirm it")
                self.journal.record_host(name, "failed", report.results[name].detail)
                self.journal.record_restore(name, armed[name].task_name, armed[name].deadline.isoformat(), "restored")
            else:
                self.journal.record_restore(name, armed[name].task_name, armed[name].deadline.isoformat(), "confirmed")
                log.info("%s: confirmed, restore task %s removed", name, armed[name].task_name)

    def _stages(self, changes: dict[str, HostChange], desired: dict[str, Objects], expected: dict[str, Objects], snapshots: dict[str, Objects], report: RolloutReport) -> None:
        """Lower, request, raise and remove; see the module docstring."""

        # Stage 1a: lower every Require rule that will change or go, on every
        # host, before any host changes what its rules cover.
        active = {name for name, c in changes.items() if c.reachable and c.operations and name not in self.not_armed}
        # A rule that covers a host outside --limit stays unchanged in the
        # request stage, so lowering it would only weaken it for nothing.
        outside = {host.name for host in self.outside_hosts}
        lower_stage = {name: stage_lower(expected[name], changes[name].desired, self._rules_covering(expected[name], outside))
                       for name in active}
        passed_lower = {name for name, c in changes.items() if c.reachable and not c.operations}
        passed_lower |= self._apply_stage("lower", changes, expected, lower_stage, report, batched=True)
        blocked = self._blocked_hosts(changes, passed_lower)

        # Stage 1b: request. A host leaves alone each existing rule that
        # covers a host that could not lower its own rules.
        lowered: dict[str, set[str]] = {}
        request_stage: dict[str, Objects] = {}
        for name, change in changes.items():
            if name not in passed_lower or name not in active:
                continue
            frozen = self._rules_covering(expected[name], blocked)
            for rule_name in sorted(frozen):
                key = (IPsecRule.kind, rule_name)
                if key not in desired[name] or desired[name][key] != expected[name][key]:
                    line = (f"{name}: {rule_name} (kept unchanged: {', '.join(sorted(blocked))} may still require IPsec "
                            "with its old rules: unreachable, failed to lower them, or not part of this run)")
                    # The lower stage skips rules towards hosts outside the run, so only some of these are in Request.
                    if expected[name][key] == _lowered(expected[name][key]):
                        report.held_in_request.append(line)
                    else:
                        report.kept_unchanged.append(line)
            request_stage[name], lowered[name] = stage_request(expected[name], change.desired, frozen)
        passed_request = {name for name, c in changes.items() if c.reachable and not c.operations}
        passed_request |= self._apply_stage("request", changes, expected, request_stage, report, batched=True)

        # Stage 2: raise the verified pairs.
        # Only pairs with a lowered rule need verifying; pairs the run did
        # not touch keep their SAs and traffic undisturbed.
        lowered_rules = {(host, rule) for host in passed_request for rule in lowered.get(host, ())}
        # The run knows what each host now holds, so verification need not
        # read the hosts' rules again: that saves a pipeline per host.
        states = {name: HostState(managed=dict(expected[name])) for name in passed_request}
        pair_results = self._verify_pairs(sorted(passed_request), lowered_rules, states) if lowered_rules else []
        report.pair_results = pair_results
        failing_hosts = self._hosts_with_failing_pairs(pair_results, lowered)
        log.info("verify stage: %d pair result(s), hosts with failing pairs: %s", len(pair_results), ", ".join(sorted(failing_hosts)) or "none")
        if self.options.strict and failing_hosts:
            self._restore(sorted(failing_hosts), changes, expected, snapshots, report)
            passed_request -= failing_hosts

        raise_stage: dict[str, Objects] = {}
        for name in sorted(passed_request):
            if not lowered.get(name):
                continue
            stage = dict(expected[name])
            for rule_name in sorted(lowered[name]):
                key = (IPsecRule.kind, rule_name)
                reason = self._hold_reason(name, rule_name, pair_results, passed_request)
                if reason is None:
                    stage[key] = desired[name][key]
                else:
                    report.held_in_request.append(f"{name}: {rule_name} ({reason})")
            raise_stage[name] = stage
        self._apply_stage("raise", changes, expected, raise_stage, report)

        # Stage 3: remove what the plan dropped.
        remove_stage: dict[str, Objects] = {}
        for name in sorted(passed_request):
            stage = dict(expected[name])
            for key, obj in list(stage.items()):
                if key in desired[name]:
                    continue
                if removal_allowed(obj, name, self.all_hosts, passed_request):
                    del stage[key]
                else:
                    report.kept_for_peers.append(f"{name}: {obj.name} (a peer it covers did not pass the request stage)")
            if stage != expected[name]:
                remove_stage[name] = self._keep_referenced_sets(stage, expected[name])
        self._apply_stage("remove", changes, expected, remove_stage, report)

    def _apply_stage(self, stage: str, changes: dict[str, HostChange], expected: dict[str, Objects], targets: dict[str, Objects], report: RolloutReport, batched: bool = False) -> set[str]:
        """Apply each host's move from its expected objects to its stage objects; return the hosts that succeeded."""
        work = []
        for name, stage_objects in targets.items():
            operations = diff_host(expected[name], tuple(stage_objects.values()), self.executor.policy_store)
            if operations:
                work.append((name, operations, stage_objects))
        succeeded = {name for name in targets if not any(w[0] == name for w in work)}
        log.info("%s stage: %d host(s) to change", stage, len(work))

        batches = [work]
        if batched and self.options.batch_size:
            batches = [work[i : i + self.options.batch_size] for i in range(0, len(work), self.options.batch_size)]

        failures = 0
        total = len(work)
        for batch_number, batch in enumerate(batches):
            if batched and self._too_many_failures(failures, total):
                for name, _, _ in [item for later in batches[batch_number:] for item in later]:
                    report.skipped_hosts.append(name)
                    report.results[name] = HostResult(name, "failed", detail="not started: too many hosts failed in earlier batches (--max-fail-percent)")
                break

            def run(item):
                name, operations, stage_objects = item
                return name, self.executor.apply_operations(changes[name], operations, self.journal, stage), stage_objects

            for name, result, stage_objects in self.executor.parallel(batch, run):
                previous = report.results.get(name)
                if result.status == "changed":
                    log.info("%s: %s stage: %d operation(s) applied", name, stage, result.operations)
                    expected[name] = dict(stage_objects)
                    succeeded.add(name)
                    total_operations = result.operations + (previous.operations if previous else 0)
                    if previous is None or previous.status == "changed":
                        report.results[name] = HostResult(name, "changed", total_operations, total_operations)
                else:
                    failures += 1
                    detail = f"{stage} stage: {result.detail}"
                    log.warning("%s: %s", name, detail)
                    report.results[name] = HostResult(name, "failed", result.operations, 0, detail)
                self.journal.record_host(name, report.results[name].status, report.results[name].detail, report.results[name].operations)
        return succeeded

    def _blocked_hosts(self, changes: dict[str, HostChange], passed_lower: set[str]) -> set[str]:
        """Return managed hosts that may still hold Require rules from before: unreachable, failed to lower, or outside the run."""
        return {name for name in changes if name not in passed_lower} | {host.name for host in self.outside_hosts}

    def _rules_covering(self, objects: Objects, hosts: set[str]) -> set[str]:
        """Return the names of rules among ``objects`` whose remote addresses cover one of ``hosts``."""
        if not hosts:
            return set()
        addresses = [address for host in self.all_hosts if host.name in hosts for address in host.ip_addresses]
        return {
            obj.name
            for obj in objects.values()
            if isinstance(obj, IPsecRule) and not obj.is_exemption and any(address_covered(a, obj.remote_address) for a in addresses)
        }

    def _too_many_failures(self, failures: int, total: int) -> bool:
        limit = self.options.max_fail_percent
        if limit is None or total == 0:
            return False
        return failures > math.floor(total * limit / 100)

    @staticmethod
    def _hosts_with_failing_pairs(pair_results: list[PairResult], lowered: dict[str, set[str]]) -> set[str]:
        hosts = set()
        for result in pair_results:
            probe = result.probe
            touched = probe.initiator_rule in lowered.get(probe.initiator, set()) or probe.responder_rule in lowered.get(probe.responder, set())
            if touched and not result.passed and not probe.exemption:
                hosts.update((probe.initiator, probe.responder))
        return hosts

    def _hold_reason(self, host: str, rule_name: str, pair_results: list[PairResult], passed_request: set[str]) -> str | None:
        """Return why a lowered rule must stay in Request, or None when every pair it has passed."""
        host_plan = self.plan.host(host)
        rule = host_plan.object(IPsecRule.kind, rule_name)
        assert isinstance(rule, IPsecRule)
        in_run = {host_plan.host.name for host_plan in self.plan.hosts}
        for mirror in rule.mirrors:
            if mirror.host not in in_run:
                return f"its peer {mirror.host} is not part of this run (--limit), so the pair cannot be verified"
            if mirror.host not in passed_request:
                return f"{mirror.host} did not complete the request stage, so its mirror rule may be missing"
            result = _pair_result(pair_results, host, rule_name, mirror.host, mirror.rule)
            if result is None:
                return f"the pair with {mirror.host} was not verified"
            if result.status == SKIPPED:
                # Verification cannot probe this traffic, and holding the
                # rule would keep it in Request on every run, so raise it
                # and report that it was not verified.
                self.raised_unverified.append(f"{host}: {rule_name} (the pair with {mirror.host}: {result.reason})")
                continue
            if not result.passed:
                return f"the pair with {mirror.host}: {result.status}: {result.reason}"
        return None

    def _restore(self, hosts: list[str], changes: dict[str, HostChange], expected: dict[str, Objects], snapshots: dict[str, Objects], report: RolloutReport) -> None:
        """Return hosts with failing pairs to their pre-run objects (--strict)."""
        targets = {name: snapshots[name] for name in hosts}
        restored = self._apply_stage("restore", changes, expected, targets, report)
        for name in hosts:
            if name in restored:
                report.restored_hosts.append(name)
                report.results[name] = HostResult(name, "failed", detail="a pair failed verification, so the host was restored to its state before the run (--strict)")
                self.journal.record_host(name, "failed", report.results[name].detail)

    @staticmethod
    def _keep_referenced_sets(stage: Objects, current: Objects) -> Objects:
        """Keep any set that a rule still in the stage references, so removal never breaks a reference."""
        referenced = set()
        for obj in stage.values():
            if isinstance(obj, IPsecRule):
                referenced.update(filter(None, (obj.phase1_auth_set, obj.phase2_auth_set, obj.quick_mode_crypto_set)))
            elif isinstance(obj, MainModeRule):
                referenced.update(filter(None, (obj.main_mode_crypto_set, obj.phase1_auth_set)))
        for key, obj in current.items():
            if key not in stage and obj.name in referenced:
                stage[key] = obj
        return stage


def _pair_result(results: list[PairResult], host: str, rule: str, peer: str, peer_rule: str) -> PairResult | None:
    for result in results:
        probe: PairProbe = result.probe
        ends = {(probe.initiator, probe.initiator_rule), (probe.responder, probe.responder_rule)}
        if ends == {(host, rule), (peer, peer_rule)}:
            return result
    return None
