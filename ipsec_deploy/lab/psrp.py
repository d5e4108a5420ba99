"""The server side of the PowerShell Remoting Protocol ([MS-PSRP]) for one simulated host.

A ``RunspacePoolServer`` lives inside one WS-Man shell. It reassembles the
client's fragments into messages, replies to the runspace pool messages itself
and runs each pipeline through the host's ``PipelineHandler`` on a thread of
its own. Replies wait in per-pool and per-pipeline queues until the client's
next Receive takes them.

This is a simulator: it speaks the protocol as the recorded Windows Server
exchanges show, but it has no runspaces and runs no PowerShell.
"""

from __future__ import annotations

import base64
import logging
import os
import struct
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pypsrp.messages import Destination, MessageType
from pypsrp.powershell import Fragment

from ipsec_deploy.lab.clixml import (
    ClixmlDecoder,
    ClixmlEncoder,
    ClixmlError,
    SecureStringCipher,
    Tagged,
    TypedDictionary,
    TypedList,
    to_bytes,
)
from ipsec_deploy.lab.pipeline import (
    CommandCall,
    ErrorRecordValue,
    PipelineHandler,
    PipelineRequest,
    PipelineResult,
    PSObjectValue,
)

log = logging.getLogger("ipsec_deploy.lab")

# [MS-PSRP] 2.2.2.1 SESSION_CAPABILITY as Windows PowerShell 5.1 sends it.
PROTOCOL_VERSION = "2.3"
PS_VERSION = "2.0"
SERIALIZATION_VERSION = "1.1.0.1"

PRIMITIVE_DICTIONARY_TYPE_NAMES = [
    "System.Management.Automation.PSPrimitiveDictionary",
    "System.Collections.Hashtable",
    "System.Object",
]

# $PSVersionTable of Windows Server 2019 (build 17763) with PowerShell 5.1.
PS_VERSION_TABLE: list[tuple[str, Any]] = [
    ("PSVersion", Tagged("Version", "5.1.17763.1")),
    ("PSEdition", "Desktop"),
    (
        "PSCompatibleVersions",
        TypedList(
            [Tagged("Version", v) for v in ("1.0", "2.0", "3.0", "4.0", "5.0", "5.1.17763.1")],
            ["System.Version[]", "System.Array", "System.Object"],
        ),
    ),
    ("CLRVersion", Tagged("Version", "4.0.30319.42000")),
    ("BuildVersion", Tagged("Version", "10.0.17763.1")),
    ("WSManStackVersion", Tagged("Version", "3.0")),
    ("PSRemotingProtocolVersion", Tagged("Version", PROTOCOL_VERSION)),
    ("SerializationVersion", Tagged("Version", SERIALIZATION_VERSION)),
]

# [MS-PSRP] 2.2.3.4 RunspacePoolState and 2.2.3.5 PSInvocationState values.
RUNSPACE_POOL_OPENED = 2
RUNSPACE_POOL_CLOSED = 3
PIPELINE_STOPPED = 3
PIPELINE_COMPLETED = 4
PIPELINE_FAILED = 5
PIPELINE_STATES = {"Completed": PIPELINE_COMPLETED, "Failed": PIPELINE_FAILED, "Stopped": PIPELINE_STOPPED}

FRAGMENT_HEADER_SIZE = 21  # [MS-PSRP] 2.2.4: ObjectId, FragmentId, flags and BlobLength
MESSAGE_HEADER_SIZE = 40  # [MS-PSRP] 2.2.1: Destination, MessageType, RPID and PID
EMPTY_GUID = b"\x00" * 16

# A SIMPLEBLOB header ([MS-PSRP] 3.2.5.4.3): bType SIMPLEBLOB, version 2,
# reserved, ALG_ID CALG_AES_256, then the key-exchange ALG_ID CALG_RSA_KEYX.
SIMPLEBLOB_HEADER = b"\x01\x02\x00\x00\x10\x66\x00\x00\x00\xa4\x00\x00"


class ProtocolError(ValueError):
    """Raised for PSRP data from the client that the lab cannot accept."""


@dataclass
class PsrpMessage:
    """One PSRP message ([MS-PSRP] 2.2.1). The GUIDs stay as raw bytes, because clients differ in byte order."""

    destination: int
    message_type: int
    runspace_pool_id: bytes
    pipeline_id: bytes
    data: bytes

    def pack(self) -> bytes:
        header = struct.pack("<II", self.destination, self.message_type)
        return header + self.runspace_pool_id + self.pipeline_id + self.data

    @classmethod
    def unpack(cls, raw: bytes) -> PsrpMessage:
        if len(raw) < MESSAGE_HEADER_SIZE:
            raise ProtocolError("PSRP message of %d bytes is shorter than its 40-byte header" % len(raw))
        destination, message_type = struct.unpack("<II", raw[:8])
        return cls(destination, message_type, raw[8:24], raw[24:40], raw[40:])


