"""Pipeline requests and results passed between the lab's PSRP server and its emulated hosts.

The PSRP server (``ipsec_deploy.lab.psrp``) decodes a CREATE_PIPELINE message
into a ``PipelineRequest``, hands it to the ``PipelineHandler`` of the
simulated host, and encodes the ``PipelineResult`` back into PIPELINE_OUTPUT,
ERROR_RECORD and PIPELINE_STATE messages. Neither side needs to know how the
other one works.

Values in ``CommandCall.parameters`` and ``PipelineRequest.input`` are plain
Python values decoded from CLIXML: ``str``, ``int``, ``bool``, ``float``,
``None``, ``list`` (for ``Obj`` with ``LST``/``IE``), ``dict`` (for
``Hashtable``/``DCT``) and ``PSObjectValue`` for any other complex object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

PipelineState = Literal["Completed", "Failed", "Stopped"]


@dataclass
class PSObjectValue:
    """A complex PowerShell object: its type names (most derived first) and properties in order."""

    type_names: list[str]
    properties: dict[str, Any] = field(default_factory=dict)
    to_string: str | None = None

    # The primitive that the object wraps, such as an enum's integer; None for most objects.
    value: Any = None


@dataclass
class CommandCall:
    """One command of a pipeline: a cmdlet name or, with ``is_script``, the text of a script."""

    command: str
    is_script: bool = False

    # (name, value) in the order the client sent them. A switch arrives with
    # value True (or None, as pypsrp sends ``-Switch`` without a value); a
    # positional argument has name None.
    parameters: list[tuple[str | None, Any]] = field(default_factory=list)

    # True on the last command of each statement; a pipeline built with
    # pypsrp's add_statement() contains several statements.
    end_of_statement: bool = False


@dataclass
class PipelineRequest:
    """A whole pipeline as the client sent it, with any input objects."""

    commands: list[CommandCall]
    input: list[Any] = field(default_factory=list)


@dataclass
class ErrorRecordValue:
    """An ErrorRecord as PowerShell serialises it, reduced to what clients read."""

    message: str
    fully_qualified_error_id: str
    category: str  # an ErrorCategory member name, such as "InvalidArgument"
    exception_type: str = "System.Management.Automation.RuntimeException"
    target_name: str = ""
    command_name: str = ""
    reason: str = ""  # the exception's short type name, shown by CategoryInfo


@dataclass
class PipelineResult:
    """What a pipeline produced: output objects, non-terminating errors and its final state.

    A ``Failed`` pipeline carries the terminating error in ``failure``; the
    server sends it as the PIPELINE_STATE message's ``ExceptionAsErrorRecord``.
    """

    output: list[Any] = field(default_factory=list)
    errors: list[ErrorRecordValue] = field(default_factory=list)
    state: PipelineState = "Completed"
    failure: ErrorRecordValue | None = None


class PipelineHandler(Protocol):
    """The PowerShell side of one simulated host."""

    def run_pipeline(self, request: PipelineRequest) -> PipelineResult: ...
