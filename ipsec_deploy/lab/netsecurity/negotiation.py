"""IKE/AuthIP negotiation between lab hosts, decided from both hosts' policy; no packet is sent.

When traffic is triggered from one lab host to another, each side's
connection security rule is looked up as Windows would. That is the enabled
rules of the ActiveStore that match addresses, protocol and ports, with
exemptions first and then the most specific rule. The outcome follows:

* no active rule on the initiator: clear traffic, which a responder that
  requires inbound security drops;
* main mode: the first method of the initiator's phase 1 auth set that the
  initiator has credentials for and the responder also lists, then the
  credential check (Kerberos: both hosts in the same or trusting forests;
  certificate: each host has a machine certificate chaining to the CA the
  other side names; pre-shared key: equal keys), then the first main mode
  crypto proposal of the initiator that the responder also lists (from the
  main mode rule that matches, otherwise the default main mode crypto set);
* quick mode: the first quick mode proposal of the initiator's rule that the
  responder also lists, with equal perfect forward secrecy groups;
* on failure, events on both hosts, and clear fallback only when the
  initiator merely requests outbound security and the responder does not
  require inbound security.

NOTE: not modelled: tunnel mode, phase 2 (user) authentication, NAT
traversal, key module mismatches, the responder's own outbound policy for its
replies, Windows' exact filter weights (the lab ranks by exemption first, then
smaller address, port and protocol scope), and SA rekeying.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ipsec_deploy.lab.netsecurity import events
from ipsec_deploy.lab.netsecurity.filters import (
    address_matches,
    address_scope,
    port_matches,
    port_scope,
    protocol_matches,
    same_slash24,
)
from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.netsecurity.store import (
    DEFAULT_MAIN_MODE_CRYPTO_SET,
    DEFAULT_PHASE1_AUTH_SET,
    DEFAULT_QUICK_MODE_CRYPTO_SET,
    PolicyStore,
    StoredObject,
)

# NOTE: built-in defaults, used when the store has no default set. They
# approximate Windows' defaults and were not read from a Server 2019 host:
# Kerberos computer authentication, main mode AES-128/SHA-1/DH2 then
# 3DES/SHA-1/DH2, quick mode ESP SHA-1 with AES-128 then with 3DES, no PFS.
BUILTIN_PHASE1_PROPOSALS = [{"AuthenticationMethod": "MachineKerberos"}]
BUILTIN_MAIN_MODE_PROPOSALS = [
    {"Encryption": "AES128", "Hash": "SHA1", "KeyExchange": "DH2"},
    {"Encryption": "DES3", "Hash": "SHA1", "KeyExchange": "DH2"},
]
BUILTIN_QUICK_MODE_PROPOSALS = [
    {"Encapsulation": "ESP", "AHHash": "None", "ESPHash": "SHA1", "Encryption": "AES128",
     "MaxKiloBytes": 100000, "MaxMinutes": 60},
    {"Encapsulation": "ESP", "AHHash": "None", "ESPHash": "SHA1", "Encryption": "DES3",
     "MaxKiloBytes": 100000, "MaxMinutes": 60},
]
DEFAULT_MAIN_MODE_LIFETIME_MINUTES = 480

# Failure reasons as Windows writes them in events 4653/4654, where known.
NO_POLICY = "No policy configured"
TIMED_OUT = "Negotiation timed out"
CREDENTIALS_UNACCEPTABLE = "IKE authentication credentials are unacceptable"
NO_MACHINE_CERTIFICATE = (
    "IKE failed to find valid machine certificate. Contact your Network Security Administrator about "
    "installing a valid certificate in the appropriate Certificate Store."
)
# NOTE: the two reasons below are the lab's choice of Windows error texts
# (SEC_E_TARGET_UNKNOWN; ERROR_IPSEC_IKE_ATTRIB_FAIL-like); not confirmed in events.
KERBEROS_TARGET_UNKNOWN = "The specified target is unknown or unreachable"
ATTRIBUTES_UNACCEPTABLE = "IKE security attributes are unacceptable"

# Event and SA labels for the proposal values.
CIPHER_LABELS = {
    "None": "None", "DES": "DES", "DES3": "3DES", "AES128": "AES-128", "AES192": "AES-192",
    "AES256": "AES-256", "AESGCM128": "AES-GCM-128", "AESGCM192": "AES-GCM-192", "AESGCM256": "AES-GCM-256",
}
HASH_LABELS = {
    "None": "None", "MD5": "MD5", "SHA1": "SHA-1", "SHA256": "SHA-256", "SHA384": "SHA-384",
    "AESGMAC128": "AES-GMAC-128", "AESGMAC192": "AES-GMAC-192", "AESGMAC256": "AES-GMAC-256",
}
GROUP_LABELS = {
    "None": "None", "DH1": "DH Group 1", "DH2": "DH Group 2", "DH14": "DH Group 14", "DH19": "DH Group 19",
    "DH20": "DH Group 20", "DH24": "DH Group 24", "SameAsMainMode": "Same as Main Mode",
}
METHOD_FAMILIES = {
    "MachineKerberos": "Kerberos", "UserKerberos": "Kerberos", "MachineCert": "Certificate",
    "MachineHealthCert": "Certificate", "UserCert": "Certificate", "PresharedKey": "PresharedKey",
    "MachineNtlm": "NTLM", "UserNtlm": "NTLM", "Anonymous": "Anonymous",
}


@dataclass(frozen=True)
class Traffic:
    """One connection attempt: addresses, protocol and ports (None for ICMP)."""

    source_address: str
    destination_address: str
    protocol: str  # "TCP", "UDP" or "ICMPv4"
    source_port: int | None = None
    destination_port: int | None = None


@dataclass
class NegotiationOutcome:
    """Result of one traffic attempt: delivered or not, protected by IPsec or not, and the reason."""

    delivered: bool
    protected: bool
    reason: str = ""


@dataclass
class _Failure(Exception):
    reason: str
    failure_point: str  # "Local computer" or "Remote computer", seen from the initiator
    with_certificate: bool = False


@dataclass
class _MainModeResult:
    method: str  # "Kerberos", "Certificate", "PresharedKey", ...
    initiator_identity: str
    responder_identity: str
    proposal: dict[str, Any]
    lifetime_minutes: int
    key_module: str


# Rule lookup


def _is_exemption(rule: dict[str, Any]) -> bool:
    return rule.get("InboundSecurity") == "None" and rule.get("OutboundSecurity") == "None"


def matching_rule(host: LabHost, local: str, remote: str, protocol: str, local_port: int | None,
                  remote_port: int | None) -> StoredObject | None:
    """Return the connection security rule Windows would apply to this traffic on ``host``."""
    same_subnet = same_slash24(local, remote)
    candidates = []
    for store in host.active_stores():
        for rule in store.of_kind("NetIPsecRule"):
            properties = rule.properties
            if properties.get("Enabled") != "True" or properties.get("Mode") != "Transport":
                continue
            if not address_matches(properties["LocalAddress"], local, same_subnet):
                continue
            if not address_matches(properties["RemoteAddress"], remote, same_subnet):
                continue
            if not protocol_matches(properties["Protocol"], protocol):
                continue
            if not (port_matches(properties["LocalPort"], local_port) and port_matches(properties["RemotePort"], remote_port)):
                continue
            candidates.append(StoredObject(store, rule))

    def rank(item: StoredObject) -> tuple[int, int, int, int]:
        properties = item.obj.properties
        return (
            0 if _is_exemption(properties) else 1,
            address_scope(properties["LocalAddress"]) * address_scope(properties["RemoteAddress"]),
            port_scope(properties["LocalPort"]) * port_scope(properties["RemotePort"]),
            0 if properties["Protocol"] != "Any" else 1,
        )

    candidates.sort(key=rank)
    return candidates[0] if candidates else None


def _main_mode_crypto(host: LabHost, local: str, remote: str) -> tuple[list[dict[str, Any]], int]:
    """Return the main mode crypto proposals and lifetime: the matching main mode rule's set, else the default set."""
    same_subnet = same_slash24(local, remote)
    for store in host.active_stores():
        for rule in store.of_kind("NetIPsecMainModeRule"):
            properties = rule.properties
            if properties.get("Enabled") != "True":
                continue
            if address_matches(properties["LocalAddress"], local, same_subnet) and \
                    address_matches(properties["RemoteAddress"], remote, same_subnet):
                crypto_set = _find_set(store, host, "NetIPsecMainModeCryptoSet", properties.get("MainModeCryptoSet"),
                                       DEFAULT_MAIN_MODE_CRYPTO_SET)
                if crypto_set is not None:
                    return crypto_set["Proposal"], crypto_set.get("MaxMinutes", DEFAULT_MAIN_MODE_LIFETIME_MINUTES)
    default = _find_set(host.state.persistent_store, host, "NetIPsecMainModeCryptoSet", None, DEFAULT_MAIN_MODE_CRYPTO_SET)
    if default is not None:
        return default["Proposal"], default.get("MaxMinutes", DEFAULT_MAIN_MODE_LIFETIME_MINUTES)
    return BUILTIN_MAIN_MODE_PROPOSALS, DEFAULT_MAIN_MODE_LIFETIME_MINUTES


