"""PowerShell Remoting (WinRM) transport, built on pypsrp.

One runspace pool per host for the whole command: opening it costs several
round trips, and every open shell counts against the per-user shell quota of
the host until it is closed.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

import requests
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..inventory.model import Host
from ..scripts import FixedScript
from .base import AuthenticationFailed, RemoteCommandFailed, RemoteError, TransportError
from .credentials import Secret

log = logging.getLogger("ipsec_deploy.transport")

# WSManFault codes (MS-WSMV) that mean "try again later": the shell or
# operation quota of the user is exhausted.
# NOTE: taken from winerror.h ERROR_WSMAN_QUOTA_MAX_SHELLS and
# ERROR_WSMAN_QUOTA_MAX_OPERATIONS; not seen from a real host here.
QUOTA_FAULT_CODES = frozenset({2150859173, 2150859174})

# HTTP statuses that a gateway or a busy service returns for a moment. The
# set is the status_forcelist of pypsrp 0.9.1's own reconnection retries
# (425, 429, 503) plus the gateway errors 502 and 504.
TRANSIENT_HTTP_STATUSES = frozenset({425, 429, 502, 503, 504})

# ssl.SSLError reasons meaning the server responded to the TLS handshake
# with bytes that are not TLS, as a plain-HTTP listener does.
# NOTE: seen with OpenSSL 3.0; other OpenSSL versions may report another reason.
NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER"})

WINRM_PORTS_HINT = "WinRM listens on port 5985 for HTTP and on 5986 for HTTPS"

# pypsrp 0.9.1 logs these records at ERROR, with a traceback for timeouts,
# just before it raises the exception that classify() reports. A user would
# see each error twice, once as a library dump, so they count as DEBUG
# records while a PsrpConnection calls pypsrp. A higher level on the whole
# pypsrp logger would hide them too, but also errors that no exception reports.
PYPSRP_RECORDS_BEFORE_RAISE = frozenset({
    "Failed to parse WSManFault message on WinRM error response, raising original WinRMTransportError",
    "%s during initial authentication request - attempt %d",
    "%s during WSMan request - attempt %d",
})
_calling_pypsrp: ContextVar[bool] = ContextVar("calling_pypsrp", default=False)


class _ReportedErrorsAsDebug(logging.Filter):
    """Demote pypsrp's records of errors that classify() reports to DEBUG, while this module calls pypsrp."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (_calling_pypsrp.get() and isinstance(record.msg, str) and record.msg in PYPSRP_RECORDS_BEFORE_RAISE):
            return True
        record.levelno = logging.DEBUG
        record.levelname = "DEBUG"
        # The logger has already let the record through at ERROR, and most
        # handlers set no level of their own, so pass it on only where the
        # logger enables DEBUG.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


logging.getLogger("pypsrp.wsman").addFilter(_ReportedErrorsAsDebug())


@contextmanager
def _calling_pypsrp_here() -> Iterator[None]:
    token = _calling_pypsrp.set(True)
    try:
        yield
    finally:
        _calling_pypsrp.reset(token)


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open a session to one host; the password is a Secret."""

    host: str
    address: str
    port: int
    transport: str  # "http" or "https"
    auth: str
    username: str | None
    password: Secret | None
    cert_validation: bool | str = True  # or the path of a CA bundle
    password_origin: str = "the password"  # where the password came from, named in errors
    client_certificate: str | None = None
    client_key: str | None = None
    operation_timeout: int = 20
    connection_timeout: int = 30
    read_timeout: int = 60


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient faults."""

    attempts: int = 3
    initial_wait: float = 1.0
    max_wait: float = 10.0


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def endpoint_of(settings: ConnectionSettings) -> str:
    """Return the WS-Management URL pypsrp sends to, such as http://127.0.0.1:5985/wsman."""
    address = settings.address
    try:
        address = f"[{ipaddress.IPv6Address(address).compressed}]"
    except ValueError:
        pass
    return f"{settings.transport}://{address}:{settings.port}/wsman"


