"""Security log events for IPsec negotiations (IDs 4650-4655 and 5451-5453).

NOTE: the message layout follows the Windows audit events as far as known,
with shortened field lists. The failure reasons are Windows' wording where
known and otherwise the lab's approximation (see the negotiation module).
"""

from __future__ import annotations

from dataclasses import dataclass

MAIN_MODE_ESTABLISHED = 4650
MAIN_MODE_ESTABLISHED_WITH_CERTIFICATE = 4651
MAIN_MODE_FAILED_WITH_CERTIFICATE = 4652
MAIN_MODE_FAILED = 4653
QUICK_MODE_FAILED = 4654
MAIN_MODE_ENDED = 4655
QUICK_MODE_ESTABLISHED = 5451
QUICK_MODE_ENDED = 5452
IKEEXT_NOT_STARTED = 5453

IPSEC_EVENT_IDS = (4650, 4651, 4652, 4653, 4654, 4655, 5451, 5452, 5453)

TITLES = {
    MAIN_MODE_ESTABLISHED: "An IPsec main mode security association was established. Extended Mode was not "
                           "enabled. Certificate authentication was not used.",
    MAIN_MODE_ESTABLISHED_WITH_CERTIFICATE: "An IPsec main mode security association was established. Extended "
                                            "Mode was not enabled. A certificate was used for authentication.",
    MAIN_MODE_FAILED_WITH_CERTIFICATE: "An IPsec main mode negotiation failed.",
    MAIN_MODE_FAILED: "An IPsec main mode negotiation failed.",
    QUICK_MODE_FAILED: "An IPsec quick mode negotiation failed.",
    MAIN_MODE_ENDED: "An IPsec main mode security association ended.",
    QUICK_MODE_ESTABLISHED: "An IPsec quick mode security association was established.",
    QUICK_MODE_ENDED: "An IPsec quick mode security association ended.",
    IKEEXT_NOT_STARTED: "An IPsec negotiation with a remote computer failed because the IKE and AuthIP IPsec "
                        "Keying Modules (IKEEXT) service is not started.",
}


@dataclass(frozen=True)
class Endpoints:
    local_address: str
    remote_address: str
    local_principal: str = "-"
    remote_principal: str = "-"


def _endpoint_block(endpoints: Endpoints) -> str:
    return (
        "Local Endpoint:\n"
        f"\tPrincipal Name:\t\t{endpoints.local_principal}\n"
        f"\tNetwork Address:\t{endpoints.local_address}\n"
        "\tKeying Module Port:\t500\n\n"
        "Remote Endpoint:\n"
        f"\tPrincipal Name:\t\t{endpoints.remote_principal}\n"
        f"\tNetwork Address:\t{endpoints.remote_address}\n"
        "\tKeying Module Port:\t500\n"
    )


def main_mode_established(endpoints: Endpoints, key_module: str, authentication: str, role: str,
                          cipher: str, integrity: str, dh_group: str, lifetime_minutes: int,
                          with_certificate: bool) -> tuple[int, str]:
    event_id = MAIN_MODE_ESTABLISHED_WITH_CERTIFICATE if with_certificate else MAIN_MODE_ESTABLISHED
    message = (
        f"{TITLES[event_id]}\n\n{_endpoint_block(endpoints)}\n"
        "Cryptographic Information:\n"
        f"\tCipher Algorithm:\t{cipher}\n"
        f"\tIntegrity Algorithm:\t{integrity}\n"
        f"\tDiffie-Hellman Group:\t{dh_group}\n\n"
        "Security Association Information:\n"
        f"\tLifetime (minutes):\t{lifetime_minutes}\n\n"
        "Additional Information:\n"
        f"\tKeying Module Name:\t{key_module}\n"
        f"\tAuthentication Method:\t{authentication}\n"
        f"\tRole:\t\t\t{role}\n"
    )
    return event_id, message


def main_mode_failed(endpoints: Endpoints, key_module: str, authentication: str, role: str,
                     failure_point: str, reason: str, with_certificate: bool = False) -> tuple[int, str]:
    event_id = MAIN_MODE_FAILED_WITH_CERTIFICATE if with_certificate else MAIN_MODE_FAILED
    message = (
        f"{TITLES[event_id]}\n\n{_endpoint_block(endpoints)}\n"
        "Additional Information:\n"
        f"\tKeying Module Name:\t{key_module}\n"
        f"\tAuthentication Method:\t{authentication}\n"
        f"\tRole:\t\t\t{role}\n\n"
        "Failure Information:\n"
        f"\tFailure Point:\t\t{failure_point}\n"
        f"\tFailure Reason:\t\t{reason}\n"
    )
    return event_id, message


def quick_mode_established(endpoints: Endpoints, protocol: str, local_port: int, remote_port: int,
                           encapsulation: str, integrity: str, cipher: str, lifetime_minutes: int,
                           role: str) -> tuple[int, str]:
    message = (
        f"{TITLES[QUICK_MODE_ESTABLISHED]}\n\n"
        f"Local Endpoint:\n\tNetwork Address:\t{endpoints.local_address}\n\tPort:\t\t\t{local_port}\n\n"
        f"Remote Endpoint:\n\tNetwork Address:\t{endpoints.remote_address}\n\tPort:\t\t\t{remote_port}\n\n"
        f"\tProtocol:\t\t{protocol}\n\n"
        "Cryptographic Information:\n"
        f"\tIntegrity Algorithm - {encapsulation}:\t{integrity}\n"
        f"\tEncryption Algorithm:\t{cipher}\n\n"
        "Security Association Information:\n"
        f"\tLifetime - seconds:\t{lifetime_minutes * 60}\n"
        "\tMode:\t\t\tTransport\n"
        f"\tRole:\t\t\t{role}\n"
    )
    return QUICK_MODE_ESTABLISHED, message


def quick_mode_failed(endpoints: Endpoints, role: str, failure_point: str, reason: str) -> tuple[int, str]:
    message = (
        f"{TITLES[QUICK_MODE_FAILED]}\n\n"
        f"Local Endpoint:\n\tNetwork Address:\t{endpoints.local_address}\n\n"
        f"Remote Endpoint:\n\tNetwork Address:\t{endpoints.remote_address}\n\n"
        "Additional Information:\n"
        "\tKeying Module Name:\tAuthIP\n"
        "\tMode:\t\t\tTransport\n"
        f"\tRole:\t\t\t{role}\n\n"
        "Failure Information:\n"
        f"\tFailure Point:\t\t{failure_point}\n"
        f"\tFailure Reason:\t\t{reason}\n"
    )
    return QUICK_MODE_FAILED, message


def sa_ended(event_id: int, endpoints: Endpoints) -> tuple[int, str]:
    message = (
        f"{TITLES[event_id]}\n\n"
        f"Local Endpoint:\n\tNetwork Address:\t{endpoints.local_address}\n\n"
        f"Remote Endpoint:\n\tNetwork Address:\t{endpoints.remote_address}\n"
    )
    return event_id, message


def ikeext_not_started(endpoints: Endpoints) -> tuple[int, str]:
    message = (
        f"{TITLES[IKEEXT_NOT_STARTED]}\n\n"
        f"Local Endpoint:\n\tNetwork Address:\t{endpoints.local_address}\n\n"
        f"Remote Endpoint:\n\tNetwork Address:\t{endpoints.remote_address}\n"
    )
    return IKEEXT_NOT_STARTED, message
