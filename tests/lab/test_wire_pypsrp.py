"""End-to-end tests of the lab's wire protocol with the real pypsrp client over HTTP(S) on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pypsrp.complex_objects import GenericComplexObject, ObjectMeta, PSInvocationState
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from ipsec_deploy.lab.clixml import Tagged
from ipsec_deploy.lab.pipeline import ErrorRecordValue, PipelineRequest, PipelineResult, PSObjectValue
from ipsec_deploy.lab.server import LabListener

USER = "vagrant"
PASSWORD = "Lab-Passw0rd"
CIM_RULE_TYPES = [
    "Microsoft.Management.Infrastructure.CimInstance#root/standardcimv2/MSFT_NetConSecRule",
    "Microsoft.Management.Infrastructure.CimInstance#MSFT_NetConSecRule",
    "Microsoft.Management.Infrastructure.CimInstance",
    "System.Object",
]


class RecordingHandler:
    """A handler that records each request and returns a fixed result (or calls a function)."""

    def __init__(self, result: PipelineResult | Any = None) -> None:
        self.result = result if result is not None else PipelineResult(output=["ok"])
        self.requests: list[PipelineRequest] = []

    def run_pipeline(self, request: PipelineRequest) -> PipelineResult:
        self.requests.append(request)
        if callable(self.result):
            return self.result(request)
        return self.result


def client(listener: LabListener, **options: Any) -> WSMan:
    settings: dict[str, Any] = {
        "port": listener.port,
        "username": USER,
        "password": PASSWORD,
        "ssl": listener.scheme == "https",
        "operation_timeout": 5,
        "connection_timeout": 2,
        "read_timeout": 8,
    }
    if listener.scheme == "https":
        settings["cert_validation"] = str(listener.ca_file)
    settings.update(options)
    return WSMan(listener.host, **settings)


def basic_client(listener: LabListener, **options: Any) -> WSMan:
    return client(listener, auth="basic", encryption="never", **options)


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def listener(handler: RecordingHandler) -> Iterator[LabListener]:
    with LabListener(handler, accounts={USER: PASSWORD}) as lab:
        yield lab


def test_ntlm_encrypted_cmdlet_pipeline(handler: RecordingHandler, listener: LabListener) -> None:
    handler.result = PipelineResult(output=["first", 2, True, None, 1.5])

    with RunspacePool(client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule").add_parameter("DisplayName", "ipsec-deploy: web").add_parameter("Force")
        output = ps.invoke()

    assert output == ["first", 2, True, None, 1.5]
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors
    call = handler.requests[0].commands[0]
    assert call.command == "Get-NetIPsecRule"
    assert not call.is_script
    assert call.parameters == [("DisplayName", "ipsec-deploy: web"), ("Force", None)]

    counts = listener.round_trips.snapshot()
    assert counts["by_action"] == {"Create": 1, "Receive": 2, "Command": 1, "Delete": 1}
    # NTLM over HTTP adds pypsrp's anonymous probe, NEGOTIATE and AUTHENTICATE.
    assert counts["total"] == 5 + 3
    assert counts["authentication"] == 2
    assert counts["encrypted"] == 5


def test_basic_script_pipeline_round_trips(handler: RecordingHandler, listener: LabListener) -> None:
    with RunspacePool(basic_client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-NetIPsecRule | Select-Object -First 1")
        output = ps.invoke()

    assert output == ["ok"]
    assert handler.requests[0].commands[0].is_script
    assert handler.requests[0].commands[0].command == "Get-NetIPsecRule | Select-Object -First 1"
    counts = listener.round_trips.snapshot()
    assert counts["total"] == 5
    assert counts["by_action"] == {"Create": 1, "Receive": 2, "Command": 1, "Delete": 1}
    assert counts["encrypted"] == 0


def test_https_with_lab_ca(handler: RecordingHandler) -> None:
    with LabListener(handler, scheme="https", accounts={USER: PASSWORD}) as lab:
        assert lab.ca_file is not None and lab.ca_file.exists()
        assert lab.endpoint.startswith("https://127.0.0.1:")

        with RunspacePool(client(lab)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-NetIPsecRule")
            assert ps.invoke() == ["ok"]

        counts = lab.round_trips.snapshot()
        # Over HTTPS, NTLM (with channel binding) adds the anonymous probe and NEGOTIATE.
        assert counts["total"] == 5 + 2
        assert counts["encrypted"] == 0


def test_https_basic_with_lab_ca(handler: RecordingHandler) -> None:
    with LabListener(handler, scheme="https", accounts={USER: PASSWORD}) as lab:
        with RunspacePool(client(lab, auth="basic")) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-NetIPsecRule")
            assert ps.invoke() == ["ok"]
        assert lab.round_trips.snapshot()["total"] == 5


def test_https_without_ca_fails_validation(handler: RecordingHandler) -> None:
    with LabListener(handler, scheme="https", accounts={USER: PASSWORD}) as lab:
        pool = RunspacePool(client(lab, cert_validation=True))
        with pytest.raises(requests.exceptions.SSLError):
            pool.open()


@pytest.mark.parametrize("auth", ["negotiate", "basic"])
def test_wrong_password_raises_authentication_error(listener: LabListener, auth: str) -> None:
    options: dict[str, Any] = {"password": "wrong", "auth": auth}
    if auth == "basic":
        options["encryption"] = "never"
    pool = RunspacePool(client(listener, **options))

    with pytest.raises(AuthenticationError):
        pool.open()
    assert listener.round_trips.snapshot()["by_action"] == {}


def test_unknown_user_raises_authentication_error(listener: LabListener) -> None:
    pool = RunspacePool(client(listener, username="intruder"))

    with pytest.raises(AuthenticationError):
        pool.open()


def test_unauthenticated_request_gets_401(listener: LabListener) -> None:
    response = requests.post(
        listener.endpoint,
        data=b"<s:Envelope/>",
        headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
        timeout=2,
    )

    assert response.status_code == 401
    challenges = response.headers["WWW-Authenticate"]
    assert "Negotiate" in challenges
    assert 'Basic realm="WSMAN"' in challenges
    assert response.content == b""


def test_error_record_reaches_pypsrp(handler: RecordingHandler, listener: LabListener) -> None:
    handler.result = PipelineResult(
        output=["before"],
        errors=[
            ErrorRecordValue(
                message="The parameter LocalAddress is invalid.",
                fully_qualified_error_id="InvalidParameter,New-NetIPsecRule",
                category="InvalidArgument",
                exception_type="System.ArgumentException",
                target_name="10.1.2.3/33",
                command_name="New-NetIPsecRule",
            )
        ],
    )

    with RunspacePool(basic_client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("New-NetIPsecRule").add_parameter("LocalAddress", "10.1.2.3/33")
        output = ps.invoke()

    assert output == ["before"]
    assert ps.state == PSInvocationState.COMPLETED
    # pypsrp 0.9.1 sets had_errors only for a Failed pipeline, as PowerShell's HadErrors does not.
    assert not ps.had_errors
    error = ps.streams.error[0]
    assert str(error) == "The parameter LocalAddress is invalid."
    assert error.fq_error == "InvalidParameter,New-NetIPsecRule"
    assert error.category == 5
    assert error.reason == "ArgumentException"
    assert error.target_name == "10.1.2.3/33"
    assert error.activity == "New-NetIPsecRule"
    assert error.message == "InvalidArgument: (10.1.2.3/33:String) [New-NetIPsecRule], ArgumentException"
    assert error.exception.adapted_properties["Message"] == "The parameter LocalAddress is invalid."


def test_failed_pipeline_reaches_pypsrp(handler: RecordingHandler, listener: LabListener) -> None:
    handler.result = PipelineResult(
        output=["partial"],
        state="Failed",
        failure=ErrorRecordValue(
            message="No MSFT_NetConSecRule objects found with property 'DisplayName' equal to 'x'.",
            fully_qualified_error_id="CmdletizationQuery_NotFound_DisplayName,Get-NetIPsecRule",
            category="ObjectNotFound",
            exception_type="Microsoft.PowerShell.Cmdletization.Cim.CimJobException",
            target_name="x",
            command_name="Get-NetIPsecRule",
        ),
    )

    with RunspacePool(client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule").add_parameter("DisplayName", "x")
        output = ps.invoke()

    assert output == ["partial"]
    assert ps.state == PSInvocationState.FAILED
    assert ps.had_errors
    error = ps.streams.error[0]
    assert str(error) == "No MSFT_NetConSecRule objects found with property 'DisplayName' equal to 'x'."
    assert error.fq_error == "CmdletizationQuery_NotFound_DisplayName,Get-NetIPsecRule"
    assert error.category == 13
    assert error.message == "ObjectNotFound: (x:String) [Get-NetIPsecRule], CimJobException"


def test_handler_exception_fails_pipeline(handler: RecordingHandler, listener: LabListener) -> None:
    def broken(request: PipelineRequest) -> PipelineResult:
        raise RuntimeError("store is corrupt")

    handler.result = broken
    with RunspacePool(basic_client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule")
        ps.invoke()

    assert ps.state == PSInvocationState.FAILED
    assert "store is corrupt" in str(ps.streams.error[0])
    assert ps.streams.error[0].fq_error == "LabHandlerError"


def test_cim_object_output_shape(handler: RecordingHandler, listener: LabListener) -> None:
    action = PSObjectValue(
        ["Microsoft.PowerShell.Cmdletization.GeneratedTypes.NetSecurity.SecurityAction", "System.Enum", "System.ValueType", "System.Object"],
        to_string="RequireInRequireOut",
        value=3,
    )
    rule = PSObjectValue(
        CIM_RULE_TYPES,
        to_string="MSFT_NetConSecRule (Name = \"{1234}\")",
        properties={
            "Name": "{1234}",
            "DisplayName": "ipsec-deploy: web <-> db",
            "Enabled": 1,
            "InboundSecurity": action,
            "LocalAddress": ["10.0.0.1", "10.0.0.2"],
            "Mode": 1,
            "Tags": {"owner": "ipsec-deploy"},
            "Description": None,
            "Size": 2**40,
        },
    )
    handler.result = PipelineResult(output=[rule, rule])

    with RunspacePool(client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule")
        output = ps.invoke()

    assert len(output) == 2
    received = output[0]
    assert isinstance(received, GenericComplexObject)
    assert received.types == CIM_RULE_TYPES
    assert str(received) == 'MSFT_NetConSecRule (Name = "{1234}")'
    properties = received.adapted_properties
    assert properties["DisplayName"] == "ipsec-deploy: web <-> db"
    assert properties["Enabled"] == 1
    assert properties["LocalAddress"] == ["10.0.0.1", "10.0.0.2"]
    assert properties["Tags"] == {"owner": "ipsec-deploy"}
    assert properties["Description"] is None
    assert properties["Size"] == 2**40
    assert str(properties["InboundSecurity"]) == "RequireInRequireOut"
    assert output[1].types == CIM_RULE_TYPES


def test_statements_input_and_enum_parameters(handler: RecordingHandler, listener: LabListener) -> None:
    handler.result = lambda request: PipelineResult(output=list(request.input))

    with RunspacePool(client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Set-Variable").add_parameter("Name", "x").add_parameter("Value", [1, "two"])
        ps.add_statement()
        ps.add_cmdlet("Get-Variable").add_parameter("Name", "x").add_argument("positional")
        output = ps.invoke(input=["a", 7, {"k": "v"}])

    request = handler.requests[0]
    assert [c.command for c in request.commands] == ["Set-Variable", "Get-Variable"]
    assert [c.end_of_statement for c in request.commands] == [True, True]
    assert request.commands[0].parameters == [("Name", "x"), ("Value", [1, "two"])]
    assert request.commands[1].parameters == [("Name", "x"), (None, "positional")]
    assert request.input == ["a", 7, {"k": "v"}]
    assert output == ["a", 7, {"k": "v"}]
    assert listener.round_trips.snapshot()["by_action"]["Send"] == 1


def test_enum_values_decode_generically(handler: RecordingHandler, listener: LabListener) -> None:
    with RunspacePool(basic_client(listener)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-NetIPsecRule")
        ps.invoke(apartment_state=0)

    # The CREATE_PIPELINE enums (ApartmentState...) decode without breaking the request.
    assert handler.requests[0].commands[0].command == "Get-NetIPsecRule"


def test_slow_pipeline_gets_operation_timeouts(handler: RecordingHandler) -> None:
    def slow(request: PipelineRequest) -> PipelineResult:
        time.sleep(0.5)
        return PipelineResult(output=["late"])

    handler.result = slow
    with LabListener(handler, accounts={USER: PASSWORD}, max_receive_wait=0.15) as lab:
        with RunspacePool(basic_client(lab, operation_timeout=1)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Start-Sleep")
            assert ps.invoke() == ["late"]
        counts = lab.round_trips.snapshot()

    assert counts["faults"]["w:TimedOut"] >= 2
    assert counts["by_action"]["Receive"] == 1 + 1 + counts["faults"]["w:TimedOut"]


def test_stop_sends_signal(handler: RecordingHandler, listener: LabListener) -> None:
    release = threading.Event()

    def blocking(request: PipelineRequest) -> PipelineResult:
        release.wait(timeout=5)
        return PipelineResult(output=["too late"])

    handler.result = blocking
    try:
        with RunspacePool(basic_client(listener)) as pool:
            ps = PowerShell(pool)
            ps.add_script("while ($true) {}")
            ps.begin_invoke()
            ps.stop()
            assert ps.state == PSInvocationState.STOPPED
    finally:
        release.set()

    assert listener.round_trips.snapshot()["by_action"]["Signal"] == 1


def test_deleted_shell_gives_invalid_selectors(handler: RecordingHandler, listener: LabListener) -> None:
    pool = RunspacePool(basic_client(listener))
    pool.open()
    assert listener.service is not None
    listener.service.close()

    ps = PowerShell(pool)
    ps.add_cmdlet("Get-NetIPsecRule")
    with pytest.raises(WSManFaultError) as raised:
        ps.invoke()
    assert raised.value.code == 2150858843


def test_session_key_exchange_and_secure_string(handler: RecordingHandler, listener: LabListener) -> None:
    handler.result = lambda request: PipelineResult(output=[Tagged("SS", dict(request.commands[0].parameters)["Key"])])

    with RunspacePool(client(listener)) as pool:
        pool.exchange_keys()
        ps = PowerShell(pool)
        secret = pool.serialize("pre-shared key", ObjectMeta("SS"))
        ps.add_cmdlet("New-NetIPsecAuthProposal").add_parameter("Key", secret)
        output = ps.invoke()

    assert dict(handler.requests[0].commands[0].parameters)["Key"] == "pre-shared key"
    assert output == ["pre-shared key"]


def test_runspace_availability_messages(listener: LabListener) -> None:
    with RunspacePool(basic_client(listener)) as pool:
        assert pool.get_available_runspaces() == 1
        pool.max_runspaces = 3
        assert pool.max_runspaces == 3
        assert pool.get_available_runspaces() == 3


def test_large_output_spans_receives(handler: RecordingHandler) -> None:
    big = "x" * 100_000
    handler.result = PipelineResult(output=[big, "tail"])

    with LabListener(handler, accounts={USER: PASSWORD}) as lab:
        with RunspacePool(basic_client(lab, max_envelope_size=32768)) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Content")
            assert ps.invoke() == [big, "tail"]
        receives = lab.round_trips.snapshot()["by_action"]["Receive"]

    # 100 kB of output cannot fit one 32 KiB envelope.
    assert receives >= 1 + 4


def test_server_config_get(listener: LabListener) -> None:
    wsman = basic_client(listener)
    wsman.update_max_payload_size()

    assert wsman.max_envelope_size == 500 * 1024


def test_listeners_keep_their_own_accounts(handler: RecordingHandler) -> None:
    with LabListener(handler, host="127.0.0.2", accounts={"alice": "A-pass1"}) as first, LabListener(
        handler, host="127.0.0.3", accounts={"LAB\\bob": "B-pass2"}
    ) as second:
        with RunspacePool(client(first, username="alice", password="A-pass1")) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-NetIPsecRule")
            assert ps.invoke() == ["ok"]

        with RunspacePool(client(second, username="LAB\\bob", password="B-pass2")) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-NetIPsecRule")
            assert ps.invoke() == ["ok"]

        with pytest.raises(AuthenticationError):
            RunspacePool(client(second, username="alice", password="A-pass1")).open()


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "localhost", "192.168.1.10"])
def test_listener_rejects_non_loopback_host(handler: RecordingHandler, host: str) -> None:
    with pytest.raises(ValueError, match="loopback|IP addresses only"):
        LabListener(handler, host=host)
