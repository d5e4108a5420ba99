"""New-NetIPsec*Proposal, which build proposal objects for -Proposal, and Open-/Save-NetGPO."""

from __future__ import annotations

import uuid

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.context import CmdletContext, cmdlet
from ipsec_deploy.lab.netsecurity.objects import proposal_instance

# Parameter set of New-NetIPsecAuthProposal -> the proposal's AuthenticationMethod.
# NOTE: the method names are the lab's; the values Windows shows in the
# MSFT_NetIKEAuthProposal instances were not confirmed.
AUTH_METHODS = {
    "MachineKerb": "MachineKerberos",
    "UserKerb": "UserKerberos",
    "MachineNTLM": "MachineNtlm",
    "UserNTLM": "UserNtlm",
    "PSK": "PresharedKey",
    "Anonymous": "Anonymous",
    "HealthCert": "MachineCert",
    "Cert": "UserCert",
}
CERTIFICATE_OPTIONS = (
    "Authority", "AuthorityType", "ExtendedKeyUsage", "FollowRenewal", "SelectionCriteria", "Signing",
    "SubjectName", "SubjectNameType", "Thumbprint", "ValidationCriteria", "ExcludeCAName", "AccountMapping",
)


@cmdlet("New-NetIPsecAuthProposal")
def new_auth_proposal(ctx: CmdletContext) -> None:
    bound = ctx.bound
    method = AUTH_METHODS[bound.parameter_set]
    if method == "MachineCert" and bound.get("Health"):
        method = "MachineHealthCert"

    properties = {"AuthenticationMethod": method}
    if method.endswith("Cert"):
        # Defaults from the help page: AuthorityType Root, Signing RSA.
        properties.update({"AuthorityType": "Root", "Signing": "RSA"})
        for name in CERTIFICATE_OPTIONS:
            if bound.has(name):
                properties[name] = bound.get(name)
    if method == "PresharedKey":
        properties["PreSharedKey"] = bound.get("PreSharedKey")
    if bound.has("Proxy"):
        properties["Proxy"] = bound.get("Proxy")
    ctx.output.append(proposal_instance("MSFT_NetIKEAuthProposal", properties))


@cmdlet("New-NetIPsecMainModeCryptoProposal")
def new_main_mode_crypto_proposal(ctx: CmdletContext) -> None:
    # Defaults from the help page: AES256 and SHA384, key exchange None.
    bound = ctx.bound
    ctx.output.append(proposal_instance("MSFT_NetIKEMMCryptoProposal", {
        "Encryption": bound.get("Encryption", "AES256"),
        "Hash": bound.get("Hash", "SHA384"),
        "KeyExchange": bound.get("KeyExchange", "None"),
    }))


@cmdlet("New-NetIPsecQuickModeCryptoProposal")
def new_quick_mode_crypto_proposal(ctx: CmdletContext) -> None:
    bound = ctx.bound
    encapsulation = bound.get("Encapsulation", "None")
    if encapsulation == "None":
        # NOTE: the help page gives None as the default; a proposal without
        # encapsulation is useless, so the lab takes ESP when ESP options
        # are given and AH when only -AHHash is.
        if bound.has("AHHash") and not (bound.has("ESPHash") or bound.has("Encryption")):
            encapsulation = "AH"
        elif bound.has("ESPHash") or bound.has("Encryption"):
            encapsulation = "ESP"
    ctx.output.append(proposal_instance("MSFT_NetIKEQMCryptoProposal", {
        "Encapsulation": encapsulation,
        "AHHash": bound.get("AHHash", "None"),
        "ESPHash": bound.get("ESPHash", "None"),
        "Encryption": bound.get("Encryption", "None"),
        "MaxKiloBytes": bound.get("MaxKiloBytes", 100000),
        "MaxMinutes": bound.get("MaxMinutes", 60),
    }))


@cmdlet("Open-NetGPO")
def open_gpo(ctx: CmdletContext) -> None:
    store_name = ctx.bound.get("PolicyStore")
    store = ctx.host.store_for_write(ctx.command, store_name)
    if store.store_type != "GroupPolicy":
        raise errors.windows_system_error(
            ctx.command, 87, f"The parameter is incorrect. '{store_name}' is not a GPO.", "InvalidArgument", store_name,
        )
    session = f"{store.name}#{uuid.uuid4().hex[:8]}"
    ctx.host.state.gpo_sessions[session] = store.name
    ctx.output.append(session)


@cmdlet("Save-NetGPO")
def save_gpo(ctx: CmdletContext) -> None:
    # NOTE: writes through -GPOSession go to the GPO at once; Windows caches
    # them until Save-NetGPO. Saving only checks the session exists.
    session = ctx.bound.get("GPOSession")
    if session not in ctx.host.state.gpo_sessions:
        raise errors.windows_system_error(
            ctx.command, 87, f"The parameter is incorrect. No open GPO session '{session}'.", "InvalidArgument", session,
        )
