"""What a cmdlet implementation receives: the host, its bound parameters and the output streams."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipsec_deploy.lab.netsecurity.binding import BoundCommand
from ipsec_deploy.lab.netsecurity.errors import CmdletError
from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.pipeline import ErrorRecordValue


@dataclass
class CmdletContext:
    """One invocation of a cmdlet (one ProcessRecord call, in PowerShell terms)."""

    host: LabHost
    bound: BoundCommand
    output: list[Any] = field(default_factory=list)
    errors: list[ErrorRecordValue] = field(default_factory=list)

    @property
    def command(self) -> str:
        return self.bound.name

    def write_error(self, error: CmdletError) -> None:
        """Report a non-terminating error as -ErrorAction says: raise it with Stop, drop it when silenced."""
        action = self.bound.error_action
        if error.terminating or action == "Stop":
            raise CmdletError(error.record, terminating=True)
        if action in ("SilentlyContinue", "Ignore"):
            return
        self.errors.append(error.record)


CmdletImplementation = Callable[[CmdletContext], None]

# Lower-case cmdlet name -> implementation; filled by the cmdlet modules.
CMDLETS: dict[str, CmdletImplementation] = {}


def cmdlet(*names: str) -> Callable[[CmdletImplementation], CmdletImplementation]:
    def register(function: CmdletImplementation) -> CmdletImplementation:
        for name in names:
            CMDLETS[name.lower()] = function
        return function
    return register
