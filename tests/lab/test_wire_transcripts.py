"""Replay recorded Windows Server exchanges against a lab listener and compare the replies.

The YAML files under tests/data/winrm-transcripts are round trips between
pypsrp and a real Windows Server 2016 host (copied from pypsrp's test suite).
Each recorded request is sent unchanged, over HTTP with Basic authentication,
to a lab listener whose handler returns the outputs that Windows returned for
the same commands. The test then checks that the lab's reply has the
recorded WS-Man action, fault, command state, PSRP message types in order,
pipeline and runspace states, and the same CLIXML structure for each message
(identifiers, RefIds and version numbers aside).

Windows also sends PROGRESS_RECORD ("Preparing modules for first use.") and
DEBUG/VERBOSE/WARNING/INFORMATION records, which the lab never produces;
those are left out of the comparison.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from pypsrp.messages import MessageType

from ipsec_deploy.lab.clixml import ERROR_CATEGORIES, ClixmlDecoder, Tagged, TypedDictionary, TypedList
from ipsec_deploy.lab.pipeline import ErrorRecordValue, PipelineRequest, PipelineResult, PSObjectValue
from ipsec_deploy.lab.psrp import decode_create_pipeline
from ipsec_deploy.lab.server import LabListener
from ipsec_deploy.lab.transcripts import (
    MessageSummary,
    RecordedExchange,
    load_transcript,
    request_messages,
    summarize_message,
    summarize_reply,
)

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "data" / "winrm-transcripts"
ACCOUNT = ("vagrant", "vagrant")

# Message types that Windows sends and the lab does not produce.
NOT_PRODUCED = {
    MessageType.PROGRESS_RECORD,
    MessageType.DEBUG_RECORD,
    MessageType.VERBOSE_RECORD,
    MessageType.WARNING_RECORD,
    MessageType.INFORMATION_RECORD,
}

DEFAULT_LIST_TYPES = ("System.Object[]", "System.Array", "System.Object")
DEFAULT_DICTIONARY_TYPES = ("System.Collections.Hashtable", "System.Object")


@dataclass
class RecordedPipeline:
    """What Windows returned for one pipeline, turned back into handler values."""

    output: list[Any] = field(default_factory=list)
    state: str | None = None
    failure: ErrorRecordValue | None = None
    release: threading.Event = field(default_factory=threading.Event)


def handler_value(element: ET.Element, type_lists: dict[str, tuple[str, ...]] | None = None) -> Any:
    """Turn recorded CLIXML into the value a handler would return for it.

    Lists and dictionaries with other type names than the lab's defaults (such
    as ``Deserialized.System.Collections.Hashtable``) keep them, and a
    SecureString stays a SecureString. Everything else goes through the lab's
    own decoder, so the comparison also checks that decoding and encoding agree.
    """
    if element.tag == "SS":
        return Tagged("SS", "recorded secure string")

    type_lists = {} if type_lists is None else type_lists
    type_names: tuple[str, ...] = ()
    if element.find("TN") is not None:
        type_names = tuple(t.text or "" for t in element.findall("TN/T"))
        type_lists[element.find("TN").attrib["RefId"]] = type_names
    elif element.find("TNRef") is not None:
        type_names = type_lists[element.find("TNRef").attrib["RefId"]]
    items = element.find("LST")
    if items is not None and type_names and type_names != DEFAULT_LIST_TYPES:
        return TypedList([handler_value(item, type_lists) for item in items], list(type_names))
    entries = element.find("DCT")
    if entries is not None and type_names and type_names != DEFAULT_DICTIONARY_TYPES:
        pairs = [(handler_value(en[0], type_lists), handler_value(en[1], type_lists)) for en in entries.findall("En")]
        return TypedDictionary(pairs, list(type_names))

    adapted = element.find("Props")
    if element.tag == "Obj" and adapted is not None:
        return PSObjectValue(
            type_names=list(type_names),
            to_string=element.findtext("ToString"),
            properties={child.attrib["N"]: handler_value(child, type_lists) for child in adapted},
        )
    return ClixmlDecoder().decode(element)


def error_record_value(element: ET.Element) -> ErrorRecordValue:
    members = {child.attrib.get("N"): child for child in element.find("MS")}
    exception = members["Exception"]
    return ErrorRecordValue(
        message=element.findtext("ToString") or "",
        fully_qualified_error_id=members["FullyQualifiedErrorId"].text or "",
        category=ERROR_CATEGORIES[int(members["ErrorCategory_Category"].text or "0")],
        exception_type=exception.findtext("TN/T") or "",
        target_name=members["ErrorCategory_TargetName"].text or "",
        command_name=members["ErrorCategory_Activity"].text or "",
        reason=members["ErrorCategory_Reason"].text or "",
    )


def clixml_element(data: bytes) -> ET.Element:
    return ET.fromstring(data.decode("utf-8-sig"))


class ReplayHandler:
    """Return, for each recorded pipeline, what Windows returned, once the replay releases it."""

    def __init__(self, exchanges: list[RecordedExchange]) -> None:
        self.by_command: dict[str, RecordedPipeline] = {}
        self.by_pipeline_id: dict[bytes, RecordedPipeline] = {}
        self.requests: list[PipelineRequest] = []

        for exchange in exchanges:
            for message in request_messages(exchange.request):
                if message.message_type == MessageType.CREATE_PIPELINE:
                    request, _ = decode_create_pipeline(message.data)
                    recorded = RecordedPipeline()
                    self.by_command[request.commands[0].command] = recorded
                    self.by_pipeline_id[message.pipeline_id] = recorded

        for exchange in exchanges:
            if exchange.status != 200 or "ReceiveResponse" not in exchange.response:
                continue
            summary = summarize_reply(exchange.response)
            raw = _reply_messages(exchange.response)
            for message, packed in zip(summary.messages, raw):
                recorded = self.by_pipeline_id.get(message.pipeline_id)
                if recorded is None:
                    continue
                if message.message_type == MessageType.PIPELINE_OUTPUT:
                    recorded.output.append(handler_value(clixml_element(packed.data)))
                elif message.message_type == MessageType.PIPELINE_STATE:
                    state = clixml_element(packed.data)
                    recorded.state = {"4": "Completed", "5": "Failed", "3": "Stopped"}[
                        state.findtext("MS/I32[@N='PipelineState']") or ""
                    ]
                    failure = state.find("MS/Obj[@N='ExceptionAsErrorRecord']")
                    if failure is not None:
                        recorded.failure = error_record_value(failure)

    def run_pipeline(self, request: PipelineRequest) -> PipelineResult:
        self.requests.append(request)
        recorded = self.by_command[request.commands[0].command]
        # A pipeline without a recorded end (an endless loop) blocks until the lab is stopped.
        recorded.release.wait(timeout=10)
        return PipelineResult(output=list(recorded.output), state=recorded.state or "Completed", failure=recorded.failure)


def _reply_messages(xml_text: str) -> list[Any]:
    from ipsec_deploy.lab.transcripts import FragmentAssembler
    import base64

    envelope = ET.fromstring(xml_text)
    data = b"".join(
        base64.b64decode(stream.text or "")
        for stream in envelope.iter("{http://schemas.microsoft.com/wbem/wsman/1/windows/shell}Stream")
    )
    return FragmentAssembler().feed(data)


def comparable_shape(message: MessageSummary) -> Any:
    """The CLIXML shape with the values that legitimately differ blanked out."""

    def blank(shape: Any) -> Any:
        tag, name, text, children = shape if len(shape) == 4 else (shape[0], None, None, shape)
        if shape[0] == "TN" or shape[0] == "Ref":
            return shape
        if tag in ("Version", "SS") or (tag == "S" and name == "EncryptedSessionKey"):
            text = "<varies>"
        return (tag, name, text, tuple(blank(child) for child in children))

    shape = blank(message.shape) if message.shape is not None else None
    if message.message_type == MessageType.PIPELINE_OUTPUT and shape is not None:
        # NOTE: PSObjectValue has no extended (MS) members, so the lab sends
        # every property as an adapted (Props) one.
        shape = (shape[0], shape[1], shape[2], tuple(child for child in shape[3] if child[0] != "MS"))
    return shape


def error_fields(message: MessageSummary) -> dict[str, Any]:
    """The ErrorRecord members that the lab reproduces, from a PIPELINE_STATE or ERROR_RECORD shape."""
    record = message.shape
    if message.message_type == MessageType.PIPELINE_STATE:
        record = next(child for child in message.shape[3][0][3] if child[1] == "ExceptionAsErrorRecord")
    fields: dict[str, Any] = {}
    for child in record[3]:
        if child[0] == "TN":
            fields["type_names"] = child[1]
        elif child[0] == "ToString":
            fields["to_string"] = child[2]
        elif child[0] == "MS":
            for member in child[3]:
                if member[1] in ("FullyQualifiedErrorId", "ErrorCategory_Category", "ErrorCategory_Activity",
                                 "ErrorCategory_Reason", "ErrorCategory_TargetName", "ErrorCategory_Message"):  # fmt: skip
                    fields[member[1]] = member[2]
                elif member[1] == "Exception":
                    fields["exception_type"] = next(c[1][0] for c in member[3] if c[0] == "TN")
    return fields


def replay(name: str) -> tuple[list[RecordedExchange], list[tuple[int, bytes]], ReplayHandler]:
    """Send every recorded request of a transcript to a fresh lab listener and return the lab's replies."""
    exchanges = load_transcript(TRANSCRIPTS / (name + ".yml"))
    handler = ReplayHandler(exchanges)
    replies: list[tuple[int, bytes]] = []

    with LabListener(
        handler, accounts={ACCOUNT[0]: ACCOUNT[1]}, auth=("basic",), split_pool_open=True, max_receive_wait=0.3
    ) as listener, requests.Session() as session:
        for exchange in exchanges:
            # Let a pipeline finish just before the Receive in which Windows returned its end.
            for message in summarize_reply(exchange.response).messages:
                if message.message_type == MessageType.PIPELINE_STATE:
                    handler.by_pipeline_id[message.pipeline_id].release.set()

            response = session.post(
                listener.endpoint,
                data=exchange.request.encode("utf-8"),
                auth=ACCOUNT,
                headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
                timeout=5,
            )
            replies.append((response.status_code, response.content))
        for recorded in handler.by_command.values():
            recorded.release.set()
    return exchanges, replies, handler