def _find_set(store: PolicyStore, host: LabHost, noun: str, name: str | None, default_name: str) -> dict[str, Any] | None:
    """Find a set by name in the rule's store; without a name, the store's (or PersistentStore's) default set."""
    if name:
        found = store.find(noun, name)
        return found.properties if found else None
    for candidate in (store, host.state.persistent_store):
        found = candidate.find(noun, default_name)
        if found is not None:
            return found.properties
    return None


def _auth_proposals(host: LabHost, item: StoredObject) -> list[dict[str, Any]]:
    auth_set = _find_set(item.store, host, "NetIPsecPhase1AuthSet", item.obj.properties.get("Phase1AuthSet"),
                         DEFAULT_PHASE1_AUTH_SET)
    return auth_set["Proposal"] if auth_set is not None else BUILTIN_PHASE1_PROPOSALS


def _quick_mode_set(host: LabHost, item: StoredObject) -> tuple[list[dict[str, Any]], str]:
    crypto_set = _find_set(item.store, host, "NetIPsecQuickModeCryptoSet",
                           item.obj.properties.get("QuickModeCryptoSet"), DEFAULT_QUICK_MODE_CRYPTO_SET)
    if crypto_set is None:
        return BUILTIN_QUICK_MODE_PROPOSALS, "None"
    return crypto_set["Proposal"], crypto_set.get("PerfectForwardSecrecyGroup", "None")


