"""``LabListener``: one simulated Windows host's WinRM listener on a loopback address.

The listener is a threaded HTTP(S) server that authenticates each request
(``ipsec_deploy.lab.auth``), unwraps WinRM message encryption, hands the SOAP
envelope to the host's ``WsmanService`` and writes the reply in a single
socket write. It counts every HTTP round trip, so that benchmarks can check
how chatty a deployment is. It is a simulator, not Windows.

Example::

    with LabListener(handler, accounts={"vagrant": "vagrant"}) as listener:
        wsman = WSMan("127.0.0.1", port=listener.port, ssl=False, username="vagrant", password="vagrant")
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Any

from pypsrp.encryption import WinRMEncryption
from pypsrp.exceptions import WinRMError
from spnego.exceptions import SpnegoError

from ipsec_deploy.lab.auth import (
    BASIC,
    NEGOTIATE,
    SUPPORTED_METHODS,
    AuthenticationFailed,
    Authenticator,
    ConnectionAuth,
    parse_authorization,
    tls_server_end_point,
)
from ipsec_deploy.lab.certificates import LabCertificates, create_certificates
from ipsec_deploy.lab.faults import FaultPlan
from ipsec_deploy.lab.pipeline import PipelineHandler
from ipsec_deploy.lab.wsman import ClientInfo, WsmanFault, WsmanRequest, WsmanService, fault_envelope

log = logging.getLogger("ipsec_deploy.lab")

WSMAN_PATH = "/wsman"
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
ENCRYPTED_CONTENT_TYPE = 'multipart/encrypted;protocol="%s";boundary="Encrypted Boundary"' % WinRMEncryption.SPNEGO
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')

# Requests over this size are rejected before they are read; WinRM's own
# limit is MaxEnvelopeSizekb (500 KiB on Server 2019) plus encryption framing.
MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass
class RoundTripCounters:
    """HTTP round trips of one listener, by kind. Read ``snapshot()`` for a consistent copy."""

    total: int = 0  # every HTTP request that reached the listener, replied to or dropped
    authentication: int = 0  # requests that got 401, including the legs of the NTLM handshake
    dropped: int = 0  # requests whose connection the drop fault closed
    encrypted: int = 0  # requests whose body came in WinRM message encryption
    by_action: Counter[str] = field(default_factory=Counter)  # WS-Man action name (Create, Receive...)
    faults: Counter[str] = field(default_factory=Counter)  # WS-Man fault subcode (w:TimedOut...)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> int:
        with self._lock:
            value = getattr(self, name) + amount
            setattr(self, name, value)
            return value

    def add_action(self, action: str) -> None:
        with self._lock:
            self.by_action[action] += 1

    def add_fault(self, subcode: str) -> None:
        with self._lock:
            self.faults[subcode] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "authentication": self.authentication,
                "dropped": self.dropped,
                "encrypted": self.encrypted,
                "by_action": dict(self.by_action),
                "faults": dict(self.faults),
            }

    def reset(self) -> None:
        with self._lock:
            self.total = self.authentication = self.dropped = self.encrypted = 0
            self.by_action.clear()
            self.faults.clear()


def validate_loopback(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Return the address of ``host``; raise ValueError unless it is in 127.0.0.0/8 or is ::1."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError as error:
        raise ValueError("lab listeners bind IP addresses only, got %r; use one in 127.0.0.0/8" % host) from error
    if not address.is_loopback:
        raise ValueError("lab listeners bind loopback addresses only (127.0.0.0/8 or ::1), got %s" % host)
    return address


class _LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, listener: LabListener, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        self.listener = listener
        super().__init__(address, _LabRequestHandler, bind_and_activate=False)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, on the connection's own thread, so that
        # a slow or failing handshake cannot block the accept loop.
        context = self.listener._tls_context
        if context is not None:
            try:
                request = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as error:
                log.info("TLS handshake with %s failed on %s: %s", client_address[0], self.listener.endpoint, error)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error on a connection from %s to %s", client_address[0], self.listener.endpoint)


class _LabRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: _LabHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.auth_state = ConnectionAuth()
        self.server.listener._track(self.connection, True)

    def finish(self) -> None:
        self.server.listener._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _drop(self, request_number: int, reason: str) -> None:
        """Close the connection without a reply, as a lost packet or a dead host looks to the client."""
        listener = self.server.listener
        listener.round_trips.add("dropped")
        log.info("dropped request %d on %s (%s)", request_number, listener.endpoint, reason)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"", [("Allow", "POST")])

    def do_POST(self) -> None:
        listener = self.server.listener
        request_number = listener.round_trips.add("total")
        faults = listener.faults

        if faults.drop_after_requests is not None and request_number > faults.drop_after_requests:
            self._drop(request_number, "drop_after_requests fault")
            return

        if listener.admit is not None and not listener.admit():
            # The simulated host's IPsec policy drops the controller's clear
            # WinRM traffic: the client sees the connection go silent.
            self._drop(request_number, "the host's IPsec rules require IPsec from the controller")
            return

        if faults.latency > 0:
            time.sleep(faults.latency)

        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"")
            return
        body = self.rfile.read(length) if length else b""

        if self.path.split("?", 1)[0].rstrip("/").lower() != WSMAN_PATH:
            self._send(HTTPStatus.NOT_FOUND, b"")
            return

        try:
            user, reply_token = self._authenticate()
        except AuthenticationFailed as error:
            listener.round_trips.add("authentication")
            log.info("rejected credentials from %s on %s: %s", self.client_address[0], listener.endpoint, error)
            self._send(HTTPStatus.UNAUTHORIZED, b"", listener.authenticator.challenge_headers())
            return
        if user is None:
            # A Negotiate leg that needs another token from the client.
            listener.round_trips.add("authentication")
            self._send(HTTPStatus.UNAUTHORIZED, b"", [("WWW-Authenticate", "Negotiate " + reply_token)])
            return

        auth_headers = [("WWW-Authenticate", "Negotiate " + reply_token)] if reply_token else []
        self._serve_wsman(user, body, auth_headers)

    # -- steps of a request ----------------------------------------------

    def _authenticate(self) -> tuple[str | None, str]:
        """Return (user, reply token); user is None while a Negotiate handshake goes on."""
        listener = self.server.listener
        if listener.faults.reject_credentials:
            raise AuthenticationFailed("reject_credentials fault")

        scheme, token = parse_authorization(self.headers.get("Authorization", ""))
        if scheme == BASIC:
            self.auth_state = ConnectionAuth()
            return listener.authenticator.check_basic(token), ""

        if scheme in (NEGOTIATE, "ntlm"):
            try:
                in_token = base64.b64decode(token, validate=True)
            except binascii.Error as error:
                raise AuthenticationFailed("malformed Negotiate token") from error
            out_token = listener.authenticator.step_negotiate(self.auth_state, in_token)
            encoded = base64.b64encode(out_token).decode("ascii") if out_token else ""
            return self.auth_state.user, encoded

        if scheme:
            raise AuthenticationFailed("unsupported authentication scheme %r" % scheme)
        if self.auth_state.user is not None:
            return self.auth_state.user, ""
        raise AuthenticationFailed("no credentials")

    def _serve_wsman(self, user: str, body: bytes, headers: list[tuple[str, str]]) -> None:
        listener = self.server.listener
        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith(("multipart/encrypted", "multipart/x-multi-encrypted"))

        # NOTE: a plain SOAP body is accepted over HTTP too, as with
        # AllowUnencrypted=true; Windows's default (false) would reject it.
        if encrypted:
            encryption = self.auth_state.encryption
            boundary = _BOUNDARY.search(content_type)
            if encryption is None or boundary is None:
                listener.round_trips.add("authentication")
                self._send(HTTPStatus.UNAUTHORIZED, b"", listener.authenticator.challenge_headers())
                return
            listener.round_trips.add("encrypted")
            try:
                body = encryption.unwrap_message(body, boundary.group(1))
            except (WinRMError, SpnegoError, ValueError, IndexError) as error:
                # A client interrupted mid-request can leave the NTLM sequence numbers out of step.
                log.warning("could not decrypt a request from %s on %s: %s", user, listener.endpoint, error)
                self.close_connection = True
                self._send(HTTPStatus.BAD_REQUEST, b"", headers)
                return

        if not body:
            # pypsrp's empty POST that sets up the NTLM context before encryption.
            self._send(HTTPStatus.OK, b"", headers)
            return

        status = HTTPStatus.OK
        relates_to = ""
        try:
            request = WsmanRequest.parse(body)
            listener.round_trips.add_action(request.short_action)
            relates_to = request.message_id
            reply = listener.service.handle(request, ClientInfo(user, self.client_address[0]))
        except WsmanFault as fault:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            listener.round_trips.add_fault(fault.subcode)
            if fault.subcode != "w:TimedOut":
                log.info("WS-Man fault %s for %s on %s: %s", fault.subcode, user, listener.endpoint, fault.message)
            reply = fault_envelope(fault, relates_to, listener.host)

        if encrypted:
            assert self.auth_state.encryption is not None
            _, wrapped = self.auth_state.encryption.wrap_message(reply)
            self._send(status, wrapped, headers, ENCRYPTED_CONTENT_TYPE)
        else:
            self._send(status, reply, headers, SOAP_CONTENT_TYPE)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Write the status line, headers and body in one send, so that Nagle's algorithm cannot delay the body."""
        lines = ["HTTP/1.1 %d %s" % (status.value, status.phrase), "Server: %s" % self.server_version]
        lines.append("Date: %s" % self.date_time_string())
        if content_type:
            lines.append("Content-Type: %s" % content_type)
        lines.append("Content-Length: %d" % len(body))
        for name, value in headers or []:
            lines.append("%s: %s" % (name, value))
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + body)
        except OSError as error:
            log.info("could not send a reply on %s: %s", self.server.listener.endpoint, error)
            self.close_connection = True


