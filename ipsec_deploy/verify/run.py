"""Verification over open sessions: probe each pair, read SAs on both hosts, read events for failures."""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

from ..executor.state import HostState, StateError, parse_host_state, wrong_host_reason
from ..objects import IPsecRule
from ..planner.model import Plan
from ..scripts import clear_security_associations_script, probe_peers_script, read_security_associations_script, read_state_script
from ..transport.base import HostConnection, RemoteCommandFailed, TransportError
from .classify import PASSING, RULE_DIFFERS, RULE_MISSING, SKIPPED, HostSAs, PairResult, classify, parse_sas
from .expectations import PairProbe

log = logging.getLogger("ipsec_deploy.verify")

# Security log events of IPsec main mode, quick mode and extended mode
# negotiation (success and failure).
IPSEC_EVENT_IDS = [4650, 4651, 4652, 4653, 4654, 4655, 5451, 5452, 5453]
FAILURE_EVENT_IDS = frozenset({4652, 4653, 4654, 5453})


@dataclass(frozen=True)
class VerifyOptions:
    timeout: float = 30.0  # seconds to wait for SAs to appear
    interval: float = 2.0  # seconds between reads of the SAs
    max_events: int = 20

    # Remove the pairs' SAs before probing, so that SAs negotiated under
    # earlier rules or sets cannot pass for the current ones. The staged
    # rollout does this; a plain verify leaves running traffic alone.
    renegotiate: bool = False

    # Compare each rule's inbound and outbound security with the plan. The
    # staged rollout turns this off: there the rules are in Request on purpose.
    check_security: bool = True


@dataclass
class VerifyReport:
    pairs: list[PairResult] = field(default_factory=list)
    exemption_findings: list[str] = field(default_factory=list)
    host_errors: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.exemption_findings and not self.host_errors and all(r.passed for r in self.pairs)