# Credentials


def _certificate_for(host: LabHost, proposal: dict[str, Any]):
    """Return a machine certificate of ``host`` that chains to the proposal's Authority."""
    authority = (proposal.get("Authority") or "").lower()
    for certificate in host.facts.machine_certificates:
        if proposal.get("AuthorityType", "Root") == "Intermediate":
            if certificate.issuer.lower() == authority:
                return certificate
        elif authority in (certificate.chain_root.lower(), certificate.issuer.lower()):
            return certificate
    return None


def _has_credentials(host: LabHost, proposal: dict[str, Any]) -> bool:
    family = METHOD_FAMILIES.get(proposal.get("AuthenticationMethod", ""), "")
    if family == "Kerberos":
        return host.facts.domain is not None
    if family == "Certificate":
        return _certificate_for(host, proposal) is not None
    return True


def _authenticate(initiator: LabHost, responder: LabHost, initiator_proposals: list[dict[str, Any]],
                  responder_proposals: list[dict[str, Any]]) -> tuple[str, str, str]:
    """Agree on an auth method and check both sides' credentials; return (method, identities)."""
    offered = [p for p in initiator_proposals if _has_credentials(initiator, p)]
    if not offered:
        wants_certificate = any(METHOD_FAMILIES.get(p.get("AuthenticationMethod", "")) == "Certificate"
                                for p in initiator_proposals)
        reason = NO_MACHINE_CERTIFICATE if wants_certificate else CREDENTIALS_UNACCEPTABLE
        raise _Failure(reason, "Local computer", wants_certificate)

    for initiator_proposal in offered:
        family = METHOD_FAMILIES.get(initiator_proposal.get("AuthenticationMethod", ""), "")
        responder_proposal = next(
            (p for p in responder_proposals if METHOD_FAMILIES.get(p.get("AuthenticationMethod", "")) == family), None
        )
        if responder_proposal is None:
            continue

        if family == "Kerberos":
            if responder.facts.domain is None:
                raise _Failure(CREDENTIALS_UNACCEPTABLE, "Remote computer")
            trusted = initiator.facts.trusts_forest(responder.facts.forest_name) and \
                responder.facts.trusts_forest(initiator.facts.forest_name)
            if not trusted:
                raise _Failure(KERBEROS_TARGET_UNKNOWN, "Local computer")
            return "Kerberos", initiator.facts.kerberos_identity, responder.facts.kerberos_identity

        if family == "Certificate":
            responder_certificate = _certificate_for(responder, responder_proposal)
            if responder_certificate is None:
                raise _Failure(NO_MACHINE_CERTIFICATE, "Remote computer", True)
            # Each side validates the peer's certificate against the CA it names itself.
            if _certificate_for(initiator, responder_proposal) is None:
                raise _Failure(CREDENTIALS_UNACCEPTABLE, "Remote computer", True)
            if _certificate_for(responder, initiator_proposal) is None:
                raise _Failure(CREDENTIALS_UNACCEPTABLE, "Local computer", True)
            initiator_certificate = _certificate_for(initiator, initiator_proposal)
            return "Certificate", initiator_certificate.subject, responder_certificate.subject

        if family == "PresharedKey":
            if initiator_proposal.get("PreSharedKey") != responder_proposal.get("PreSharedKey"):
                raise _Failure(CREDENTIALS_UNACCEPTABLE, "Remote computer")
            return "PresharedKey", initiator.facts.addresses[0], responder.facts.addresses[0]

        if family == "Anonymous":
            return "Anonymous", "", ""
        if family == "NTLM":
            return "NTLM", initiator.facts.kerberos_identity, responder.facts.kerberos_identity

    raise _Failure(CREDENTIALS_UNACCEPTABLE, "Remote computer")


