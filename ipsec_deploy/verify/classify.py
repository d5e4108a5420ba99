"""Match security associations to probed pairs and judge each pair against the plan. Pure.

Numeric codes are those of the MSFT_NetMainModeSA and MSFT_NetQuickModeSA
class documentation (CipherAlgorithm, HashAlgorithm, GroupId,
FirstCipherAlgorithm, FirstIntegrityAlgorithm, PfsGroupId), written as the
NetSecurity enum names that the inventory uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..inventory.model import MainModeProposal, QuickModeProposal
from .expectations import PairProbe

CIPHERS = {"0": "None", "2": "DES", "6": "DES3", "65001": "AES128", "65002": "AES192", "65003": "AES256", "65004": "AESGCM128", "65005": "AESGCM192", "65006": "AESGCM256"}
MAIN_MODE_HASHES = {"0": "None", "2": "MD5", "3": "SHA1", "65001": "SHA256", "65002": "SHA384", "65003": "AESGMAC128", "65004": "AESGMAC192", "65005": "AESGMAC256"}
QUICK_MODE_INTEGRITY = {"0": "None", "2": "MD5", "3": "SHA1", "65001": "SHA256", "65003": "AESGMAC128", "65004": "AESGMAC192", "65005": "AESGMAC256"}
DH_GROUPS = {"0": "None", "1": "DH1", "2": "DH2", "14": "DH14", "19": "DH19", "20": "DH20", "24": "DH24", "65535": "SameAsMainMode"}

# IKEEXT_AUTHENTICATION_METHOD_TYPE, the AuthenticationMethod of the
# MSFT_NetIPsecIdentity inside a main mode SA.
# NOTE: the class page publishes no value map; these are the IKEEXT
# enumeration's values, as the lab also uses them.
SA_AUTH_METHODS = {"0": "pre_shared_key", "1": "certificate", "2": "kerberos", "3": "anonymous", "5": "ntlm", "7": "certificate", "8": "certificate"}

# IPSEC_TRANSFORM_TYPE: 1 AH, 2 ESP authentication only, 3 ESP cipher
# only, 4 ESP authentication and cipher.
TRANSFORMS = {"1": "AH", "2": "ESP", "3": "ESP", "4": "ESP"}

ENCRYPTED = "encrypted"
DIFFERENT = "different algorithms"
CLEAR = "not encrypted"
FAILING = "negotiation failing"
ONE_SIDED = "one-sided"
EXEMPT = "exempt"
NOT_EXEMPT = "exemption not effective"
SKIPPED = "not verified"
RULE_MISSING = "rule missing"
RULE_DIFFERS = "rule differs"  # a host has the rule, but not as planned (other traffic or security)

PASSING = frozenset({ENCRYPTED, EXEMPT})


@dataclass(frozen=True)
class MainModeSA:
    local: str
    remote: str
    auth_method: str
    encryption: str
    hash: str
    key_exchange: str


@dataclass(frozen=True)
class QuickModeSA:
    local: str
    remote: str
    protocol: int
    remote_port: int
    encapsulation: str
    encryption: str
    integrity: str
    pfs_group: str


@dataclass
class HostSAs:
    main_mode: list[MainModeSA] = field(default_factory=list)
    quick_mode: list[QuickModeSA] = field(default_factory=list)


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value)


def _number(record: dict[str, Any], key: str) -> int:
    text = _text(record, key)
    return int(text) if text.isdigit() else 0


def parse_sas(records: list[Any]) -> HostSAs:
    """Read the output of read_security_associations into typed SAs."""
    sas = HostSAs()
    for record in records:
        if not isinstance(record, dict):
            continue
        if record.get("Kind") == "main_mode_sa":
            sas.main_mode.append(
                MainModeSA(
                    local=_text(record, "LocalEndpoint"),
                    remote=_text(record, "RemoteEndpoint"),
                    auth_method=SA_AUTH_METHODS.get(_text(record, "AuthenticationMethod"), _text(record, "AuthenticationMethod")),
                    encryption=CIPHERS.get(_text(record, "CipherAlgorithm"), _text(record, "CipherAlgorithm")),
                    hash=MAIN_MODE_HASHES.get(_text(record, "HashAlgorithm"), _text(record, "HashAlgorithm")),
                    key_exchange=DH_GROUPS.get(_text(record, "GroupId"), _text(record, "GroupId")),
                )
            )
        elif record.get("Kind") == "quick_mode_sa":
            sas.quick_mode.append(
                QuickModeSA(
                    local=_text(record, "LocalEndpoint"),
                    remote=_text(record, "RemoteEndpoint"),
                    protocol=_number(record, "IpProtocol"),
                    remote_port=_number(record, "RemotePort"),
                    encapsulation=TRANSFORMS.get(_text(record, "FirstTransformType"), "ESP"),
                    encryption=CIPHERS.get(_text(record, "FirstCipherAlgorithm"), _text(record, "FirstCipherAlgorithm")),
                    integrity=QUICK_MODE_INTEGRITY.get(_text(record, "FirstIntegrityAlgorithm"), _text(record, "FirstIntegrityAlgorithm")),
                    pfs_group=DH_GROUPS.get(_text(record, "PfsGroupId"), _text(record, "PfsGroupId")),
                )
            )
    return sas


@dataclass
class PairResult:
    probe: PairProbe
    status: str
    reason: str
    negotiated: str = ""  # the algorithms seen, for the report
    events: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status in PASSING


_PROTOCOL_NUMBERS = {"TCP": 6, "ICMPv4": 1, "ICMPv6": 58}


def _main_modes(sas: HostSAs, local: str, remote: str) -> list[MainModeSA]:
    return [sa for sa in sas.main_mode if sa.local == local and sa.remote == remote]


def _quick_modes(sas: HostSAs, local: str, remote: str, probe: PairProbe) -> list[QuickModeSA]:
    # A transport-mode SA for a rule with protocol Any carries protocol 0.
    wanted = _PROTOCOL_NUMBERS.get(probe.protocol, 0)
    return [sa for sa in sas.quick_mode if sa.local == local and sa.remote == remote and sa.protocol in (0, wanted)]


def _main_mode(sas: HostSAs, local: str, remote: str) -> MainModeSA | None:
    return next(iter(_main_modes(sas, local, remote)), None)


def _quick_mode(sas: HostSAs, local: str, remote: str, probe: PairProbe) -> QuickModeSA | None:
    return next(iter(_quick_modes(sas, local, remote, probe)), None)


def describe(main_mode: MainModeSA, quick_mode: QuickModeSA) -> str:
    pfs = f", PFS {quick_mode.pfs_group}" if quick_mode.pfs_group not in ("", "None") else ""
    return (
        f"{main_mode.auth_method}; main mode {main_mode.encryption}/{main_mode.hash}/{main_mode.key_exchange}; "
        f"quick mode {quick_mode.encapsulation} {quick_mode.encryption}/{quick_mode.integrity}{pfs}"
    )


def compare_to_plan(probe: PairProbe, main_mode: MainModeSA, quick_mode: QuickModeSA) -> list[str]:
    """Return how the negotiated SAs differ from what both sides' plans allow; empty when they match."""
    expected = probe.expected
    if expected is None:
        return []
    differences = []
    if expected.auth_methods and main_mode.auth_method not in {m.method for m in expected.auth_methods}:
        differences.append(f"authenticated with {main_mode.auth_method}, planned {', '.join(m.method for m in expected.auth_methods)}")
    negotiated_main = MainModeProposal(main_mode.encryption, main_mode.hash, main_mode.key_exchange)
    if expected.main_mode and negotiated_main not in expected.main_mode:
        planned = ", ".join(f"{p.encryption}/{p.hash}/{p.key_exchange}" for p in expected.main_mode)
        differences.append(f"main mode {main_mode.encryption}/{main_mode.hash}/{main_mode.key_exchange}, planned {planned}")
    negotiated_quick = QuickModeProposal(quick_mode.encapsulation, quick_mode.encryption if quick_mode.encapsulation == "ESP" else None, quick_mode.integrity)  # type: ignore[arg-type]
    if expected.quick_mode and negotiated_quick not in expected.quick_mode:
        planned = ", ".join(f"{p.encapsulation} {p.encryption or '-'}/{p.integrity}" for p in expected.quick_mode)
        differences.append(f"quick mode {quick_mode.encapsulation} {quick_mode.encryption}/{quick_mode.integrity}, planned {planned}")
    if expected.pfs_group not in ("None", "SameAsMainMode") and quick_mode.pfs_group != expected.pfs_group:
        differences.append(f"PFS group {quick_mode.pfs_group or 'None'}, planned {expected.pfs_group}")
    return differences


