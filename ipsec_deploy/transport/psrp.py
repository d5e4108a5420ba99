"""PowerShell Remoting (WinRM) transport, built on pypsrp.

One runspace pool per host for the whole command: opening it costs several
round trips, and every open shell counts against the per-user shell quota of
the host until it is closed.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
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


def classify(host: str, error: Exception) -> TransportError:
    """Turn a pypsrp or requests exception into a TransportError that describes the failure."""
    if isinstance(error, AuthenticationError):
        return AuthenticationFailed(host, "the host rejected the credentials (HTTP 401): check the user name and password")
    if isinstance(error, requests.exceptions.SSLError):
        return TransportError(host, f"TLS certificate validation failed: {_first_line(error)}; set ca_bundle to the CA that issued the WinRM certificate")
    if isinstance(error, requests.exceptions.Timeout):
        return TransportError(host, "timed out waiting for the WinRM listener", retryable=True)
    if isinstance(error, requests.exceptions.ConnectionError):
        return TransportError(host, f"cannot connect to the WinRM listener: {_first_line(error)}", retryable=True)
    if isinstance(error, WinRMTransportError):
        if error.code == 401:
            return AuthenticationFailed(host, "the host rejected the credentials (HTTP 401): check the user name and password")
        return TransportError(host, f"WinRM returned HTTP status {error.code}", retryable=error.code >= 500)
    if isinstance(error, WSManFaultError):
        retryable = error.code in QUOTA_FAULT_CODES
        return TransportError(host, f"WS-Management fault {error.code}: {error.reason or error.message}", retryable=retryable)
    return TransportError(host, f"{type(error).__name__}: {_first_line(error)}")


def _first_line(error: Exception) -> str:
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
            with attempt:
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
                    raise classify(self.host, error) from None
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
            output = shell.invoke()
        except Exception as error:  # noqa: BLE001
            raise classify(self.host, error) from None
        return [to_plain(item) for item in output], [remote_error(record) for record in shell.streams.error]

    def _invoke(self, script: FixedScript, parameters: dict[str, Any]) -> list[Any]:
        shell = PowerShell(self._pool)
        shell.add_script(script.text)
        for name, value in parameters.items():
            shell.add_parameter(name, value)
        try:
            output = shell.invoke()
        except Exception as error:  # noqa: BLE001
            raise classify(self.host, error) from None

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
            pool.close()
            log.info("%s: session closed", self.host)
        except Exception as error:  # noqa: BLE001 - a failed close must not hide the real result
            log.warning("%s: closing the session failed: %s", self.host, classify(self.host, error).reason)


class PasswordSource(Protocol):
    def password_for(self, host: Host) -> Secret | None: ...


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
