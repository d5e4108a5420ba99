"""The WS-Management ([MS-WSMV]) service of a simulated host: shells that carry PSRP.

``WsmanRequest.parse`` reads a SOAP request, ``WsmanService.handle`` runs its
action against the host's shells and returns the SOAP reply. The replies copy
the element names, namespace prefixes and fault texts of the recorded Windows
Server exchanges; identifiers such as ``ActivityId`` are made up.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from pypsrp.shell import SignalCode
from pypsrp.wsman import NAMESPACES, WSManAction

from ipsec_deploy.lab.pipeline import PipelineHandler
from ipsec_deploy.lab.psrp import OutgoingQueue, ProtocolError, RunspacePoolServer

log = logging.getLogger("ipsec_deploy.lab")

FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ANONYMOUS_ADDRESS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
POWERSHELL_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CONFIG_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/config"
COMMAND_STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"

# WSManFault codes and texts from the recorded Windows Server replies.
ERROR_WSMAN_OPERATION_TIMEOUT = 2150858793
ERROR_WSMAN_INVALID_SELECTORS = 2150858843
OPERATION_TIMEOUT_TEXT = (
    "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
)
INVALID_SELECTORS_TEXT = (
    "The WS-Management service cannot process the request because the request contained invalid selectors for "
    "the resource. "
)
UNKNOWN_COMMAND_TEXT = (
    "The Windows Remote Shell received a request to perform an operation on a command identifier that does not "
    "exist. Either the command has completed execution or the client specified an invalid command identifier. "
)
UNEXPECTED_SELECTORS_DETAIL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors"

# Server 2019's default MaxEnvelopeSizekb; pypsrp reads it with a WS-Transfer Get.
MAX_ENVELOPE_SIZE_KB = 500

# Bytes of a Receive reply that are not fragment data: the SOAP header and one
# rsp:Stream element per fragment (an estimate, kept on the safe side).
RECEIVE_ENVELOPE_OVERHEAD = 2048

_ENVELOPE_OPEN = (
    '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
)


class WsmanFault(Exception):
    """A SOAP fault ([MS-WSMV] 2.2.4.12) that the service returns with HTTP 500."""

    def __init__(
        self,
        code: str,
        subcode: str,
        reason: str,
        wsman_code: int | None = None,
        message: str | None = None,
        fault_detail: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code
        self.message = message if message is not None else reason
        self.fault_detail = fault_detail


def operation_timeout_fault() -> WsmanFault:
    return WsmanFault("s:Receiver", "w:TimedOut", OPERATION_TIMEOUT_TEXT, ERROR_WSMAN_OPERATION_TIMEOUT)


def invalid_selectors_fault(message: str) -> WsmanFault:
    return WsmanFault(
        "s:Sender",
        "w:InvalidSelectors",
        INVALID_SELECTORS_TEXT,
        ERROR_WSMAN_INVALID_SELECTORS,
        message,
        UNEXPECTED_SELECTORS_DETAIL,
    )


def bad_request_fault(message: str) -> WsmanFault:
    # NOTE: Windows's code for a malformed request was not recorded; the
    # fault carries no WSManFault code, only this message.
    return WsmanFault("s:Sender", "w:InvalidParameter", message)


@dataclass
class WsmanRequest:
    """The parts of a WS-Man request ([MS-WSMV] 2.2.4) that the lab uses."""

    action: str
    message_id: str
    resource_uri: str
    body: ET.Element
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    operation_timeout: float = 60.0
    max_envelope_size: int = 153600

    @property
    def short_action(self) -> str:
        return self.action.rsplit("/", 1)[-1]

    @classmethod
    def parse(cls, payload: bytes) -> WsmanRequest:
        try:
            envelope = ET.fromstring(payload)
        except ET.ParseError as error:
            raise bad_request_fault("The request is not well-formed XML: %s" % error) from error

        header = envelope.find("s:Header", NAMESPACES)
        body = envelope.find("s:Body", NAMESPACES)
        if header is None or body is None:
            raise bad_request_fault("The request is not a SOAP 1.2 envelope with a Header and a Body.")

        def header_text(path: str) -> str:
            element = header.find(path, NAMESPACES)
            return (element.text or "").strip() if element is not None else ""

        action = header_text("wsa:Action")
        if not action:
            raise bad_request_fault("The request has no wsa:Action header.")

        request = cls(
            action=action,
            message_id=header_text("wsa:MessageID"),
            resource_uri=header_text("wsman:ResourceURI"),
            body=body,
        )
        for selector in header.findall("wsman:SelectorSet/wsman:Selector", NAMESPACES):
            request.selectors[selector.attrib.get("Name", "")] = (selector.text or "").strip()
        for option in header.findall("wsman:OptionSet/wsman:Option", NAMESPACES):
            request.options[option.attrib.get("Name", "")] = (option.text or "").strip()

        timeout = header_text("wsman:OperationTimeout")
        if timeout:
            request.operation_timeout = parse_duration(timeout)
        size = header_text("wsman:MaxEnvelopeSize")
        if size.isdigit():
            request.max_envelope_size = int(size)
        return request


def parse_duration(text: str) -> float:
    """Parse the xs:duration of OperationTimeout, such as ``PT20S`` or ``PT1M30.5S``, into seconds."""
    if not text.startswith("PT"):
        raise bad_request_fault("OperationTimeout %r is not a PTnS duration." % text)
    seconds = 0.0
    number = ""
    for char in text[2:]:
        if char.isdigit() or char == ".":
            number += char
            continue
        unit = {"H": 3600.0, "M": 60.0, "S": 1.0}.get(char)
        if unit is None or not number:
            raise bad_request_fault("OperationTimeout %r is not a PTnS duration." % text)
        seconds += float(number) * unit
        number = ""
    return seconds


def envelope(action: str, relates_to: str, body: str) -> bytes:
    """Build a reply envelope with the header fields Windows sends."""
    activity_id = str(uuid.uuid4()).upper()
    header = (
        "<s:Header><a:Action>%s</a:Action><a:MessageID>uuid:%s</a:MessageID><p:ActivityId>%s</p:ActivityId>"
        "<a:To>%s</a:To><a:RelatesTo>%s</a:RelatesTo></s:Header>"
        % (escape(action), str(uuid.uuid4()).upper(), activity_id, ANONYMOUS_ADDRESS, escape(relates_to))
    )
    return (_ENVELOPE_OPEN + header + "<s:Body>" + body + "</s:Body></s:Envelope>").encode("utf-8")


def fault_envelope(fault: WsmanFault, relates_to: str, machine: str) -> bytes:
    detail = ""
    if fault.fault_detail:
        detail += "<w:FaultDetail>%s</w:FaultDetail>" % escape(fault.fault_detail)
    code_attribute = ' Code="%d"' % fault.wsman_code if fault.wsman_code is not None else ""
    detail += (
        '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"%s Machine=%s>'
        "<f:Message>%s</f:Message></f:WSManFault>" % (code_attribute, quoteattr(machine), escape(fault.message))
    )
    body = (
        "<s:Fault><s:Code><s:Value>%s</s:Value><s:Subcode><s:Value>%s</s:Value></s:Subcode></s:Code>"
        '<s:Reason><s:Text xml:lang="en-US">%s</s:Text></s:Reason><s:Detail>%s</s:Detail></s:Fault>'
        % (fault.code, fault.subcode, escape(fault.reason), detail)
    )
    return envelope(FAULT_ACTION, relates_to, body)


@dataclass
class ClientInfo:
    """The sender of a request: the authenticated user and the client's address."""

    user: str
    address: str