# Proposal matching


def _main_mode_key(proposal: dict[str, Any]) -> tuple[str, str, str]:
    return (proposal.get("Encryption"), proposal.get("Hash"), proposal.get("KeyExchange"))


def _quick_mode_key(proposal: dict[str, Any]) -> tuple[str, str, str, str]:
    return (proposal.get("Encapsulation"), proposal.get("AHHash"), proposal.get("ESPHash"), proposal.get("Encryption"))


def _first_common(initiator: list[dict[str, Any]], responder: list[dict[str, Any]], key) -> dict[str, Any] | None:
    responder_keys = {key(p) for p in responder}
    return next((p for p in initiator if key(p) in responder_keys), None)


def _key_module(first: str, second: str) -> str:
    if "IKEv1" in (first, second):
        return "IKEv1"
    if first == second == "IKEv2":
        return "IKEv2"
    return "AuthIP"


# The negotiation


class Negotiation:
    """One traffic attempt between two lab hosts and its effect on their SAs and event logs."""

    def __init__(self, initiator: LabHost, responder: LabHost | None, traffic: Traffic) -> None:
        self.initiator = initiator
        self.responder = responder
        self.traffic = traffic
        self.now: datetime = initiator.network.clock.now()

    def run(self) -> NegotiationOutcome:
        traffic = self.traffic
        for host in (self.initiator, self.responder):
            if host is not None:
                expire_sas(host)

        initiator_rule = matching_rule(self.initiator, traffic.source_address, traffic.destination_address,
                                       traffic.protocol, traffic.source_port, traffic.destination_port)
        outbound = "None"
        if initiator_rule is not None and not _is_exemption(initiator_rule.obj.properties):
            outbound = initiator_rule.obj.properties["OutboundSecurity"]

        if self.responder is None:
            return NegotiationOutcome(False, False, f"no lab host has address {traffic.destination_address}")

        responder_rule = matching_rule(self.responder, traffic.destination_address, traffic.source_address,
                                       traffic.protocol, traffic.destination_port, traffic.source_port)
        inbound = "None"
        if responder_rule is not None and not _is_exemption(responder_rule.obj.properties):
            inbound = responder_rule.obj.properties["InboundSecurity"]

        if outbound == "None":
            if inbound == "Require":
                return NegotiationOutcome(False, False, "the responder requires IPsec and dropped clear traffic")
            return NegotiationOutcome(True, False, "clear traffic: no IPsec policy on the initiator")

        if self._existing_quick_mode_sa(initiator_rule) is not None:
            return NegotiationOutcome(True, True, "existing quick mode SA")

        try:
            self._negotiate(initiator_rule, responder_rule)
        except _Failure as failure:
            if outbound == "Require" or inbound == "Require":
                return NegotiationOutcome(False, False, failure.reason)
            return NegotiationOutcome(True, False, f"fell back to clear: {failure.reason}")
        return NegotiationOutcome(True, True, "quick mode SA established")

    def _endpoints(self, host_is_initiator: bool) -> events.Endpoints:
        local, remote = self.traffic.source_address, self.traffic.destination_address
        return events.Endpoints(local, remote) if host_is_initiator else events.Endpoints(remote, local)

    def _log_main_mode_failure(self, failure: _Failure, key_module: str, method: str) -> None:
        event_id, message = events.main_mode_failed(
            self._endpoints(True), key_module, method, "Initiator", failure.failure_point, failure.reason,
            failure.with_certificate)
        self.initiator.add_event(event_id, message, success=False)
        if self.responder is not None and failure.reason not in (TIMED_OUT, NO_POLICY):
            responder_point = "Local computer" if failure.failure_point == "Remote computer" else "Remote computer"
            event_id, message = events.main_mode_failed(
                self._endpoints(False), key_module, method, "Responder", responder_point, failure.reason,
                failure.with_certificate)
            self.responder.add_event(event_id, message, success=False)

    def _negotiate(self, initiator_rule: StoredObject, responder_rule: StoredObject | None) -> None:
        initiator, responder, traffic = self.initiator, self.responder, self.traffic
        assert responder is not None
        key_module = "AuthIP"

        if not initiator.facts.ikeext_running:
            event_id, message = events.ikeext_not_started(self._endpoints(True))
            initiator.add_event(event_id, message, success=False)
            raise _Failure("IKEEXT service is not started", "Local computer")
        if not responder.facts.ikeext_running:
            failure = _Failure(TIMED_OUT, "Remote computer")
            self._log_main_mode_failure(failure, key_module, "Unknown authentication")
            raise failure
        if responder_rule is None or _is_exemption(responder_rule.obj.properties):
            failure = _Failure(NO_POLICY, "Remote computer")
            self._log_main_mode_failure(failure, key_module, "Unknown authentication")
            raise failure

        key_module = _key_module(initiator_rule.obj.properties.get("KeyModule", "Default"),
                                 responder_rule.obj.properties.get("KeyModule", "Default"))
        main_mode = self._main_mode(initiator_rule, responder_rule, key_module)
        self._quick_mode(initiator_rule, responder_rule, main_mode)

    def _main_mode(self, initiator_rule: StoredObject, responder_rule: StoredObject, key_module: str) -> tuple[int, int]:
        initiator, responder, traffic = self.initiator, self.responder, self.traffic
        assert responder is not None
        existing = self._existing_main_mode_sa()
        if existing is not None:
            return existing

        try:
            method, initiator_identity, responder_identity = _authenticate(
                initiator, responder, _auth_proposals(initiator, initiator_rule), _auth_proposals(responder, responder_rule))
        except _Failure as failure:
            self._log_main_mode_failure(failure, key_module, "Unknown authentication")
            raise

        initiator_proposals, lifetime = _main_mode_crypto(initiator, traffic.source_address, traffic.destination_address)
        responder_proposals, _ = _main_mode_crypto(responder, traffic.destination_address, traffic.source_address)
        proposal = _first_common(initiator_proposals, responder_proposals, _main_mode_key)
        if proposal is None:
            failure = _Failure(ATTRIBUTES_UNACCEPTABLE, "Remote computer", method == "Certificate")
            self._log_main_mode_failure(failure, key_module, method)
            raise failure

        result = _MainModeResult(method, initiator_identity, responder_identity, proposal, lifetime, key_module)
        initiator_sa = self._add_main_mode_sa(initiator, True, result)
        responder_sa = self._add_main_mode_sa(responder, False, result)
        return initiator_sa, responder_sa

    def _add_main_mode_sa(self, host: LabHost, is_initiator: bool, result: _MainModeResult) -> int:
        endpoints = self._endpoints(is_initiator)
        sa_id = host.next_sa_id()
        host.state.main_mode_sas.append({
            "id": sa_id,
            "local_address": endpoints.local_address,
            "remote_address": endpoints.remote_address,
            "authentication_method": result.method,
            "local_identity": result.initiator_identity if is_initiator else result.responder_identity,
            "remote_identity": result.responder_identity if is_initiator else result.initiator_identity,
            "encryption": result.proposal.get("Encryption"),
            "hash": result.proposal.get("Hash"),
            "key_exchange": result.proposal.get("KeyExchange"),
            "key_module": result.key_module,
            "created": self.now.isoformat(),
            "lifetime_seconds": result.lifetime_minutes * 60,
        })
        event_id, message = events.main_mode_established(
            endpoints, result.key_module, result.method, "Initiator" if is_initiator else "Responder",
            CIPHER_LABELS.get(result.proposal.get("Encryption"), "None"),
            HASH_LABELS.get(result.proposal.get("Hash"), "None"),
            GROUP_LABELS.get(result.proposal.get("KeyExchange"), "None"),
            result.lifetime_minutes, result.method == "Certificate",
        )
        host.add_event(event_id, message, success=True)
        return sa_id

    def _quick_mode(self, initiator_rule: StoredObject, responder_rule: StoredObject, main_mode_ids: tuple[int, int]) -> None:
        initiator, responder = self.initiator, self.responder
        assert responder is not None
        initiator_proposals, initiator_pfs = _quick_mode_set(initiator, initiator_rule)
        responder_proposals, responder_pfs = _quick_mode_set(responder, responder_rule)
        proposal = _first_common(initiator_proposals, responder_proposals, _quick_mode_key)
        if proposal is None or initiator_pfs != responder_pfs:
            failure = _Failure(ATTRIBUTES_UNACCEPTABLE, "Remote computer")
            for host, is_initiator in ((initiator, True), (responder, False)):
                point = failure.failure_point if is_initiator else "Local computer"
                event_id, message = events.quick_mode_failed(
                    self._endpoints(is_initiator), "Initiator" if is_initiator else "Responder", point, failure.reason)
                host.add_event(event_id, message, success=False)
            raise failure

        for host, is_initiator, mm_id, rule in (
            (initiator, True, main_mode_ids[0], initiator_rule),
            (responder, False, main_mode_ids[1], responder_rule),
        ):
            self._add_quick_mode_sa(host, is_initiator, mm_id, rule, proposal, initiator_pfs)

    def _add_quick_mode_sa(self, host: LabHost, is_initiator: bool, main_mode_id: int, rule: StoredObject,
                           proposal: dict[str, Any], pfs_group: str) -> None:
        traffic = self.traffic
        endpoints = self._endpoints(is_initiator)
        local_port = traffic.source_port if is_initiator else traffic.destination_port
        remote_port = traffic.destination_port if is_initiator else traffic.source_port
        # An SA covers what the rule covers: ports only when the rule names them.
        properties = rule.obj.properties
        host.state.quick_mode_sas.append({
            "id": host.next_sa_id(),
            "main_mode_id": main_mode_id,
            "rule": properties["Name"],
            "local_address": endpoints.local_address,
            "remote_address": endpoints.remote_address,
            "protocol": traffic.protocol if properties["Protocol"] != "Any" else "Any",
            "local_port": (local_port or 0) if properties["LocalPort"] != ["Any"] else 0,
            "remote_port": (remote_port or 0) if properties["RemotePort"] != ["Any"] else 0,
            "encapsulation": proposal.get("Encapsulation"),
            "ah_hash": proposal.get("AHHash"),
            "esp_hash": proposal.get("ESPHash"),
            "encryption": proposal.get("Encryption"),
            "pfs_group": pfs_group,
            "created": self.now.isoformat(),
            "lifetime_seconds": int(proposal.get("MaxMinutes", 60)) * 60,
            "lifetime_kilobytes": int(proposal.get("MaxKiloBytes", 100000)),
        })
        integrity = proposal.get("ESPHash") if proposal.get("Encapsulation") != "AH" else proposal.get("AHHash")
        event_id, message = events.quick_mode_established(
            endpoints, traffic.protocol, local_port or 0, remote_port or 0, proposal.get("Encapsulation", "ESP"),
            HASH_LABELS.get(integrity, "None"), CIPHER_LABELS.get(proposal.get("Encryption"), "None"),
            int(proposal.get("MaxMinutes", 60)), "Initiator" if is_initiator else "Responder",
        )
        host.add_event(event_id, message, success=True)

    def _existing_main_mode_sa(self) -> tuple[int, int] | None:
        assert self.responder is not None
        mine = _find_sa(self.initiator.state.main_mode_sas, self.traffic.source_address, self.traffic.destination_address)
        theirs = _find_sa(self.responder.state.main_mode_sas, self.traffic.destination_address, self.traffic.source_address)
        if mine is not None and theirs is not None:
            return mine["id"], theirs["id"]
        return None

    def _existing_quick_mode_sa(self, rule: StoredObject) -> dict[str, Any] | None:
        for sa in self.initiator.state.quick_mode_sas:
            if sa["rule"] == rule.obj.name and sa["local_address"] == self.traffic.source_address \
                    and sa["remote_address"] == self.traffic.destination_address:
                return sa
        return None


