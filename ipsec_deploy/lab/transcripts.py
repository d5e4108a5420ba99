"""Read recorded WinRM exchanges (pypsrp's test-suite YAML format) and reduce replies to comparable summaries.

Each file has a ``messages`` list of round trips with the ``request`` the client
sent and the ``response`` the server returned (see ``_template.yml`` beside the
files). ``summarize_reply`` turns a reply envelope into its WS-Man action,
fault, command state and PSRP messages. ``clixml_shape`` reduces each
message's CLIXML to a tree without RefIds, so that the lab's replies can be
compared with Windows's although identifiers and object numbering differ.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pypsrp.powershell import Fragment
from pypsrp.wsman import NAMESPACES

from ipsec_deploy.lab.psrp import FragmentAssembler, PsrpMessage

BYTE_ORDER_MARK = b"\xef\xbb\xbf"


@dataclass
class RecordedExchange:
    """One recorded HTTP round trip."""

    request: str
    response: str
    status: int


def load_transcript(path: Path) -> list[RecordedExchange]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    exchanges = []
    for entry in document["messages"]:
        response = entry["response"]
        # Only some recorded faults carry transport_error, but Windows sends every fault with HTTP 500.
        is_fault = "/wsman/fault</a:Action>" in response
        status = int((entry.get("transport_error") or {}).get("code") or (500 if is_fault else 200))
        exchanges.append(RecordedExchange(entry["request"], response, status))
    return exchanges


@dataclass
class FragmentInfo:
    """The header of one fragment, as sent."""

    object_id: int
    fragment_id: int
    start: bool
    end: bool


@dataclass
class MessageSummary:
    """One PSRP message of a reply."""

    destination: int
    message_type: int
    runspace_pool_id: bytes
    pipeline_id: bytes
    has_byte_order_mark: bool
    shape: Any


@dataclass
class ReplySummary:
    """The content of a reply envelope, without identifiers."""

    action: str
    relates_to: str
    fault_subcode: str | None = None
    wsman_code: str | None = None
    command_state: str | None = None
    exit_code: str | None = None
    stream_command_ids: list[str] = field(default_factory=list)
    fragments: list[FragmentInfo] = field(default_factory=list)
    messages: list[MessageSummary] = field(default_factory=list)
    body_elements: list[str] = field(default_factory=list)


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def summarize_reply(xml_text: str | bytes) -> ReplySummary:
    envelope = ET.fromstring(xml_text)
    action = envelope.findtext("s:Header/wsa:Action", default="", namespaces=NAMESPACES)
    relates_to = envelope.findtext("s:Header/wsa:RelatesTo", default="", namespaces=NAMESPACES)
    summary = ReplySummary(action=action, relates_to=relates_to)

    body = envelope.find("s:Body", NAMESPACES)
    if body is None:
        return summary
    summary.body_elements = [_local_name(element.tag) for element in body.iter()][1:]

    fault = body.find("s:Fault", NAMESPACES)
    if fault is not None:
        summary.fault_subcode = fault.findtext("s:Code/s:Subcode/s:Value", namespaces=NAMESPACES)
        wsman_fault = fault.find("s:Detail/wsmanfault:WSManFault", NAMESPACES)
        summary.wsman_code = wsman_fault.attrib.get("Code") if wsman_fault is not None else None

    state = body.find("rsp:ReceiveResponse/rsp:CommandState", NAMESPACES)
    if state is not None:
        summary.command_state = state.attrib.get("State")
        summary.exit_code = state.findtext("rsp:ExitCode", namespaces=NAMESPACES)

    data = b""
    for stream in body.findall("rsp:ReceiveResponse/rsp:Stream", NAMESPACES):
        summary.stream_command_ids.append(stream.attrib.get("CommandId", ""))
        data += base64.b64decode(stream.text or "")

    summary.fragments = list_fragments(data)
    summary.messages = [summarize_message(message) for message in FragmentAssembler().feed(data)]
    return summary


def list_fragments(data: bytes) -> list[FragmentInfo]:
    fragments = []
    while data:
        fragment, data = Fragment.unpack(data)
        fragments.append(FragmentInfo(fragment.object_id, fragment.fragment_id, fragment.start, fragment.end))
    return fragments


def summarize_message(message: PsrpMessage) -> MessageSummary:
    has_bom = message.data.startswith(BYTE_ORDER_MARK)
    text = message.data[len(BYTE_ORDER_MARK) :] if has_bom else message.data
    shape = clixml_shape(ET.fromstring(text)) if text.strip() else None
    return MessageSummary(
        message.destination, message.message_type, message.runspace_pool_id, message.pipeline_id, has_bom, shape
    )


def request_messages(xml_text: str) -> list[PsrpMessage]:
    """Decode the PSRP messages that a recorded request carries in creationXml, Arguments or Send streams."""
    envelope = ET.fromstring(xml_text)
    data = b""
    for element in envelope.iter():
        if _local_name(element.tag) in ("creationXml", "Arguments", "Stream") and element.text:
            data += base64.b64decode(element.text)
    return FragmentAssembler().feed(data) if data else []


def clixml_shape(element: ET.Element, type_lists: dict[str, list[str]] | None = None) -> Any:
    """Reduce CLIXML to nested tuples: tag, N attribute, resolved type names, text and children.

    RefIds are dropped and ``TNRef`` is replaced by the type names it refers
    to, because the numbering differs between serializers while the content
    must not. ``Ref`` keeps only its tag and name.
    """
    if type_lists is None:
        type_lists = {}
    name = element.attrib.get("N")

    if element.tag == "TN":
        names = [t.text or "" for t in element.findall("T")]
        type_lists[element.attrib.get("RefId", "")] = names
        return ("TN", tuple(names))
    if element.tag == "TNRef":
        return ("TN", tuple(type_lists.get(element.attrib.get("RefId", ""), ())))
    if element.tag == "Ref":
        return ("Ref", name)

    children = tuple(clixml_shape(child, type_lists) for child in element)
    text = (element.text or "") if not len(element) else ""
    return (element.tag, name, text, children)