class FragmentAssembler:
    """Reassemble fragments ([MS-PSRP] 2.2.4) into messages, across as many calls as the client splits them."""

    def __init__(self) -> None:
        self._partial: dict[int, tuple[int, bytearray]] = {}

    def feed(self, data: bytes) -> list[PsrpMessage]:
        messages = []
        while data:
            if len(data) < FRAGMENT_HEADER_SIZE:
                raise ProtocolError("truncated PSRP fragment header (%d bytes)" % len(data))
            fragment, data = Fragment.unpack(data)

            if fragment.start:
                self._partial[fragment.object_id] = (fragment.fragment_id, bytearray(fragment.data))
            else:
                expected = self._partial.get(fragment.object_id)
                if expected is None or fragment.fragment_id != expected[0] + 1:
                    raise ProtocolError(
                        "PSRP fragment %d of object %d arrived out of order" % (fragment.fragment_id, fragment.object_id)
                    )
                self._partial[fragment.object_id] = (fragment.fragment_id, expected[1] + fragment.data)

            if fragment.end:
                _, blob = self._partial.pop(fragment.object_id)
                messages.append(PsrpMessage.unpack(bytes(blob)))
        return messages


@dataclass
class _QueuedMessage:
    object_id: int
    data: bytes
    offset: int = 0
    fragment_id: int = 0


# Marks the end of what one Receive may return, so that a later Receive gets the rest.
_RECEIVE_BREAK = None


class OutgoingQueue:
    """Server messages waiting for a Receive, fragmented when they are taken to fit the client's envelope."""

    def __init__(self) -> None:
        self._items: list[_QueuedMessage | None] = []
        self.closed = False  # set once the last message (PIPELINE_STATE) is queued

    def put(self, object_id: int, data: bytes) -> None:
        self._items.append(_QueuedMessage(object_id, data))

    def put_break(self) -> None:
        self._items.append(_RECEIVE_BREAK)

    def has_data(self) -> bool:
        return any(item is not _RECEIVE_BREAK for item in self._items)

    def take(self, budget: int) -> list[bytes]:
        """Return whole fragments that fit in ``budget`` bytes, at least one fragment when data waits."""
        fragments: list[bytes] = []
        used = 0
        while self._items:
            item = self._items[0]
            if item is _RECEIVE_BREAK:
                self._items.pop(0)
                if fragments:
                    break
                continue

            room = budget - used - FRAGMENT_HEADER_SIZE
            if room <= 0 and fragments:
                break
            room = max(room, 1024)

            chunk = item.data[item.offset : item.offset + room]
            start = item.offset == 0
            item.offset += len(chunk)
            end = item.offset >= len(item.data)
            fragments.append(Fragment(item.object_id, item.fragment_id, chunk, start, end).pack())
            item.fragment_id += 1
            used += len(fragments[-1])

            if end:
                self._items.pop(0)
        return fragments

    def is_drained(self) -> bool:
        return self.closed and not self.has_data()


