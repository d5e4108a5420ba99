"""Parameter binding of the emulated NetSecurity cmdlets against the documented signatures."""

from __future__ import annotations

import pytest

from ipsec_deploy.lab.netsecurity import HostFacts, LabNetwork, NetSecurityHandler
from ipsec_deploy.lab.netsecurity.requests import command, pipeline


@pytest.fixture
def handler() -> NetSecurityHandler:
    network = LabNetwork()
    host = network.add_host(HostFacts("SRV1", ["10.0.1.10"], domain="corp.example"))
    return NetSecurityHandler(host)


def run(handler: NetSecurityHandler, name: str, *positional, **parameters):
    return handler.run_pipeline(pipeline(command(name, *positional, **parameters)))


def test_unknown_parameter_is_terminating(handler):
    result = run(handler, "New-NetIPsecRule", DisplayName="r", Encryption="AES256")

    assert result.state == "Failed"
    assert result.failure.message == "A parameter cannot be found that matches parameter name 'Encryption'."
    assert result.failure.fully_qualified_error_id == "NamedParameterNotFound,New-NetIPsecRule"
    assert result.failure.category == "InvalidArgument"
    assert result.failure.exception_type.endswith("ParameterBindingException")
    assert handler.host.write_count == 0


def test_wrong_enum_value_wording(handler):
    result = run(handler, "New-NetIPsecRule", DisplayName="r", InboundSecurity="RequireInRequireOut")

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "CannotConvertArgumentNoMessage,New-NetIPsecRule"
    assert result.failure.category == "InvalidArgument"
    assert result.failure.message.startswith(
        "Cannot bind parameter 'InboundSecurity'. Cannot convert value \"RequireInRequireOut\" to type "
        "\"Microsoft.PowerShell.Cmdletization.GeneratedTypes.NetSecurity.SecurityPolicy\". Error: "
        "\"Unable to match the identifier name RequireInRequireOut to a valid enumerator name."
    )
    assert result.failure.message.endswith("None, Request, Require\"")


@pytest.mark.parametrize("bad", ["AES-256", "aes256x", "DHGroup14"])
def test_blog_style_crypto_values_rejected(handler, bad):
    result = run(handler, "New-NetIPsecMainModeCryptoProposal", Encryption=bad)

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "CannotConvertArgumentNoMessage,New-NetIPsecMainModeCryptoProposal"


def test_prefix_alias_and_case_accepted(handler):
    result = run(handler, "new-netipsecrule", displayname="r", SecIn="require", OutboundSec="Request",
                 ID="rule-1", prot="tcp", LocalPort=["445"])

    assert result.state == "Completed", result.failure
    rule = result.output[0].properties
    assert rule["Name"] == "rule-1"
    assert rule["InboundSecurity"] == "Require"
    assert rule["OutboundSecurity"] == "Request"
    assert rule["Protocol"] == "TCP"


def test_enum_numbers_and_wildcards(handler):
    result = run(handler, "New-NetIPsecRule", DisplayName="r", InboundSecurity=2, OutboundSecurity="Req*st")

    assert result.state == "Completed", result.failure
    assert result.output[0].properties["InboundSecurity"] == "Require"
    assert result.output[0].properties["OutboundSecurity"] == "Request"


def test_ambiguous_wildcard_enum_rejected(handler):
    result = run(handler, "New-NetIPsecRule", DisplayName="r", InboundSecurity="Req*")

    assert result.state == "Failed"
    assert "cannot be processed due to the inability to differentiate" in result.failure.message


def test_flags_enum_takes_comma_list(handler):
    accepted = run(handler, "New-NetIPsecRule", DisplayName="r", Profile="Domain,Private")
    rejected = run(handler, "New-NetIPsecRule", DisplayName="s", InboundSecurity="Request,Require")

    assert accepted.state == "Completed", accepted.failure
    assert accepted.output[0].properties["Profile"] == "Domain, Private"
    assert rejected.state == "Failed"


def test_ambiguous_prefix_rejected(handler):
    result = run(handler, "New-NetIPsecRule", DisplayName="r", Remote="10.0.1.11")

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "AmbiguousParameter,New-NetIPsecRule"
    assert "Possible matches include:" in result.failure.message
    assert "-RemoteAddress" in result.failure.message


def test_missing_mandatory_parameter(handler):
    result = run(handler, "New-NetIPsecPhase1AuthSet", DisplayName="p1")

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "MissingMandatoryParameter,New-NetIPsecPhase1AuthSet"
    assert result.failure.message == (
        "Cannot process command because of one or more missing mandatory parameters: Proposal."
    )


def test_parameter_given_twice(handler):
    request = pipeline(command("New-NetIPsecRule", DisplayName="r"))
    request.commands[0].parameters.append(("Displayname", "again"))

    result = handler.run_pipeline(request)

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "ParameterAlreadyBound,New-NetIPsecRule"


def test_common_parameters_accepted(handler):
    result = run(handler, "Get-NetIPsecRule", ErrorAction="SilentlyContinue", Verbose=True, ov="x")

    assert result.state == "Completed", result.failure


def test_boolean_rejects_string(handler):
    result = run(handler, "New-NetIPsecRule", DisplayName="r", AllowSetKey="yes")

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "ParameterArgumentTransformationError,New-NetIPsecRule"


def test_unknown_cmdlet_not_recognized(handler):
    result = run(handler, "Enable-NetIPsecPhase1AuthSet", Name="x")

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "CommandNotFoundException"
    assert result.failure.category == "ObjectNotFound"
    assert result.failure.message.startswith(
        "The term 'Enable-NetIPsecPhase1AuthSet' is not recognized as the name of a cmdlet, function, "
        "script file, or operable program."
    )


def test_positional_name_binds(handler):
    run(handler, "New-NetIPsecRule", DisplayName="r", IPsecRuleName="rule-1")

    result = run(handler, "Get-NetIPsecRule", "rule-1")

    assert result.state == "Completed", result.failure
    assert [o.properties["Name"] for o in result.output] == ["rule-1"]


def test_auth_proposal_parameter_sets(handler):
    kerberos = run(handler, "New-NetIPsecAuthProposal", Machine=True, Kerberos=True)
    certificate = run(handler, "New-NetIPsecAuthProposal", Machine=True, Cert=True, Authority="CN=Corp Root CA")
    conflicting = run(handler, "New-NetIPsecAuthProposal", Machine=True, Kerberos=True, Ntlm=True)

    assert kerberos.output[0].properties["AuthenticationMethod"] == "MachineKerberos"
    assert certificate.output[0].properties["AuthenticationMethod"] == "MachineCert"
    assert certificate.output[0].properties["AuthorityType"] == "Root"
    assert conflicting.state == "Failed"
    assert conflicting.failure.fully_qualified_error_id == "AmbiguousParameterSet,New-NetIPsecAuthProposal"


def test_deserialized_proposal_rejected(handler):
    from ipsec_deploy.lab.pipeline import PSObjectValue

    proposal = PSObjectValue(
        ["Deserialized.Microsoft.Management.Infrastructure.CimInstance#root/standardcimv2/MSFT_NetIKEAuthProposal"],
        {"AuthenticationMethod": "MachineKerberos"},
    )
    result = run(handler, "New-NetIPsecPhase1AuthSet", DisplayName="p1", Proposal=[proposal])

    assert result.state == "Failed"
    assert result.failure.fully_qualified_error_id == "CannotConvertArgumentNoMessage,New-NetIPsecPhase1AuthSet"