def _find_sa(sas: list[dict[str, Any]], local: str, remote: str) -> dict[str, Any] | None:
    return next((sa for sa in sas if sa["local_address"] == local and sa["remote_address"] == remote), None)


def expire_sas(host: LabHost) -> None:
    """Drop SAs whose lifetime has passed on the lab clock, logging 4655/5452 as Windows does."""
    now = host.network.clock.now()

    def expired(sa: dict[str, Any]) -> bool:
        return datetime.fromisoformat(sa["created"]) + timedelta(seconds=sa["lifetime_seconds"]) <= now

    for sas, event_id in ((host.state.quick_mode_sas, events.QUICK_MODE_ENDED),
                          (host.state.main_mode_sas, events.MAIN_MODE_ENDED)):
        for sa in [sa for sa in sas if expired(sa)]:
            sas.remove(sa)
            ended_id, message = events.sa_ended(event_id, events.Endpoints(sa["local_address"], sa["remote_address"]))
            host.add_event(ended_id, message, success=True)
    live_main_mode = {sa["id"] for sa in host.state.main_mode_sas}
    host.state.quick_mode_sas[:] = [sa for sa in host.state.quick_mode_sas if sa["main_mode_id"] in live_main_mode]


def send_traffic(initiator: LabHost, traffic: Traffic) -> NegotiationOutcome:
    """Model one connection attempt from ``initiator``; the network registry finds the responder."""
    responder = initiator.network.host_by_address(traffic.destination_address)
    return Negotiation(initiator, responder, traffic).run()