class LabListener:
    """A simulated Windows host's WinRM listener (HTTP or HTTPS) on a loopback address.

    ``handler`` runs the host's pipelines. ``accounts`` maps user names
    (``user`` or ``DOMAIN\\user``) to passwords, ``auth`` lists the accepted
    methods (``"negotiate"``, ``"basic"``). ``max_receive_wait`` caps how long a
    Receive waits for output before the OperationTimeout fault, in seconds, so
    that tests need not wait the client's full OperationTimeout.
    ``split_pool_open`` sends the runspace pool's Opened state in a second
    Receive, as the recorded Windows Server 2016 exchanges do. By default it
    comes in the first Receive, which saves a round trip.
    """

    def __init__(
        self,
        handler: PipelineHandler,
        host: str = "127.0.0.1",
        port: int = 0,
        scheme: str = "http",
        accounts: dict[str, str] | None = None,
        auth: tuple[str, ...] = SUPPORTED_METHODS,
        faults: FaultPlan | None = None,
        machine_name: str | None = None,
        max_receive_wait: float | None = None,
        split_pool_open: bool = False,
        admit: Callable[[], bool] | None = None,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError("scheme must be 'http' or 'https', got %r" % scheme)
        self.address = validate_loopback(host)
        self.host = str(self.address)
        self.scheme = scheme
        self.faults = faults or FaultPlan()
        # Called before each request; False drops it, as a host whose IPsec
        # policy blocks the client would.
        self.admit = admit
        self.round_trips = RoundTripCounters()
        self.machine_name = machine_name or "LAB-" + self.host.replace(".", "-").replace(":", "")
        self.authenticator = Authenticator(dict(accounts or {}), tuple(auth))
        self.certificates: LabCertificates | None = None

        self._handler = handler
        self._max_receive_wait = max_receive_wait
        self._split_pool_open = split_pool_open
        self._requested_port = port
        self._port: int | None = None
        self._server: _LabHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._directory: Path | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self.service: WsmanService | None = None

    # -- public API ------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the listener has no port until start() is called")
        return self._port

    @property
    def endpoint(self) -> str:
        host = "[%s]" % self.host if self.address.version == 6 else self.host
        return "%s://%s:%d%s" % (self.scheme, host, self.port, WSMAN_PATH)

    @property
    def ca_file(self) -> Path | None:
        """PEM file of the CA that signed an HTTPS listener's certificate (pypsrp's ``cert_validation``)."""
        return self.certificates.ca_file if self.certificates else None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> LabListener:
        with self._state_lock:
            if self._server is not None:
                return self
            self._directory = Path(tempfile.mkdtemp(prefix="ipsec-deploy-lab-"))
            if self.scheme == "https":
                self._prepare_tls()

            self._bind()
            assert self._port is not None
            self.service = WsmanService(
                self._handler,
                endpoint=self.endpoint,
                machine_name=self.machine_name,
                max_receive_wait=self._max_receive_wait,
                split_pool_open=self._split_pool_open,
            )
            if not self.faults.refuse_connections:
                self._activate()
            log.info(
                "lab listener %s started on %s (auth %s%s)",
                self.machine_name,
                self.endpoint,
                ", ".join(self.authenticator.methods),
                ", refusing connections" if self.faults.refuse_connections else "",
            )
        return self

    def stop(self) -> None:
        with self._state_lock:
            server = self._server
            if server is None:
                return
            self._server = None
            self._deactivate(server)
            server.server_close()
            if self.service is not None:
                self.service.close()
            self.authenticator.close()
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None
            log.info("lab listener %s stopped on %s", self.machine_name, self.endpoint)

    def refuse_connections(self, refuse: bool = True) -> None:
        """Stop (or resume) accepting connections on the same port; open connections are closed."""
        with self._state_lock:
            self.faults.refuse_connections = refuse
            if self._server is None:
                return
            if refuse and self._thread is not None:
                self._deactivate(self._server)
                self._server.server_close()
                self._bind()
                log.info("lab listener %s now refuses connections on %s", self.machine_name, self.endpoint)
            elif not refuse and self._thread is None:
                self._activate()
                log.info("lab listener %s accepts connections again on %s", self.machine_name, self.endpoint)

    def __enter__(self) -> LabListener:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------

    def _prepare_tls(self) -> None:
        assert self._directory is not None
        self.certificates = create_certificates(self._directory / "tls", self.host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificates.certificate_file, self.certificates.key_file)
        self._tls_context = context
        self.authenticator.channel_binding_data = tls_server_end_point(self.certificates.certificate_der)

    def _bind(self) -> None:
        """Bind the port without listening, so that connects are refused until ``_activate``."""
        family = socket.AF_INET6 if self.address.version == 6 else socket.AF_INET
        port = self._port if self._port is not None else self._requested_port
        server = _LabHTTPServer(self, (self.host, port), family)
        try:
            server.server_bind()
        except OSError:
            server.server_close()
            raise
        self._server = server
        self._port = server.server_address[1]

    def _activate(self) -> None:
        assert self._server is not None
        self._server.server_activate()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="lab-listener-%s-%d" % (self.host, self._port or 0),
            daemon=True,
        )
        self._thread.start()

    def _deactivate(self, server: _LabHTTPServer) -> None:
        if self._thread is not None:
            server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