REPLAYED = [
    "test_psrp_open_runspace",
    "test_psrp_error_failed",
    "test_psrp_receive_failure",
    "test_psrp_long_running_cmdlet",
    "test_psrp_multiple_commands",
    "test_psrp_nested_command",
    "test_psrp_with_input",
    "test_client_execute_ps",
    "test_client_execute_ps_failure",
]


@pytest.mark.parametrize("name", REPLAYED)
def test_replay_matches_recording(name: str) -> None:
    exchanges, replies, _ = replay(name)

    for index, (exchange, (status, body)) in enumerate(zip(exchanges, replies)):
        step = "%s step %d" % (name, index)
        recorded = summarize_reply(exchange.response)
        lab = summarize_reply(body)
        request_id = ET.fromstring(exchange.request).findtext(
            "{http://www.w3.org/2003/05/soap-envelope}Header/{http://schemas.xmlsoap.org/ws/2004/08/addressing}MessageID"
        )

        assert status == exchange.status, step
        assert lab.action == recorded.action, step
        assert lab.relates_to == request_id, step
        assert lab.fault_subcode == recorded.fault_subcode, step
        assert lab.wsman_code == recorded.wsman_code, step
        assert lab.command_state == recorded.command_state, step
        assert lab.exit_code == recorded.exit_code, step
        assert lab.stream_command_ids[:1] == recorded.stream_command_ids[:1], step

        if recorded.action.endswith("CreateResponse"):
            assert lab.body_elements == recorded.body_elements, step
            for path in ("ResourceCreated", "Shell"):
                assert path in lab.body_elements, step

        recorded_messages = [m for m in recorded.messages if m.message_type not in NOT_PRODUCED]
        assert [m.message_type for m in lab.messages] == [m.message_type for m in recorded_messages], step

        request_rpids = {m.runspace_pool_id for m in request_messages(exchange.request)}
        for lab_message, recorded_message in zip(lab.messages, recorded_messages):
            assert lab_message.destination == recorded_message.destination, step
            assert lab_message.has_byte_order_mark, step
            assert lab_message.pipeline_id == recorded_message.pipeline_id, step
            assert lab_message.runspace_pool_id == recorded_message.runspace_pool_id or not request_rpids, step

            if lab_message.message_type in (MessageType.PIPELINE_STATE, MessageType.ERROR_RECORD) and (
                "ExceptionAsErrorRecord" in str(recorded_message.shape)
                or lab_message.message_type == MessageType.ERROR_RECORD
            ):
                assert error_fields(lab_message) == error_fields(recorded_message), step
            else:
                assert comparable_shape(lab_message) == comparable_shape(recorded_message), step

        for fragment in lab.fragments:
            assert fragment.start and fragment.end, step


def test_replay_decodes_recorded_commands() -> None:
    _, _, handler = replay("test_client_execute_ps")

    request = handler.requests[0]
    assert [c.command for c in request.commands] == ["Invoke-Expression", "Out-String"]
    assert request.commands[0].parameters[0][0] == "Command"
    assert request.commands[1].parameters == [("Stream", None)]
    assert request.commands[1].end_of_statement


def test_replay_decodes_recorded_input() -> None:
    _, _, handler = replay("test_psrp_with_input")

    assert handler.requests[0].input == ["1", 2, {"a": "b"}, ["a", "b"]]


def test_replay_decodes_structured_statements() -> None:
    _, _, handler = replay("test_psrp_multiple_commands")

    commands = handler.requests[0].commands
    assert commands[0].command == "Set-Variable"
    assert commands[0].end_of_statement
    assert sum(1 for c in commands if c.end_of_statement) >= 2
    secure_value = dict(commands[0].parameters)["Value"]
    # The recorded SecureString was encrypted with Windows's session key, not the lab's.
    assert secure_value.type_names[0] == "System.Security.SecureString"