class Verifier:
    def __init__(
        self,
        sessions: dict[str, HostConnection],
        group: str,
        policy_store: str,
        options: VerifyOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sessions = sessions
        self.group = group
        self.policy_store = policy_store
        self.options = options or VerifyOptions()
        self.sleep = sleep
        # A runspace pool runs one pipeline at a time, so each host's calls
        # are serialised; different hosts run in parallel.
        self._locks = {name: threading.Lock() for name in sessions}

    def _on_hosts(self, names: list[str], work: Callable[[str], Any]) -> dict[str, Any]:
        names = sorted(set(names))
        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=min(10, len(names))) as pool:
            return dict(zip(names, pool.map(work, names)))

    def _call(self, host: str, action: Callable[[HostConnection], Any]) -> Any:
        if host not in self.sessions:
            raise TransportError(host, "no session to this host")
        with self._locks[host]:
            return action(self.sessions[host])

    def verify(self, plan: Plan, probes: list[PairProbe], states: dict[str, HostState] | None = None,
               host_errors: dict[str, str] | None = None) -> VerifyReport:
        """Probe the pairs and classify them; ``host_errors`` gives why hosts without a session have none."""
        report = VerifyReport(host_errors=dict(host_errors or {}))
        hosts = [hp.host.name for hp in plan.hosts if hp.host.name in self.sessions]
        for probe in probes:
            for host in (probe.initiator, probe.responder):
                if host not in self.sessions:
                    report.host_errors.setdefault(host, "no session to this host")

        states = dict(states or {})
        missing_states = [h for h in hosts if h not in states]
        for host, outcome in self._on_hosts(missing_states, self._read_state).items():
            wrong_host = wrong_host_reason(plan.host(host).host, outcome.computer_name) if isinstance(outcome, HostState) else None
            if wrong_host:
                # The probes would test another computer's traffic.
                report.host_errors[host] = wrong_host
            elif isinstance(outcome, HostState):
                states[host] = outcome
            else:
                report.host_errors[host] = outcome
        report.exemption_findings = self._check_exemptions(plan, states)

        active = [p for p in probes if not p.skip_reason and p.initiator not in report.host_errors and p.responder not in report.host_errors]
        if self.options.renegotiate:
            self._clear_sas(active)
        outcomes = self._run_probes(active)
        sas = self._wait_for_sas(active, outcomes, report)

        for probe in probes:
            if probe.initiator in report.host_errors or probe.responder in report.host_errors:
                host = probe.initiator if probe.initiator in report.host_errors else probe.responder
                report.pairs.append(PairResult(probe, SKIPPED, f"{host} could not be read: {report.host_errors[host]}"))
                continue
            status, reason = self._rule_findings(plan, probe, states, self.options.check_security)
            if status:
                # SAs outlive the rules that made them, so SAs alone do not
                # prove that the pair is configured as planned.
                report.pairs.append(PairResult(probe, status, reason))
                continue
            result = classify(probe, sas.get(probe.initiator, HostSAs()), sas.get(probe.responder, HostSAs()), outcomes.get(id(probe)))
            report.pairs.append(result)

        self._attach_events([r for r in report.pairs if not r.passed and r.status != "not verified"])
        return report

    def _read_state(self, host: str) -> HostState | str:
        try:
            parameters = {"Group": self.group, "PolicyStore": self.policy_store}
            records = self._call(host, lambda c: c.run_script(read_state_script(), parameters, retry=True))
            return parse_host_state(records)
        except (TransportError, RemoteCommandFailed, StateError) as error:
            return str(error)

    @staticmethod
    def _rule_findings(plan: Plan, probe: PairProbe, states: dict[str, HostState], check_security: bool) -> tuple[str, str]:
        """Return (status, reason) for a pair whose planned rules a host lacks or has in another form; ("", "") when both match.

        With ``check_security`` off, a rule that differs only in its
        inbound and outbound security counts as matching.
        """
        missing = []
        different = []
        for host, rule_name in ((probe.initiator, probe.initiator_rule), (probe.responder, probe.responder_rule)):
            state = states.get(host)
            planned = plan.host(host).object(IPsecRule.kind, rule_name)
            if state is None or not isinstance(planned, IPsecRule):
                continue
            current = state.managed.get((IPsecRule.kind, rule_name))
            if current is None:
                missing.append(f"{host} lacks rule '{rule_name}'")
                continue
            same_security = replace(current, inbound_security=planned.inbound_security, outbound_security=planned.outbound_security)
            if same_security != planned:
                different.append(f"{host} holds rule '{rule_name}' in another form than planned")
            elif check_security and current != planned:
                different.append(
                    f"{host} holds rule '{rule_name}' with {current.inbound_security} inbound and {current.outbound_security} "
                    f"outbound where the plan has {planned.inbound_security} and {planned.outbound_security}"
                )
        if not missing and not different:
            return "", ""
        if missing:
            cause = "removed since the last apply, or a change to it failed; apply creates it as planned"
        else:
            cause = "changed since the last apply, a change to it failed, or a staged apply left it in Request; apply sets it as planned"
        return (RULE_MISSING if missing else RULE_DIFFERS), "; ".join(missing + different) + f" ({cause})"

    def _check_exemptions(self, plan: Plan, states: dict[str, HostState]) -> list[str]:
        """List the planned exemptions that a host lacks or has in another form."""
        findings = []
        for host_plan in plan.hosts:
            state = states.get(host_plan.host.name)
            if state is None:
                continue
            for rule in host_plan.rules:
                if not rule.is_exemption:
                    continue
                current = state.managed.get((IPsecRule.kind, rule.name))
                if current is None:
                    findings.append(f"{host_plan.host.name}: exemption '{rule.name}' is missing; run apply to restore it")
                elif current != rule:
                    findings.append(f"{host_plan.host.name}: exemption '{rule.name}' differs from the plan; run apply to restore it")
        return findings

    def _clear_sas(self, probes: list[PairProbe]) -> None:
        """Remove each host's SAs with the peers it is about to be probed with."""
        peers: dict[str, set[str]] = {}
        for probe in probes:
            peers.setdefault(probe.initiator, set()).add(probe.responder_address)
            peers.setdefault(probe.responder, set()).add(probe.initiator_address)

        def clear(host: str) -> None:
            try:
                self._call(host, lambda c: c.run_script(clear_security_associations_script(), {"RemoteAddress": sorted(peers[host])}, retry=True))
            except (TransportError, RemoteCommandFailed) as error:
                # Verification still runs; old SAs may then show up as a
                # difference and hold the pair in Request.
                log.warning("%s: removing old SAs failed: %s", host, error)

        self._on_hosts(list(peers), clear)

    def _run_probes(self, probes: list[PairProbe]) -> dict[int, bool | None]:
        """Send each probe from its initiator; return whether each connection succeeded."""
        by_host: dict[str, list[PairProbe]] = {}
        for probe in probes:
            by_host.setdefault(probe.initiator, []).append(probe)

        def probe_host(host: str) -> dict[int, bool | None]:
            # One pipeline for all of a host's probes: on a WAN each
            # pipeline costs round trips.
            probes_of_host = by_host[host]
            payload = [{"ComputerName": p.responder_address, "Port": p.port} for p in probes_of_host]
            try:
                output = self._call(host, lambda c: c.run_script(probe_peers_script(), {"Probes": payload}, retry=True))
            except (TransportError, RemoteCommandFailed) as error:
                log.warning("%s: probes failed: %s", host, error)
                return {id(p): None for p in probes_of_host}
            results: dict[int, bool | None] = {id(p): None for p in probes_of_host}
            for probe, record in zip(probes_of_host, output):
                if isinstance(record, dict):
                    results[id(probe)] = str(record.get("Succeeded", "")).lower() == "true"
            return results

        merged: dict[int, bool | None] = {}
        for results in self._on_hosts(list(by_host), probe_host).values():
            merged.update(results)
        return merged

    def _read_sas(self, host: str) -> HostSAs | str:
        try:
            return parse_sas(self._call(host, lambda c: c.run_script(read_security_associations_script(), {}, retry=True)))
        except (TransportError, RemoteCommandFailed) as error:
            return str(error)

    def _wait_for_sas(self, probes: list[PairProbe], outcomes: dict[int, bool | None], report: VerifyReport) -> dict[str, HostSAs]:
        """Read SAs until every pair that got through has them on both hosts, or the timeout passes.

        Windows creates SAs when the first packet is sent and may take a
        moment; a pair whose probe failed will not get SAs by waiting.
        """
        hosts = [p.initiator for p in probes] + [p.responder for p in probes]
        sas: dict[str, HostSAs] = {}

        def read_all() -> list[PairProbe]:
            for host, outcome in self._on_hosts(hosts, self._read_sas).items():
                if isinstance(outcome, HostSAs):
                    sas[host] = outcome
                else:
                    report.host_errors[host] = outcome
            return [
                p
                for p in probes
                if not p.exemption
                and outcomes.get(id(p)) is not False
                and classify(p, sas.get(p.initiator, HostSAs()), sas.get(p.responder, HostSAs()), outcomes.get(id(p))).status not in PASSING
            ]

        def log_wait(state: RetryCallState) -> None:
            waiting = state.outcome.result() if state.outcome else []
            log.info("waiting for the SAs of %d pair(s), attempt %d", len(waiting), state.attempt_number)

        retrying = Retrying(
            retry=retry_if_result(bool),
            stop=stop_after_delay(self.options.timeout),
            wait=wait_fixed(self.options.interval),
            sleep=self.sleep,
            before_sleep=log_wait,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
        )
        retrying(read_all)
        return sas

    def _attach_events(self, results: list[PairResult]) -> None:
        """Add the newest IPsec failure events of both hosts to each failing pair."""
        hosts = [r.probe.initiator for r in results] + [r.probe.responder for r in results]

        def read_events(host: str) -> list[dict[str, Any]]:
            parameters = {"FilterHashtable": {"LogName": "Security", "Id": IPSEC_EVENT_IDS}, "MaxEvents": self.options.max_events}
            try:
                output, _ = self._call(host, lambda c: c.run_cmdlet("Get-WinEvent", parameters))
            except TransportError:
                return []
            # Get-WinEvent reports "no events found" as an error record; that is no failure here.
            return [e for e in output if isinstance(e, dict)]

        events = self._on_hosts(hosts, read_events)
        for result in results:
            probe = result.probe
            for host, peer in ((probe.initiator, probe.responder_address), (probe.responder, probe.initiator_address)):
                for event in events.get(host, []):
                    event_id = int(str(event.get("Id", "0")) or 0)
                    message = str(event.get("Message", ""))
                    if event_id in FAILURE_EVENT_IDS and mentions_address(message, peer):
                        result.events.append(f"{host} event {event_id}: {failure_reason(message)}")
                        break


def mentions_address(message: str, address: str) -> bool:
    """Return whether an event message names this address, not just one that starts with it (10.0.1.1 vs 10.0.1.10)."""
    return re.search(rf"(?<![0-9A-Fa-f.:]){re.escape(address)}(?![0-9A-Fa-f.:])", message) is not None


def failure_reason(message: str) -> str:
    """Return the 'Failure Reason' line of an IPsec audit event, or its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.lower().startswith("failure reason"):
            value = line.split(":", 1)[1].strip() if ":" in line else ""
            if not value and index + 1 < len(lines):
                value = lines[index + 1]
            return value
    return lines[0] if lines else ""