@dataclass
class Shell:
    """A PSRP shell ([MS-WSMV] 3.1.4.5 Create) and the runspace pool inside it."""

    shell_id: str
    resource_uri: str
    owner: str
    client_address: str
    pool: RunspacePoolServer


class WsmanService:
    """The WS-Man actions of one host, over the shells it holds."""

    def __init__(
        self,
        handler: PipelineHandler,
        endpoint: str,
        machine_name: str,
        max_receive_wait: float | None = None,
        split_pool_open: bool = False,
    ) -> None:
        self.handler = handler
        self.endpoint = endpoint
        self.machine_name = machine_name
        self.max_receive_wait = max_receive_wait
        self.split_pool_open = split_pool_open
        self.shells: dict[str, Shell] = {}
        self._lock = threading.Lock()
        self._actions = {
            WSManAction.CREATE: self._create,
            WSManAction.RECEIVE: self._receive,
            WSManAction.COMMAND: self._command,
            WSManAction.SEND: self._send,
            WSManAction.SIGNAL: self._signal,
            WSManAction.DELETE: self._delete,
            WSManAction.GET: self._get,
        }

    def handle(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        """Run one request and return the reply envelope; raise WsmanFault for a fault reply."""
        action = self._actions.get(request.action)
        if action is None:
            raise WsmanFault(
                "s:Sender",
                "a:ActionNotSupported",
                "The action %s is not supported by the lab's WS-Management service." % request.action,
            )
        try:
            return action(request, client)
        except ProtocolError as error:
            log.warning("rejected PSRP data in %s: %s", request.short_action, error)
            raise bad_request_fault("The PSRP data of the request is invalid: %s" % error) from error

    def close(self) -> None:
        with self._lock:
            shells = list(self.shells.values())
            self.shells.clear()
        for shell in shells:
            shell.pool.close()

    # -- helpers ---------------------------------------------------------

    def _shell(self, request: WsmanRequest) -> Shell:
        shell_id = request.selectors.get("ShellId", "").upper()
        with self._lock:
            shell = self.shells.get(shell_id)
        if shell is None:
            raise invalid_selectors_fault(
                "The request for the Windows Remote Shell with ShellId %s failed because the shell was not found on "
                "the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on "
                "the server. Provide the correct ShellId or create a new shell and retry the operation. " % shell_id
            )
        return shell

    @staticmethod
    def _decode_base64(text: str | None, what: str) -> bytes:
        try:
            return base64.b64decode((text or "").strip(), validate=True)
        except binascii.Error as error:
            raise bad_request_fault("The %s is not valid base64: %s" % (what, error)) from error

    def _reply(self, request: WsmanRequest, body: str) -> bytes:
        return envelope(request.action + "Response", request.message_id, body)

    # -- actions ---------------------------------------------------------

    def _create(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        if not request.resource_uri.startswith(POWERSHELL_RESOURCE_PREFIX):
            # NOTE: the lab serves PSRP shells only, not WinRS cmd shells.
            raise bad_request_fault("The lab only creates PowerShell shells, not %s." % request.resource_uri)

        shell_element = request.body.find("rsp:Shell", NAMESPACES)
        if shell_element is None:
            raise bad_request_fault("The Create request has no rsp:Shell body.")
        creation_xml = shell_element.find("pwsh:creationXml", NAMESPACES)
        if creation_xml is None:
            raise bad_request_fault("The Create request has no creationXml for the runspace pool.")

        # Windows keeps the ShellId the client proposes; pypsrp sends its pool id.
        shell_id = shell_element.attrib.get("ShellId", "").upper() or str(uuid.uuid4()).upper()
        pool = RunspacePoolServer(self.handler, split_open=self.split_pool_open)
        pool.feed(self._decode_base64(creation_xml.text, "creationXml"))

        owner = client.user if "\\" in client.user else "%s\\%s" % (self.machine_name, client.user)
        shell = Shell(shell_id, request.resource_uri, owner, client.address, pool)
        with self._lock:
            self.shells[shell_id] = shell
        log.debug("created shell %s for %s", shell_id, owner)

        body = (
            "<x:ResourceCreated><a:Address>%s</a:Address><a:ReferenceParameters><w:ResourceURI>%s</w:ResourceURI>"
            '<w:SelectorSet><w:Selector Name="ShellId">%s</w:Selector></w:SelectorSet></a:ReferenceParameters>'
            "</x:ResourceCreated>" % (escape(self.endpoint), escape(request.resource_uri), shell_id)
        ) + self._shell_description(shell)
        return self._reply(request, body)

    def _shell_description(self, shell: Shell) -> str:
        fields = [
            ("ShellId", shell.shell_id),
            ("ResourceUri", shell.resource_uri),
            ("Owner", shell.owner),
            ("ClientIP", shell.client_address),
            ("ProcessId", str(os.getpid())),
            ("IdleTimeOut", "PT7200.000S"),
            ("InputStreams", "stdin pr"),
            ("OutputStreams", "stdout"),
            ("MaxIdleTimeOut", "PT2147483.647S"),
            ("Locale", "en-US"),
            ("DataLocale", "en-US"),
            ("CompressionMode", "NoCompression"),
            ("ProfileLoaded", "Yes"),
            ("Encoding", "UTF8"),
            ("BufferMode", "Block"),
            ("State", "Connected"),
            ("ShellRunTime", "P0DT0H0M0S"),
            ("ShellInactivity", "P0DT0H0M0S"),
        ]
        inner = "".join("<rsp:%s>%s</rsp:%s>" % (name, escape(value), name) for name, value in fields)
        return '<rsp:Shell xmlns:rsp="%s">%s</rsp:Shell>' % (SHELL_RESOURCE_URI, inner)

    def _receive(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        shell = self._shell(request)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NAMESPACES)
        command_id = (desired.attrib.get("CommandId", "") if desired is not None else "").upper()

        queue: OutgoingQueue
        if command_id:
            pipeline = shell.pool.pipelines.get(command_id)
            if pipeline is None:
                raise invalid_selectors_fault(UNKNOWN_COMMAND_TEXT)
            queue = pipeline.outgoing
        else:
            queue = shell.pool.outgoing

        wait = request.operation_timeout
        if self.max_receive_wait is not None:
            wait = min(wait, self.max_receive_wait)
        budget = max((request.max_envelope_size - RECEIVE_ENVELOPE_OVERHEAD) * 3 // 4, 4096)

        fragments = shell.pool.receive(queue, budget, wait)
        if fragments is None:
            raise operation_timeout_fault()

        command_attribute = ' CommandId="%s"' % command_id if command_id else ""
        streams = "".join(
            '<rsp:Stream Name="stdout"%s>%s</rsp:Stream>' % (command_attribute, base64.b64encode(f).decode("ascii"))
            for f in fragments
        )
        if command_id and queue.is_drained():
            streams += (
                '<rsp:CommandState CommandId="%s" State="%s"><rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>'
                % (command_id, COMMAND_STATE_DONE)
            )
            with shell.pool.condition:
                shell.pool.pipelines.pop(command_id, None)
        return self._reply(request, "<rsp:ReceiveResponse>%s</rsp:ReceiveResponse>" % streams)

    def _command(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        shell = self._shell(request)
        command_line = request.body.find("rsp:CommandLine", NAMESPACES)
        if command_line is None:
            raise bad_request_fault("The Command request has no rsp:CommandLine body.")

        command_id = command_line.attrib.get("CommandId", "").upper() or str(uuid.uuid4()).upper()
        arguments = command_line.find("rsp:Arguments", NAMESPACES)
        data = self._decode_base64(arguments.text if arguments is not None else "", "Arguments")
        shell.pool.create_pipeline(command_id, data)

        body = "<rsp:CommandResponse><rsp:CommandId>%s</rsp:CommandId></rsp:CommandResponse>" % command_id
        return self._reply(request, body)

    def _send(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        shell = self._shell(request)
        for stream in request.body.findall("rsp:Send/rsp:Stream", NAMESPACES):
            data = self._decode_base64(stream.text, "Send stream")
            command_id = stream.attrib.get("CommandId", "").upper()
            if not command_id:
                shell.pool.feed(data)
                continue

            pipeline = shell.pool.pipelines.get(command_id)
            if pipeline is None:
                raise invalid_selectors_fault(UNKNOWN_COMMAND_TEXT)
            pipeline.feed(data)
        return self._reply(request, "<rsp:SendResponse/>")

    def _signal(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        shell = self._shell(request)
        signal = request.body.find("rsp:Signal", NAMESPACES)
        if signal is None:
            raise bad_request_fault("The Signal request has no rsp:Signal body.")
        command_id = signal.attrib.get("CommandId", "").upper()
        code_element = signal.find("rsp:Code", NAMESPACES)
        code = (code_element.text or "").strip() if code_element is not None else ""

        pipeline = shell.pool.pipelines.get(command_id)
        if pipeline is None:
            raise invalid_selectors_fault(UNKNOWN_COMMAND_TEXT)
        if code in (SignalCode.PS_CTRL_C, SignalCode.CTRL_C):
            pipeline.stop()
        else:
            # A terminate signal releases the command without a reply.
            with shell.pool.condition:
                shell.pool.pipelines.pop(command_id, None)
        log.debug("signal %s for command %s in shell %s", code, command_id, shell.shell_id)
        return self._reply(request, "<rsp:SignalResponse/>")

    def _delete(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        shell = self._shell(request)
        with self._lock:
            self.shells.pop(shell.shell_id, None)
        shell.pool.close()
        log.debug("deleted shell %s", shell.shell_id)
        return self._reply(request, "")

    def _get(self, request: WsmanRequest, client: ClientInfo) -> bytes:
        if request.resource_uri == CONFIG_RESOURCE_URI:
            body = (
                '<cfg:Config xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">'
                "<cfg:MaxEnvelopeSizekb>%d</cfg:MaxEnvelopeSizekb><cfg:MaxTimeoutms>60000</cfg:MaxTimeoutms>"
                "<cfg:MaxBatchItems>32000</cfg:MaxBatchItems><cfg:MaxProviderRequests>4294967295"
                "</cfg:MaxProviderRequests></cfg:Config>" % MAX_ENVELOPE_SIZE_KB
            )
            return self._reply(request, body)

        if request.resource_uri == SHELL_RESOURCE_URI:
            return self._reply(request, self._shell_description(self._shell(request)))

        raise bad_request_fault("The lab cannot Get the resource %s." % request.resource_uri)