def classify(probe: PairProbe, initiator: HostSAs, responder: HostSAs, probe_succeeded: bool | None) -> PairResult:
    """Judge one pair from both hosts' SAs and the probe's outcome."""
    if probe.skip_reason:
        return PairResult(probe, SKIPPED, probe.skip_reason)

    local, remote = probe.initiator_address, probe.responder_address
    main_a, main_b = _main_mode(initiator, local, remote), _main_mode(responder, remote, local)
    quick_a, quick_b = _quick_mode(initiator, local, remote, probe), _quick_mode(responder, remote, local, probe)

    if probe.exemption:
        # An SA of a protocol-Any rule between the same hosts does not carry
        # exempted traffic: Windows matches exemptions first. Only an SA for
        # the exempted protocol itself shows that the exemption is not used.
        wanted = _PROTOCOL_NUMBERS.get(probe.protocol, 0)
        quick_a = next((sa for sa in initiator.quick_mode if sa.local == local and sa.remote == remote and sa.protocol == wanted), None)
        quick_b = next((sa for sa in responder.quick_mode if sa.local == remote and sa.remote == local and sa.protocol == wanted), None)
        if quick_a or quick_b:
            return PairResult(probe, NOT_EXEMPT, "the exempted traffic was protected by an SA: a more specific rule may cover it")
        if probe_succeeded is False:
            return PairResult(probe, NOT_EXEMPT, "the exempted traffic did not get through")
        return PairResult(probe, EXEMPT, "no SA, as planned")

    a_has = main_a is not None and quick_a is not None
    b_has = main_b is not None and quick_b is not None
    if a_has and b_has:
        assert main_a and quick_a
        # During a rekey, or after a crypto change, old and new SAs coexist
        # until the old ones expire: one pair of SAs as planned is enough.
        for main in _main_modes(initiator, local, remote):
            for quick in _quick_modes(initiator, local, remote, probe):
                if not compare_to_plan(probe, main, quick):
                    return PairResult(probe, ENCRYPTED, "SAs on both hosts match the plan", describe(main, quick))
        differences = compare_to_plan(probe, main_a, quick_a)
        return PairResult(probe, DIFFERENT, "; ".join(differences), describe(main_a, quick_a))
    if a_has or b_has:
        side = probe.initiator if a_has else probe.responder
        return PairResult(probe, ONE_SIDED, f"only {side} has SAs for this pair")
    if probe_succeeded:
        return PairResult(probe, CLEAR, "the connection succeeded without any SA: traffic is in the clear")
    return PairResult(probe, FAILING, "no SA and the connection failed")