def classify(settings: ConnectionSettings, error: Exception, established: bool = False) -> TransportError:
    """Turn a pypsrp or requests exception into a TransportError that states what failed and the next step.

    Only faults that can pass on their own are marked retryable: refused
    connections, timeouts, transient HTTP statuses and quota faults.
    ``established`` means that the session was open, so a connection error
    means the connection was lost, not that the settings are wrong.
    """
    host = settings.host
    endpoint = endpoint_of(settings)
    if isinstance(error, ImportError):
        return TransportError(host, _missing_library_reason(settings, endpoint, error))
    if type(error) is OSError and "TLS" in str(error):
        # requests raises a bare OSError, before connecting, for a CA bundle or client certificate file it cannot find.
        return TransportError(host, f"cannot use the TLS files for {endpoint}: {_first_line(error)}. "
                                    "Check ca_bundle, client_certificate and client_key in the inventory.")
    if isinstance(error, AuthenticationError) or (isinstance(error, WinRMTransportError) and error.code == 401):
        return AuthenticationFailed(host, _rejected_credentials_reason(settings, endpoint))
    if isinstance(error, requests.exceptions.SSLError):
        return TransportError(host, _tls_failure_reason(endpoint, error))
    # ConnectTimeout is a ConnectionError too, so timeouts come first.
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return TransportError(
            host,
            f"timed out waiting for the WinRM listener at {endpoint} to accept a connection. "
            f"Check that the host is up and that no firewall drops TCP port {settings.port}.",
            retryable=True,
        )
    if isinstance(error, requests.exceptions.Timeout):
        return TransportError(
            host,
            f"timed out waiting for the WinRM listener at {endpoint} to answer. "
            "The host may be overloaded. If it is only slow, raise operation_timeout_seconds in the inventory.",
            retryable=True,
        )
    if isinstance(error, requests.exceptions.ConnectionError) and established:
        return TransportError(
            host,
            f"lost the connection to {endpoint} during the session: {_innermost_reason(error)}. What the host "
            "did with the last request is unknown until it is read again; the next apply or verify reads it.",
            retryable=True,
        )
    if isinstance(error, requests.exceptions.ConnectionError):
        unresolved = _find_cause(error, socket.gaierror)
        if unresolved is not None:
            # A typo or a missing DNS record does not heal by retrying; a DNS server that did not answer may.
            return TransportError(
                host,
                f"cannot resolve the address '{settings.address}' of {endpoint}: {unresolved.strerror or unresolved}. "
                "Check the host's address in the inventory and this workstation's DNS.",
                retryable=unresolved.errno == socket.EAI_AGAIN,
            )
        if _find_cause(error, ConnectionRefusedError) is not None:
            return TransportError(
                host,
                f"cannot connect to the WinRM listener: connection refused at {endpoint}. "
                "Check the host's address, port and transport in the inventory, and that WinRM is enabled "
                "on the host (run Enable-PSRemoting, or winrm quickconfig).",
                retryable=True,
            )
        return TransportError(
            host,
            f"cannot connect to the WinRM listener at {endpoint}: {_innermost_reason(error)}. "
            f"Check the host's transport and port in the inventory ({WINRM_PORTS_HINT}).",
            retryable=True,
        )
    if isinstance(error, WinRMTransportError):
        # pypsrp raises WinRMTransportError only for an error response whose
        # body is not a WSManFault, so the response did not come from WinRM.
        return TransportError(
            host,
            f"the server at {endpoint} did not answer as WinRM: HTTP {_status_text(error.code)}. "
            f"Check that the host's port is its WinRM listener and not another web service ({WINRM_PORTS_HINT}).",
            retryable=error.code in TRANSIENT_HTTP_STATUSES,
        )
    if isinstance(error, WSManFaultError):
        retryable = error.code in QUOTA_FAULT_CODES
        return TransportError(host, f"WS-Management fault {error.code} from {endpoint}: {error.reason or error.message}", retryable=retryable)
    return TransportError(host, f"unexpected error from {endpoint}: {type(error).__name__}: {_first_line(error)}")