class PipelineServer:
    """One pipeline of a runspace pool: its CREATE_PIPELINE, any input, the handler run and the replies."""

    def __init__(self, pool: RunspacePoolServer, command_id: str) -> None:
        self.pool = pool
        self.command_id = command_id
        self.outgoing = OutgoingQueue()
        self.pipeline_id = EMPTY_GUID
        self.request: PipelineRequest | None = None
        self.stopped = False
        self._assembler = FragmentAssembler()
        self._no_input = True
        self._started = False
        self._thread: threading.Thread | None = None

    def feed(self, data: bytes) -> None:
        """Take fragments sent by Command or Send for this pipeline."""
        for message in self._assembler.feed(data):
            self._dispatch(message)

    def _dispatch(self, message: PsrpMessage) -> None:
        if message.message_type == MessageType.CREATE_PIPELINE:
            self.pipeline_id = message.pipeline_id
            self.request, self._no_input = decode_create_pipeline(message.data, self.pool.cipher)
            if self._no_input:
                self._start()
        elif message.message_type == MessageType.PIPELINE_INPUT:
            if self.request is None:
                raise ProtocolError("PIPELINE_INPUT arrived before CREATE_PIPELINE")
            decoder = ClixmlDecoder(self.pool.cipher)
            self.request.input.append(decoder.decode_text(message.data) if message.data else None)
        elif message.message_type == MessageType.END_OF_PIPELINE_INPUT:
            self._start()
        elif message.message_type == MessageType.PIPELINE_HOST_RESPONSE:
            log.debug("ignored PIPELINE_HOST_RESPONSE for pipeline %s", self.command_id)
        else:
            raise ProtocolError("unexpected PSRP message type 0x%08X for pipeline %s" % (message.message_type, self.command_id))

    def _start(self) -> None:
        if self._started or self.request is None:
            return
        self._started = True
        self._thread = threading.Thread(target=self._run, name="lab-pipeline-%s" % self.command_id[:8], daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.request is not None
        try:
            result = self.pool.handler.run_pipeline(self.request)
        except Exception as error:  # noqa: BLE001 - any handler bug must still end the pipeline
            log.exception("pipeline handler raised on pipeline %s", self.command_id)
            result = PipelineResult(
                state="Failed",
                failure=ErrorRecordValue(
                    message="The lab's pipeline handler raised %s: %s" % (type(error).__name__, error),
                    fully_qualified_error_id="LabHandlerError",
                    category="NotSpecified",
                ),
            )
        self.pool.finish_pipeline(self, result)

    def stop(self) -> None:
        """Stop the pipeline for a ctrl_c signal. The handler thread runs on, but its result is dropped."""
        self.pool.stop_pipeline(self)


class RunspacePoolServer:
    """The PSRP state of one WS-Man shell: runspace pool messages, session key and pipelines."""

    def __init__(self, handler: PipelineHandler, split_open: bool = False) -> None:
        self.handler = handler
        self.split_open = split_open
        self.outgoing = OutgoingQueue()
        self.pipelines: dict[str, PipelineServer] = {}
        self.cipher: SecureStringCipher | None = None
        self.runspace_pool_id = EMPTY_GUID
        self.state = 0
        self.max_runspaces = 1
        self.min_runspaces = 1
        self.condition = threading.Condition()
        self._assembler = FragmentAssembler()
        self._next_object_id = 1

    # -- input from the client -------------------------------------------

    def feed(self, data: bytes) -> None:
        """Take pool-level fragments: the creationXml of Create, or a Send without CommandId."""
        for message in self._assembler.feed(data):
            with self.condition:
                self._dispatch(message)
                self.condition.notify_all()

    def create_pipeline(self, command_id: str, data: bytes) -> PipelineServer:
        pipeline = PipelineServer(self, command_id)
        with self.condition:
            self.pipelines[command_id] = pipeline
        pipeline.feed(data)
        return pipeline

    def _dispatch(self, message: PsrpMessage) -> None:
        message_type = message.message_type
        if self.runspace_pool_id == EMPTY_GUID:
            self.runspace_pool_id = message.runspace_pool_id

        if message_type == MessageType.SESSION_CAPABILITY:
            self._queue(MessageType.SESSION_CAPABILITY, self._encoder().message([
                ("protocolversion", Tagged("Version", PROTOCOL_VERSION)),
                ("PSVersion", Tagged("Version", PS_VERSION)),
                ("SerializationVersion", Tagged("Version", SERIALIZATION_VERSION)),
            ]))  # fmt: skip
        elif message_type == MessageType.INIT_RUNSPACEPOOL:
            self._open(message)
        elif message_type in (MessageType.SET_MAX_RUNSPACES, MessageType.SET_MIN_RUNSPACES):
            self._set_runspaces(message)
        elif message_type == MessageType.GET_AVAILABLE_RUNSPACES:
            call_id = _call_id(self._decode_members(message))
            busy = sum(1 for pipeline in self.pipelines.values() if not pipeline.outgoing.closed)
            self._queue_availability(Tagged("I64", max(self.max_runspaces - busy, 0)), call_id)
        elif message_type == MessageType.RESET_RUNSPACE_STATE:
            self._queue_availability(True, _call_id(self._decode_members(message)))
        elif message_type == MessageType.PUBLIC_KEY:
            self._exchange_session_key(message)
        elif message_type == MessageType.RUNSPACEPOOL_HOST_RESPONSE:
            log.debug("ignored RUNSPACEPOOL_HOST_RESPONSE")
        else:
            raise ProtocolError("unsupported runspace pool message type 0x%08X" % message_type)

    def _decode_members(self, message: PsrpMessage) -> dict[str, Any]:
        value = ClixmlDecoder(self.cipher).decode_text(message.data)
        if not isinstance(value, PSObjectValue):
            raise ProtocolError("PSRP message 0x%08X is not an object" % message.message_type)
        return value.properties

    def _open(self, message: PsrpMessage) -> None:
        members = self._decode_members(message)
        self.min_runspaces = int(members.get("MinRunspaces") or 1)
        self.max_runspaces = int(members.get("MaxRunspaces") or 1)

        version_table = TypedDictionary(PS_VERSION_TABLE, PRIMITIVE_DICTIONARY_TYPE_NAMES)
        private_data = TypedDictionary([("PSVersionTable", version_table)], PRIMITIVE_DICTIONARY_TYPE_NAMES)
        self._queue(
            MessageType.APPLICATION_PRIVATE_DATA,
            self._encoder().message([("ApplicationPrivateData", private_data)]),
        )
        if self.split_open:
            self.outgoing.put_break()

        self.state = RUNSPACE_POOL_OPENED
        self._queue(MessageType.RUNSPACEPOOL_STATE, self._encoder().message([("RunspaceState", RUNSPACE_POOL_OPENED)]))

    def _set_runspaces(self, message: PsrpMessage) -> None:
        members = self._decode_members(message)
        if message.message_type == MessageType.SET_MAX_RUNSPACES:
            self.max_runspaces = int(members.get("MaxRunspaces") or self.max_runspaces)
        else:
            self.min_runspaces = int(members.get("MinRunspaces") or self.min_runspaces)
        self._queue_availability(True, _call_id(members))

    def _queue_availability(self, response: Any, call_id: int) -> None:
        self._queue(
            MessageType.RUNSPACE_AVAILABILITY,
            self._encoder().message([("SetMinMaxRunspacesResponse", response), ("ci", Tagged("I64", call_id))]),
        )

    def _exchange_session_key(self, message: PsrpMessage) -> None:
        blob = base64.b64decode(self._decode_members(message).get("PublicKey") or "")
        public_key = _parse_public_key_blob(blob)

        session_key = os.urandom(32)
        self.cipher = SecureStringCipher(Cipher(algorithms.AES(session_key), modes.CBC(b"\x00" * 16)))

        # CryptoAPI stores the encrypted key little-endian, so the bytes are reversed.
        encrypted = public_key.encrypt(session_key, padding.PKCS1v15())[::-1]
        encoded = base64.b64encode(SIMPLEBLOB_HEADER + encrypted).decode("ascii")
        self._queue(MessageType.ENCRYPTED_SESSION_KEY, self._encoder().message([("EncryptedSessionKey", encoded)]))

    # -- output to the client --------------------------------------------

    def _encoder(self) -> ClixmlEncoder:
        return ClixmlEncoder(self.cipher)

    def _next_id(self) -> int:
        object_id = self._next_object_id
        self._next_object_id += 1
        return object_id

    def _pack(self, message_type: int, body: ET.Element, pipeline_id: bytes = EMPTY_GUID) -> bytes:
        message = PsrpMessage(Destination.CLIENT, message_type, self.runspace_pool_id, pipeline_id, to_bytes(body, True))
        return message.pack()

    def _queue(self, message_type: int, body: ET.Element) -> None:
        self.outgoing.put(self._next_id(), self._pack(message_type, body))

    def finish_pipeline(self, pipeline: PipelineServer, result: PipelineResult) -> None:
        """Queue a pipeline's output, errors and final state together, so that one Receive can take them all."""
        with self.condition:
            if pipeline.stopped:
                log.debug("dropped the result of stopped pipeline %s", pipeline.command_id)
                return

            try:
                encoded_output = [self._encoder().encode(value) for value in result.output]
            except Exception as error:  # noqa: BLE001 - an unencodable value must still end the pipeline
                log.exception("cannot encode the output of pipeline %s", pipeline.command_id)
                encoded_output = []
                result = PipelineResult(
                    state="Failed",
                    failure=ErrorRecordValue(
                        message="The lab cannot serialize the pipeline's output: %s" % error,
                        fully_qualified_error_id="LabSerializationError",
                        category="NotSpecified",
                    ),
                )
            for element in encoded_output:
                self._queue_for(pipeline, MessageType.PIPELINE_OUTPUT, element)
            for error in result.errors:
                self._queue_for(pipeline, MessageType.ERROR_RECORD, self._encoder().error_record(error))

            state = PIPELINE_STATES.get(result.state, PIPELINE_FAILED)
            members: list[tuple[str, Any]] = [("PipelineState", state)]
            if result.failure is not None and state != PIPELINE_COMPLETED:
                members.append(("ExceptionAsErrorRecord", self._encoder().error_record(result.failure)))
            self._queue_for(pipeline, MessageType.PIPELINE_STATE, self._encoder().message(members))
            pipeline.outgoing.closed = True
            self.condition.notify_all()

    def stop_pipeline(self, pipeline: PipelineServer) -> None:
        with self.condition:
            if pipeline.outgoing.closed:
                return
            pipeline.stopped = True
            stopped = ErrorRecordValue(
                message="The pipeline has been stopped.",
                fully_qualified_error_id="PipelineStopped",
                category="OperationStopped",
                exception_type="System.Management.Automation.PipelineStoppedException",
            )
            members = [("PipelineState", PIPELINE_STOPPED), ("ExceptionAsErrorRecord", self._encoder().error_record(stopped))]
            self._queue_for(pipeline, MessageType.PIPELINE_STATE, self._encoder().message(members))
            pipeline.outgoing.closed = True
            self.condition.notify_all()

    def _queue_for(self, pipeline: PipelineServer, message_type: int, body: ET.Element) -> None:
        pipeline.outgoing.put(self._next_id(), self._pack(message_type, body, pipeline.pipeline_id))

    def receive(self, queue: OutgoingQueue, budget: int, timeout: float) -> list[bytes] | None:
        """Wait up to ``timeout`` seconds for data and take what fits in ``budget``; None when nothing came."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while not queue.has_data():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.condition.wait(remaining)
            return queue.take(budget)

    def close(self) -> None:
        with self.condition:
            self.state = RUNSPACE_POOL_CLOSED
            for pipeline in self.pipelines.values():
                pipeline.stopped = True
            self.condition.notify_all()


def _call_id(members: dict[str, Any]) -> int:
    # [MS-PSRP] names the call identifier "ci"; pypsrp 0.9.1 sends "CI" in SET_MAX/MIN_RUNSPACES.
    return int(members.get("ci", members.get("CI")) or 0)


def _parse_public_key_blob(blob: bytes) -> rsa.RSAPublicKey:
    """Read the PUBLICKEYBLOB of a PUBLIC_KEY message ([MS-PSRP] 2.2.2.3): header, "RSA1", bit length, exponent, modulus."""
    if len(blob) < 20 or blob[8:12] != b"RSA1":
        raise ProtocolError("PUBLIC_KEY does not hold an RSA PUBLICKEYBLOB")
    bit_length, exponent = struct.unpack("<II", blob[12:20])
    modulus = int.from_bytes(blob[20 : 20 + bit_length // 8], "little")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def decode_create_pipeline(data: bytes, cipher: SecureStringCipher | None = None) -> tuple[PipelineRequest, bool]:
    """Decode a CREATE_PIPELINE message ([MS-PSRP] 2.2.2.10) into a request and its NoInput flag."""
    try:
        message = ClixmlDecoder(cipher).decode_text(data)
    except ClixmlError as error:
        raise ProtocolError("invalid CREATE_PIPELINE: %s" % error) from error
    if not isinstance(message, PSObjectValue) or not isinstance(message.properties.get("PowerShell"), PSObjectValue):
        raise ProtocolError("CREATE_PIPELINE has no PowerShell member")

    power_shell = message.properties["PowerShell"].properties
    no_input = bool(message.properties.get("NoInput", True))

    # pypsrp repeats the first statement in Cmds and sends every statement in
    # ExtraCmds when there are several ([MS-PSRP] 2.2.3.11 and .NET's behaviour).
    statements: list[list[Any]]
    extra = power_shell.get("ExtraCmds")
    if extra:
        statements = [statement.properties.get("Cmds") or [] for statement in extra]
    else:
        statements = [power_shell.get("Cmds") or []]

    # NOTE: the Merge* stream settings are not decoded, so errors never go to the output stream.
    commands: list[CommandCall] = []
    for statement in statements:
        for command in statement:
            commands.append(_decode_command(command))
        if commands:
            commands[-1].end_of_statement = True

    if not commands:
        raise ProtocolError("CREATE_PIPELINE contains no command")
    return PipelineRequest(commands=commands), no_input


def _decode_command(command: Any) -> CommandCall:
    if not isinstance(command, PSObjectValue):
        raise ProtocolError("a CREATE_PIPELINE command is not an object")
    members = command.properties
    call = CommandCall(command=str(members.get("Cmd") or ""), is_script=bool(members.get("IsScript")))
    for argument in members.get("Args") or []:
        if not isinstance(argument, PSObjectValue):
            raise ProtocolError("a CREATE_PIPELINE argument is not an object")
        name = argument.properties.get("N")
        call.parameters.append((name if name else None, argument.properties.get("V")))
    return call
