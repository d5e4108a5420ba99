"""Structured NetSecurity cmdlet invocations: a cmdlet name and typed parameters.

The same ``CmdletCall`` is sent over PSRP as a structured command by the
executor and rendered as reviewable PowerShell by ``render.powershell``, so
what a change board reads is what the tool runs. No inventory value is ever
turned into PowerShell source except through the quoting in that renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class SecretFromEnvironment:
    """A secret (a pre-shared key) taken from an environment variable.

    The executor reads the variable on the admin workstation; a rendered
    script reads ``$env:NAME`` on the machine that runs it.
    """

    variable: str


# A switch parameter is present with the value True. Proposal parameters take
# the objects that nested New-*Proposal calls return.
ParameterValue = Union[str, int, bool, tuple[str, ...], tuple["CmdletCall", ...], SecretFromEnvironment]


@dataclass(frozen=True)
class CmdletCall:
    name: str
    parameters: tuple[tuple[str, ParameterValue], ...] = ()

    def parameter(self, name: str) -> ParameterValue | None:
        for key, value in self.parameters:
            if key == name:
                return value
        return None

    def with_parameter(self, name: str, value: ParameterValue) -> "CmdletCall":
        return CmdletCall(self.name, self.parameters + ((name, value),))