def _missing_library_reason(settings: ConnectionSettings, endpoint: str, error: ImportError) -> str:
    # pypsrp and pyspnego import these libraries only when an authentication
    # needs them. The extras are those of pyspnego 0.12 (gssapi and krb5 on
    # Linux and macOS) and pypsrp 0.9.1 (requests-credssp).
    library = f"the Python module {module}" if (module := _missing_module(error)) else "a Python module it needs"
    if settings.auth == "kerberos":
        return (
            f"cannot authenticate to {endpoint} with Kerberos because {library} is not installed. "
            "Kerberos from Linux or macOS needs the gssapi and krb5 libraries: run pip install 'pyspnego[kerberos]' "
            "in the environment of ipsec-deploy, and name the domain's realm and KDCs in a krb5.conf "
            "(/etc/krb5.conf, or the file that KRB5_CONFIG names)."
        )
    if settings.auth == "credssp":
        return (
            f"cannot authenticate to {endpoint} with CredSSP because {library} is not installed. "
            "Run pip install 'pypsrp[credssp]' in the environment of ipsec-deploy."
        )
    return f"cannot authenticate to {endpoint} with auth {settings.auth} because {library} is not installed: {_first_line(error)}"


def _missing_module(error: ImportError) -> str | None:
    """Return the name of the module whose import failed, or None if the error does not tell."""
    found = _find_cause(error, ModuleNotFoundError)
    if found is not None and found.name:
        return found.name
    # pyspnego and pypsrp raise a new ImportError that quotes the original
    # one's text ("... requires the Python gssapi library: No module named 'gssapi'").
    quoted = re.search(r"No module named '([\w.]+)'", str(error))
    return quoted.group(1) if quoted else None


def _rejected_credentials_reason(settings: ConnectionSettings, endpoint: str) -> str:
    if settings.auth == "certificate":
        return (
            f"the host rejected the client certificate (HTTP 401) at {endpoint}. Check that the certificate "
            "is mapped to a local account on the host (New-Item WSMan:\\localhost\\ClientCertificate)."
        )
    user = settings.username or "the current user"
    return f"the host rejected the credentials (HTTP 401) of user {user} at {endpoint}. Check the user name and {settings.password_origin}."


def _tls_failure_reason(endpoint: str, error: requests.exceptions.SSLError) -> str:
    verification = _find_cause(error, ssl.SSLCertVerificationError)
    if verification is not None:
        detail = verification.verify_message or verification.reason or "verification failed"
        if verification.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            return (
                f"the TLS certificate of {endpoint} failed validation: {detail}. Set the host's address "
                "in the inventory to a name that the certificate contains."
            )
        return (
            f"the TLS certificate of {endpoint} failed validation: {detail}. Set ca_bundle to a file "
            "with the CA that issued the host's WinRM certificate."
        )
    failure = _find_cause(error, ssl.SSLError)
    if failure is not None and failure.reason in NOT_TLS_REASONS:
        return (
            f"the listener at {endpoint} does not use TLS: it responded to the TLS handshake with data that is "
            "not TLS, as a plain-HTTP listener does. Check the host's transport and port in the inventory "
            f"({WINRM_PORTS_HINT})."
        )
    reason = (failure.reason if failure is not None else None) or _innermost_reason(error)
    return f"the TLS handshake with {endpoint} failed: {reason}. Check the host's transport and port in the inventory ({WINRM_PORTS_HINT})."


