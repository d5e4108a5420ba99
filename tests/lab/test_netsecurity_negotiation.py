"""Modelled IKE negotiation between lab hosts: SAs, events and connection outcomes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ipsec_deploy.lab.netsecurity import HostFacts, LabHost, LabNetwork, MachineCertificate, NetSecurityHandler
from ipsec_deploy.lab.netsecurity.requests import command, pipeline

A_ADDRESS = "10.0.1.10"
B_ADDRESS = "10.0.1.11"
GROUP = "ipsec-deploy"


def run(host: LabHost, name: str, *positional, **parameters):
    return NetSecurityHandler(host).run_pipeline(pipeline(command(name, *positional, **parameters)))


def make_pair(network: LabNetwork, a: HostFacts | None = None, b: HostFacts | None = None) -> tuple[LabHost, LabHost]:
    a = a or HostFacts("SRV-A", [A_ADDRESS], domain="corp.example")
    b = b or HostFacts("SRV-B", [B_ADDRESS], domain="corp.example")
    return network.add_host(a), network.add_host(b)


def apply_policy(host: LabHost, remote: str, inbound: str = "Require", outbound: str = "Require",
                 auth: dict | None = None, main_mode: dict | None = None) -> None:
    """Create the sets, a main mode rule and a transport rule to ``remote`` as ipsec-deploy would."""
    auth = auth or {"Machine": True, "Kerberos": True}
    main_mode = main_mode or {"Encryption": "AES256", "Hash": "SHA256", "KeyExchange": "DH14"}
    auth_proposal = host.invoke_checked("New-NetIPsecAuthProposal", auth)
    host.invoke_checked("New-NetIPsecPhase1AuthSet", {"Name": f"{GROUP}-p1", "DisplayName": "P1", "Proposal": auth_proposal})
    mm_proposal = host.invoke_checked("New-NetIPsecMainModeCryptoProposal", main_mode)
    host.invoke_checked("New-NetIPsecMainModeCryptoSet", {"Name": f"{GROUP}-mm", "DisplayName": "MM", "Proposal": mm_proposal})
    host.invoke_checked("New-NetIPsecMainModeRule", {"Name": f"{GROUP}-mmrule", "DisplayName": "MM rule",
                                                     "MainModeCryptoSet": f"{GROUP}-mm", "RemoteAddress": remote})
    qm_proposal = host.invoke_checked("New-NetIPsecQuickModeCryptoProposal",
                                      {"Encapsulation": "ESP", "ESPHash": "SHA256", "Encryption": "AES256"})
    host.invoke_checked("New-NetIPsecQuickModeCryptoSet", {"Name": f"{GROUP}-qm", "DisplayName": "QM",
                                                           "Proposal": qm_proposal, "PfsGroup": "DH14"})
    host.invoke_checked("New-NetIPsecRule", {
        "IPsecRuleName": f"{GROUP}-rule", "DisplayName": "Protect peer", "Group": GROUP,
        "InboundSecurity": inbound, "OutboundSecurity": outbound, "RemoteAddress": remote,
        "Phase1AuthSet": f"{GROUP}-p1", "QuickModeCryptoSet": f"{GROUP}-qm",
    })


def connect(host: LabHost, target: str, port: int = 445):
    result = run(host, "Test-NetConnection", ComputerName=target, Port=port)
    assert result.state == "Completed", result.failure
    return result.output[0].properties


def event_ids(host: LabHost) -> list[int]:
    result = run(host, "Get-WinEvent", FilterHashtable=[{"LogName": "Security", "Id": [4650, 4651, 4652, 4653,
                                                                                      4654, 5451]}],
                 ErrorAction="SilentlyContinue")
    return [e.properties["Id"] for e in result.output]


@pytest.fixture
def network() -> LabNetwork:
    return LabNetwork()


def test_mirrored_kerberos_pair_gets_sas(network):
    a, b = make_pair(network)
    apply_policy(a, B_ADDRESS)
    apply_policy(b, A_ADDRESS)

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is True
    main_mode = run(a, "Get-NetIPsecMainModeSA").output
    quick_mode = run(a, "Get-NetIPsecQuickModeSA").output
    assert len(main_mode) == 1
    sa = main_mode[0].properties
    assert sa["LocalEndpoint"] == A_ADDRESS
    assert sa["RemoteEndpoint"] == B_ADDRESS
    assert sa["CipherAlgorithm"] == 65003  # AES-256
    assert sa["HashAlgorithm"] == 65001  # SHA-256
    assert sa["GroupId"] == 14
    assert sa["LocalFirstId"].properties["AuthenticationMethod"] == 2  # Kerberos
    assert sa["LocalFirstId"].properties["Identity"] == "CORP\\SRV-A$"
    qm = quick_mode[0].properties
    assert qm["FirstCipherAlgorithm"] == 65003
    assert qm["FirstIntegrityAlgorithm"] == 65001
    assert qm["PfsGroupId"] == 14
    assert qm["PFSInUse"] is True
    assert len(run(b, "Get-NetIPsecQuickModeSA").output) == 1
    assert event_ids(a) == [5451, 4650]
    assert event_ids(b) == [5451, 4650]


def test_one_sided_require_fails_with_event(network):
    a, b = make_pair(network)
    apply_policy(a, B_ADDRESS)

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is False
    assert run(a, "Get-NetIPsecMainModeSA").output == []
    events = run(a, "Get-WinEvent", FilterHashtable=[{"LogName": "Security", "Id": 4653}], MaxEvents=1).output
    assert "No policy configured" in events[0].properties["Message"]


def test_request_request_mismatch_falls_back_to_clear(network):
    a, b = make_pair(network)
    apply_policy(a, B_ADDRESS, inbound="Request", outbound="Request")
    apply_policy(b, A_ADDRESS, inbound="Request", outbound="Request",
                 auth={"Machine": True, "PreSharedKey": "other-key"})

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is True
    assert run(a, "Get-NetIPsecQuickModeSA").output == []
    assert 4653 in event_ids(a)


def test_certificate_pair_with_different_cas_fails(network):
    a_facts = HostFacts("SRV-A", [A_ADDRESS], domain="corp.example",
                        machine_certificates=[MachineCertificate("CN=srv-a", "CN=Corp Issuing CA", "CN=Corp Root CA")])
    b_facts = HostFacts("SRV-B", [B_ADDRESS], domain="corp.example",
                        machine_certificates=[MachineCertificate("CN=srv-b", "CN=Partner CA")])
    a, b = make_pair(network, a_facts, b_facts)
    apply_policy(a, B_ADDRESS, auth={"Machine": True, "Cert": True, "Authority": "CN=Corp Root CA"})
    apply_policy(b, A_ADDRESS, auth={"Machine": True, "Cert": True, "Authority": "CN=Partner CA"})

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is False
    assert 4652 in event_ids(a)
    assert 4652 in event_ids(b)


def test_certificate_pair_same_ca_succeeds(network):
    certificate = "CN=Corp Root CA"
    a_facts = HostFacts("SRV-A", [A_ADDRESS], machine_certificates=[MachineCertificate("CN=srv-a", certificate)])
    b_facts = HostFacts("SRV-B", [B_ADDRESS], machine_certificates=[MachineCertificate("CN=srv-b", certificate)])
    a, b = make_pair(network, a_facts, b_facts)
    for host, remote in ((a, B_ADDRESS), (b, A_ADDRESS)):
        apply_policy(host, remote, auth={"Machine": True, "Cert": True, "Authority": certificate})

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is True
    sa = run(b, "Get-NetIPsecMainModeSA").output[0].properties
    assert sa["RemoteFirstId"].properties["Identity"] == "CN=srv-a"
    assert sa["LocalFirstId"].properties["AuthenticationMethod"] == 1  # certificate
    assert 4651 in event_ids(b)


def test_exemption_means_no_sa(network):
    a, b = make_pair(network)
    apply_policy(a, B_ADDRESS)
    apply_policy(b, A_ADDRESS)
    for host, remote in ((a, B_ADDRESS), (b, A_ADDRESS)):
        host.invoke_checked("New-NetIPsecRule", {"DisplayName": "Exempt", "InboundSecurity": "None",
                                                 "OutboundSecurity": "None", "RemoteAddress": remote})

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is True
    assert run(a, "Get-NetIPsecMainModeSA").output == []
    assert event_ids(a) == []


def test_kerberos_host_outside_forest_fails(network):
    a_facts = HostFacts("SRV-A", [A_ADDRESS], domain="corp.example")
    b_facts = HostFacts("SRV-B", [B_ADDRESS], domain="partner.example")
    a, b = make_pair(network, a_facts, b_facts)
    apply_policy(a, B_ADDRESS)
    apply_policy(b, A_ADDRESS)

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is False
    message = run(a, "Get-WinEvent", FilterHashtable=[{"LogName": "Security", "Id": 4653}]).output[0].properties["Message"]
    assert "Failure Reason:" in message


def test_trusted_forest_kerberos_succeeds(network):
    a_facts = HostFacts("SRV-A", [A_ADDRESS], domain="corp.example", trusted_forests=["partner.example"])
    b_facts = HostFacts("SRV-B", [B_ADDRESS], domain="partner.example", trusted_forests=["corp.example"])
    a, b = make_pair(network, a_facts, b_facts)
    apply_policy(a, B_ADDRESS)
    apply_policy(b, A_ADDRESS)

    assert connect(a, B_ADDRESS)["TcpTestSucceeded"] is True


def test_main_mode_crypto_mismatch_fails(network):
    a, b = make_pair(network)
    apply_policy(a, B_ADDRESS)
    apply_policy(b, A_ADDRESS, main_mode={"Encryption": "AES128", "Hash": "SHA1", "KeyExchange": "DH2"})

    outcome = connect(a, B_ADDRESS)

    assert outcome["TcpTestSucceeded"] is False
    assert 4653 in event_ids(b)


def test_sa_expires_on_lab_clock(network):
    a, b = make_pair(network)
    apply_policy(a, B_ADDRESS)
    apply_policy(b, A_ADDRESS)
    connect(a, B_ADDRESS)

    network.clock.advance(timedelta(minutes=61))

    assert run(a, "Get-NetIPsecQuickModeSA").output == []
    assert len(run(a, "Get-NetIPsecMainModeSA").output) == 1


def test_no_events_error(network):
    a, _ = make_pair(network)

    result = run(a, "Get-WinEvent", FilterHashtable=[{"LogName": "Security", "Id": 4650}])

    assert result.errors[0].message == "No events were found that match the specified selection criteria."
    assert result.errors[0].fully_qualified_error_id == (
        "NoMatchingEventsFound,Microsoft.PowerShell.Commands.GetWinEventCommand"
    )
