"""Error records the emulated host returns, worded as Windows PowerShell 5.1 words them.

Each factory returns an ``ErrorRecordValue``. ``CmdletError`` carries one
through Python code; ``terminating`` says whether PowerShell would stop the
whole pipeline (parameter binding errors, unknown commands) or only report
it and go on (most cmdlet errors).
"""

from __future__ import annotations

from ipsec_deploy.lab.pipeline import ErrorRecordValue

PARAMETER_BINDING_EXCEPTION = "System.Management.Automation.ParameterBindingException"
CIM_EXCEPTION = "Microsoft.Management.Infrastructure.CimException"
CIM_JOB_EXCEPTION = "Microsoft.PowerShell.Cmdletization.Cim.CimJobException"


class CmdletError(Exception):
    """An error record raised inside the emulated host."""

    def __init__(self, record: ErrorRecordValue, terminating: bool = False) -> None:
        super().__init__(record.message)
        self.record = record
        self.terminating = terminating


def _short_name(exception_type: str) -> str:
    return exception_type.rsplit(".", 1)[-1]


def error_record(
    message: str,
    error_id: str,
    category: str,
    command: str,
    *,
    exception_type: str = CIM_EXCEPTION,
    target_name: str = "",
) -> ErrorRecordValue:
    """Build a record whose FullyQualifiedErrorId is ``<error_id>,<command>``, as PowerShell forms it."""
    fully_qualified = f"{error_id},{command}" if command else error_id
    return ErrorRecordValue(
        message=message,
        fully_qualified_error_id=fully_qualified,
        category=category,
        exception_type=exception_type,
        target_name=target_name,
        command_name=command,
        reason=_short_name(exception_type),
    )


def binding_error(message: str, error_id: str, command: str, target: str = "") -> CmdletError:
    record = error_record(
        message, error_id, "InvalidArgument", command,
        exception_type=PARAMETER_BINDING_EXCEPTION, target_name=target,
    )
    return CmdletError(record, terminating=True)


def parameter_not_found(command: str, name: str) -> CmdletError:
    return binding_error(
        f"A parameter cannot be found that matches parameter name '{name}'.",
        "NamedParameterNotFound", command, name,
    )


def ambiguous_parameter(command: str, name: str, matches: list[str]) -> CmdletError:
    listed = " ".join(f"-{m}" for m in matches)
    return binding_error(
        f"Parameter cannot be processed because the parameter name '{name}' is ambiguous. "
        f"Possible matches include: {listed}.",
        "AmbiguousParameter", command, name,
    )


def parameter_already_bound(command: str, name: str) -> CmdletError:
    return binding_error(
        f"Cannot bind parameter because parameter '{name}' is specified more than once. "
        "To provide multiple values to parameters that can accept multiple values, use the "
        'array syntax. For example, "-parameter value1,value2,value3".',
        "ParameterAlreadyBound", command, name,
    )


def positional_parameter_not_found(command: str, value: object) -> CmdletError:
    return binding_error(
        f"A positional parameter cannot be found that accepts argument '{value}'.",
        "PositionalParameterNotFound", command, str(value),
    )


def ambiguous_parameter_set(command: str) -> CmdletError:
    return binding_error(
        "Parameter set cannot be resolved using the specified named parameters.",
        "AmbiguousParameterSet", command,
    )


def missing_mandatory(command: str, names: list[str]) -> CmdletError:
    # NOTE: an interactive console would prompt for the values; a remote
    # (non-interactive) pipeline fails with this record instead.
    return binding_error(
        "Cannot process command because of one or more missing mandatory parameters: "
        + " ".join(names) + ".",
        "MissingMandatoryParameter", command,
    )


def cannot_convert(command: str, parameter: str, value: object, type_name: str, detail: str) -> CmdletError:
    """Conversion failure of a parameter value (enum names, numbers, CIM instances)."""
    return binding_error(
        f"Cannot bind parameter '{parameter}'. Cannot convert value \"{value}\" to type "
        f"\"{type_name}\". Error: \"{detail}\"",
        "CannotConvertArgumentNoMessage", command, str(value),
    )


def cannot_convert_object(command: str, parameter: str, value_type: str, type_name: str) -> CmdletError:
    """Conversion failure of a value PowerShell cannot convert at all (an array to a string)."""
    return binding_error(
        f"Cannot convert '{value_type}' to the type '{type_name}' required by parameter "
        f"'{parameter}'. Specified method is not supported.",
        "CannotConvertArgument", command,
    )


def boolean_transformation(command: str, parameter: str, value_type: str) -> CmdletError:
    return binding_error(
        f"Cannot process argument transformation on parameter '{parameter}'. Cannot convert "
        f"value \"{value_type}\" to type \"System.Boolean\". Boolean parameters accept only "
        "Boolean values and numbers, such as $True, $False, 1 or 0.",
        "ParameterArgumentTransformationError", command,
    )


def input_not_bound(command: str) -> ErrorRecordValue:
    return error_record(
        "The input object cannot be bound to any parameters for the command either because the "
        "command does not take pipeline input or the input and its properties do not match any "
        "of the parameters that take pipeline input.",
        "InputObjectNotBound", "InvalidArgument", command,
        exception_type=PARAMETER_BINDING_EXCEPTION,
    )


def command_not_found(name: str) -> CmdletError:
    record = error_record(
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, "
        "or operable program. Check the spelling of the name, or if a path was included, verify "
        "that the path is correct and try again.",
        "CommandNotFoundException", "ObjectNotFound", "",
        exception_type="System.Management.Automation.CommandNotFoundException",
        target_name=name,
    )
    return CmdletError(record, terminating=True)


def not_emulated(name: str) -> CmdletError:
    """A command that exists on Windows but that this simulator does not implement."""
    record = error_record(
        f"The ipsec-deploy lab does not emulate '{name}'. It runs the NetSecurity cmdlets, "
        "Test-NetConnection, Get-WinEvent, Get-CimInstance, Get-ScheduledTask and the scripts ipsec-deploy ships.",
        "LabCommandNotEmulated", "NotImplemented", name,
        exception_type="System.NotSupportedException", target_name=name,
    )
    return CmdletError(record, terminating=True)


def script_not_allowed(first_line: str) -> CmdletError:
    record = error_record(
        "The ipsec-deploy lab cannot run arbitrary PowerShell. It runs only structured commands "
        "(a cmdlet with parameters) and the exact scripts that ipsec-deploy ships, each with a "
        "registered Python counterpart. Unrecognised script starting with: "
        f"'{first_line}'. If you changed a script under ipsec_deploy/scripts, update its "
        "counterpart registration too.",
        "ScriptsNotAllowed", "PermissionDenied", "",
        exception_type="System.Management.Automation.PSSecurityException",
        target_name=first_line,
    )
    return CmdletError(record, terminating=True)


def object_not_found(command: str, cim_class: str, property_name: str, value: str) -> CmdletError:
    """Get/Set/Remove by a literal name that matched nothing (non-terminating)."""
    record = error_record(
        f"No {cim_class} objects found with property '{property_name}' equal to '{value}'.  "
        "Verify the value of the property and retry.",
        f"CmdletizationQuery_NotFound_{property_name}", "ObjectNotFound", command,
        exception_type=CIM_JOB_EXCEPTION, target_name=value,
    )
    return CmdletError(record)


def windows_system_error(command: str, code: int, message: str, category: str, target: str = "") -> CmdletError:
    """A CIM provider failure, reported with the Win32 error code as Windows does."""
    record = error_record(
        message, f"Windows System Error {code}", category, command, target_name=target,
    )
    return CmdletError(record)