def _causes(error: BaseException) -> Iterator[BaseException]:
    """Yield the error and every error it wraps, outermost first.

    requests and urllib3 wrap the socket's error in several layers, linked
    through __context__, the ``reason`` of MaxRetryError and exception args.
    """
    pending = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args):
            if isinstance(linked, BaseException):
                pending.append(linked)


def _find_cause(error: BaseException, kind: type[BaseException]) -> Any:
    return next((cause for cause in _causes(error) if isinstance(cause, kind)), None)


def _innermost_reason(error: BaseException) -> str:
    """Return the text of the innermost wrapped error, without the URLs and pool names of the outer layers."""
    innermost = list(_causes(error))[-1]
    if isinstance(innermost, OSError) and innermost.strerror:
        return innermost.strerror
    return _first_line(innermost)


def _status_text(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def to_plain(value: Any) -> Any:
    """Convert pypsrp's deserialised objects into dicts, lists and scalars."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, GenericComplexObject):
        # pypsrp 0.9.1 decodes Hashtables and lists itself; any other object
        # keeps its properties in these two dictionaries.
        properties = {**value.adapted_properties, **value.extended_properties}
        if properties:
            return {str(k): to_plain(v) for k, v in properties.items()}
        return value.to_string
    return value


def _close_quietly(pool: RunspacePool) -> None:
    try:
        pool.close()
    except Exception as error:  # noqa: BLE001 - best effort after a failure that is reported already
        log.debug("closing a half-open session failed: %s", error)


def remote_error(record: Any) -> RemoteError:
    """Read the message, error id and category of a pypsrp ErrorRecord."""
    message = str(record).strip() or (getattr(record, "message", None) or "an error record without a message")
    return RemoteError(
        message=message,
        error_id=str(getattr(record, "fq_error", "") or ""),
        category=str(getattr(record, "message", "") or ""),
        target=str(getattr(record, "target_name", "") or ""),
    )


class PsrpConnection:
    """An open runspace pool on one host."""

    def __init__(self, settings: ConnectionSettings, retry: RetryPolicy | None = None) -> None:
        self.host = settings.host
        self._settings = settings
        self._retry = retry or RetryPolicy()
        self._pool: RunspacePool | None = None

    def _retrying(self, what: str) -> Retrying:
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("%s: %s failed (%s); retrying, attempt %d of %d", self.host, what, error, state.attempt_number + 1, self._retry.attempts)

        return Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, TransportError) and e.retryable),
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential(multiplier=self._retry.initial_wait, max=self._retry.max_wait),
            before_sleep=log_retry,
            reraise=True,
        )

    def open(self) -> "PsrpConnection":
        settings = self._settings
        for attempt in self._retrying("opening the session"):
            with attempt, _calling_pypsrp_here():
                try:
                    wsman = WSMan(
                        settings.address,
                        port=settings.port,
                        ssl=settings.transport == "https",
                        auth=settings.auth,
                        username=settings.username,
                        password=settings.password.reveal() if settings.password else None,
                        cert_validation=settings.cert_validation,
                        certificate_pem=settings.client_certificate,
                        certificate_key_pem=settings.client_key,
                        operation_timeout=settings.operation_timeout,
                        connection_timeout=settings.connection_timeout,
                        read_timeout=settings.read_timeout,
                        # WinRM message encryption whenever the transport is HTTP.
                        encryption="auto" if settings.transport == "https" else "always",
                        no_proxy=_is_loopback(settings.address),
                    )
                    pool = RunspacePool(wsman)
                    try:
                        pool.open()
                    except Exception:
                        # The shell may exist although the open failed; left
                        # behind, it counts against the user's shell quota.
                        _close_quietly(pool)
                        raise
                except (TransportError, RemoteCommandFailed):
                    raise
                except Exception as error:  # noqa: BLE001 - classified below, never leaks credentials
                    raise classify(settings, error) from None
                self._pool = pool
        log.info("%s: session open (%s://%s:%d)", self.host, settings.transport, settings.address, settings.port)
        return self

    def run_script(self, script: FixedScript, parameters: dict[str, Any], retry: bool = False) -> list[Any]:
        """Run a fixed script; ``retry`` only for read-only scripts, where a repeat is harmless."""
        if self._pool is None:
            raise TransportError(self.host, "the session is not open")
        if not retry:
            return self._invoke(script, parameters)
        for attempt in self._retrying(f"running {script.name}"):
            with attempt:
                return self._invoke(script, parameters)
        raise AssertionError("unreachable")

    def run_cmdlet(self, name: str, parameters: dict[str, Any]) -> tuple[list[Any], list[RemoteError]]:
        """Run one read-only cmdlet as a structured command; return its output and its error records.

        The caller decides which error records matter: Get-WinEvent, for
        example, reports "no events found" as an error record.
        """
        if self._pool is None:
            raise TransportError(self.host, "the session is not open")
        shell = PowerShell(self._pool)
        shell.add_cmdlet(name)
        for parameter, value in parameters.items():
            shell.add_parameter(parameter, value)
        try:
            with _calling_pypsrp_here():
                output = shell.invoke()
        except Exception as error:  # noqa: BLE001
            raise classify(self._settings, error, established=True) from None
        return [to_plain(item) for item in output], [remote_error(record) for record in shell.streams.error]

    def _invoke(self, script: FixedScript, parameters: dict[str, Any]) -> list[Any]:
        shell = PowerShell(self._pool)
        shell.add_script(script.text)
        for name, value in parameters.items():
            shell.add_parameter(name, value)
        try:
            with _calling_pypsrp_here():
                output = shell.invoke()
        except Exception as error:  # noqa: BLE001
            raise classify(self._settings, error, established=True) from None

        # pypsrp sets had_errors only when the pipeline fails; a
        # non-terminating error shows up only in streams.error, and any
        # error record fails the step.
        errors = [remote_error(record) for record in shell.streams.error]
        if shell.had_errors or errors:
            raise RemoteCommandFailed(self.host, script.name, errors)
        return [to_plain(item) for item in output]

    def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            with _calling_pypsrp_here():
                pool.close()
            log.info("%s: session closed", self.host)
        except Exception as error:  # noqa: BLE001 - a failed close must not hide the real result
            log.warning("%s: closing the session failed: %s", self.host, classify(self._settings, error).reason)


class PasswordSource(Protocol):
    def password_for(self, host: Host) -> Secret | None: ...

    def origin(self, host: Host) -> str:
        """Describe where the host's password comes from, for error messages."""
        ...


def settings_for(host: Host, passwords: PasswordSource, ca_bundle: str | None = None) -> ConnectionSettings:
    """Build a host's session settings from its inventory entry; ``ca_bundle`` overrides the inventory's."""
    connection = host.connection
    validation: bool | str = connection.cert_validation
    bundle = ca_bundle or connection.ca_bundle
    if bundle and connection.cert_validation:
        validation = bundle
    return ConnectionSettings(
        host=host.name,
        address=host.address,
        port=connection.effective_port,
        transport=connection.transport,
        auth=connection.auth,
        username=connection.username,
        password=passwords.password_for(host),
        cert_validation=validation,
        password_origin=passwords.origin(host),
        client_certificate=connection.client_certificate,
        client_key=connection.client_key,
        operation_timeout=connection.operation_timeout_seconds,
        # pypsrp needs the HTTP read timeout above the WS-Man operation
        # timeout, which bounds how long the host keeps a Receive open.
        read_timeout=connection.operation_timeout_seconds + 5,
    )


def psrp_connector(passwords: PasswordSource, ca_bundle: str | None = None, retry: RetryPolicy | None = None):
    """Return a function that opens a PsrpConnection to a host."""

    def connect(host: Host) -> PsrpConnection:
        return PsrpConnection(settings_for(host, passwords, ca_bundle), retry).open()

    return connect
