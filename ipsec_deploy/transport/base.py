"""The connection to one managed host, whatever carries it.

The executor only needs to run the package's fixed scripts with typed
parameters and read back plain values. ``HostConnection`` is that contract;
``PsrpConnection`` implements it over PowerShell Remoting, and another
transport (for example a GPO management host) can implement it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..scripts import FixedScript


class TransportError(Exception):
    """The host could not be reached or did not answer; ``retryable`` marks transient faults."""

    def __init__(self, host: str, reason: str, retryable: bool = False) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason
        self.retryable = retryable


class AuthenticationFailed(TransportError):
    """The host rejected the credentials (HTTP 401). Never retried."""


@dataclass(frozen=True)
class RemoteError:
    """An error record a remote command produced, reduced to what an admin needs."""

    message: str
    error_id: str = ""
    category: str = ""
    target: str = ""


class RemoteCommandFailed(Exception):
    """A remote script wrote an error record or failed; any error record fails the step."""

    def __init__(self, host: str, script: str, errors: list[RemoteError]) -> None:
        first = errors[0] if errors else RemoteError("the command failed without an error record")
        super().__init__(f"{host}: {script} failed: {first.message}")
        self.host = host
        self.script = script
        self.errors = errors


class HostConnection(Protocol):
    """An open session to one host. Close it always: Windows limits shells per user."""

    host: str

    def run_script(self, script: FixedScript, parameters: dict[str, Any], retry: bool = False) -> list[Any]:
        """Run a fixed script with typed parameters; return its output as plain values.

        ``retry`` repeats the script on a transient fault, which is only safe
        for scripts that change nothing.
        """
        ...

    def run_cmdlet(self, name: str, parameters: dict[str, Any]) -> tuple[list[Any], list[RemoteError]]:
        """Run one read-only cmdlet; return its output and error records."""
        ...

    def close(self) -> None: ...
