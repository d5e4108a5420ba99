"""PowerShell parameter binding against the documented cmdlet signatures.

Follows the rules of the PowerShell binder for compiled and CDXML cmdlets:
names and aliases match case-insensitively, an unambiguous prefix of a name
or alias is accepted, positional arguments fill the parameters with a
position, pipeline input binds by value first and then by property name, and
the parameter set is the one whose mandatory parameters are all present
(the default set when several are). Values are converted to the documented
type, and enum values accept member names (case-insensitive), defined numbers
and wildcards that resolve to one member; comma lists only for flags enums.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.spec import (
    COMMON_PARAMETERS,
    DOTNET_TYPE_NAMES,
    NOUN_CIM_CLASSES,
    CmdletSpec,
    EnumSpec,
    ParameterSpec,
    Spec,
)
from ipsec_deploy.lab.pipeline import PSObjectValue

ACTION_PREFERENCES = ("SilentlyContinue", "Stop", "Continue", "Inquire", "Ignore", "Suspend")

INTEGER_RANGES = {
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
}

CIM_INSTANCE_TYPE = "Microsoft.Management.Infrastructure.CimInstance"
WILDCARD_CHARACTERS = frozenset("*?[")


class _NoInput:
    """Marker for "this invocation has no pipeline input object"."""


NO_INPUT = _NoInput()


@dataclass
class BoundCommand:
    """A cmdlet call after binding: the chosen parameter set and converted values."""

    cmdlet: CmdletSpec
    parameter_set: str
    values: dict[str, Any] = field(default_factory=dict)
    common: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cmdlet.name

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    @property
    def error_action(self) -> str:
        return self.common.get("ErrorAction", "Continue")


def has_wildcards(text: str) -> bool:
    return any(ch in WILDCARD_CHARACTERS for ch in text)


def wildcard_match(pattern: str, text: str) -> bool:
    """Match as PowerShell's WildcardPattern does with IgnoreCase: ``*``, ``?`` and ``[...]``."""
    return fnmatch.fnmatchcase(text.lower(), pattern.lower())


def is_cim_instance(value: Any) -> bool:
    return isinstance(value, PSObjectValue) and any(
        t == CIM_INSTANCE_TYPE or t.startswith(CIM_INSTANCE_TYPE + "#") for t in value.type_names
    )


class Binder:
    """Binds argument lists to one cmdlet's signature."""

    def __init__(self, spec: Spec, cmdlet: CmdletSpec) -> None:
        self.spec = spec
        self.cmdlet = cmdlet
        self._names: dict[str, str] = {}
        for parameter in cmdlet.parameters.values():
            self._names[parameter.name.lower()] = parameter.name
            for alias in parameter.aliases:
                self._names[alias.lower()] = parameter.name
        if cmdlet.supports_common_parameters:
            for common, aliases in COMMON_PARAMETERS.items():
                self._names.setdefault(common.lower(), common)
                for alias in aliases:
                    self._names.setdefault(alias.lower(), common)

    # Name resolution

    def resolve_name(self, raw: str) -> str:
        """Return the canonical parameter name for a name, alias or unambiguous prefix."""
        name = raw.lstrip("-").rstrip(":")
        key = name.lower()
        if key in self._names:
            return self._names[key]

        matches = sorted({canonical for alias, canonical in self._names.items() if alias.startswith(key)})
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise errors.ambiguous_parameter(self.cmdlet.name, name, matches)
        raise errors.parameter_not_found(self.cmdlet.name, name)

    # Binding

    def bind(
        self,
        arguments: list[tuple[str | None, Any]],
        pipeline_input: Any = NO_INPUT,
        *,
        expect_input: bool = False,
    ) -> BoundCommand:
        """Bind named, positional and pipeline arguments and choose the parameter set.

        With ``expect_input`` and no input object, only the named arguments are
        checked: PowerShell defers the mandatory check of a downstream command
        until an input object arrives.
        """
        raw_values: dict[str, Any] = {}
        common: dict[str, Any] = {}
        positional: list[Any] = []

        for raw_name, value in arguments:
            if raw_name is None:
                positional.append(value)
                continue
            name = self.resolve_name(raw_name)
            if name in raw_values or name in common:
                raise errors.parameter_already_bound(self.cmdlet.name, name)
            if name in COMMON_PARAMETERS and name not in self.cmdlet.parameters:
                common[name] = self._convert_common(name, value)
            else:
                raw_values[name] = value

        candidate_sets = self._sets_for(raw_values)
        if not candidate_sets:
            raise errors.ambiguous_parameter_set(self.cmdlet.name)

        for value in positional:
            parameter = self._next_positional(raw_values, candidate_sets)
            if parameter is None:
                raise errors.positional_parameter_not_found(self.cmdlet.name, value)
            raw_values[parameter.name] = value
            candidate_sets = self._sets_for(raw_values)

        values = {name: self.convert(self.cmdlet.parameters[name], value) for name, value in raw_values.items()}

        if not isinstance(pipeline_input, _NoInput):
            candidate_sets = self._bind_pipeline(pipeline_input, values, candidate_sets)
        elif expect_input:
            return BoundCommand(self.cmdlet, "", values, common)

        parameter_set = self._choose_set(values, candidate_sets)
        return BoundCommand(self.cmdlet, parameter_set, values, common)

    def _all_sets(self) -> set[str]:
        return set(self.cmdlet.parameter_sets) or {"__AllParameterSets"}

    def _sets_for(self, bound: dict[str, Any]) -> set[str]:
        sets = self._all_sets()
        for name in bound:
            parameter = self.cmdlet.parameters[name]
            sets = {s for s in sets if parameter.in_set(s)}
        return sets

    def _next_positional(self, bound: dict[str, Any], sets: set[str]) -> ParameterSpec | None:
        candidates = [
            p for p in self.cmdlet.parameters.values()
            if p.position is not None and not p.is_switch and p.name not in bound
            and any(p.in_set(s) for s in sets)
        ]
        candidates.sort(key=lambda p: p.position)
        return candidates[0] if candidates else None

    def _bind_pipeline(self, item: Any, values: dict[str, Any], sets: set[str]) -> set[str]:
        # By value first, without conversion: a CIM instance binds to a
        # CimInstance parameter, anything else to a string parameter.
        for parameter in self.cmdlet.parameters.values():
            if not parameter.pipeline_by_value or parameter.name in values:
                continue
            usable = {s for s in sets if parameter.in_set(s)}
            if usable and self._accepts_by_value(parameter, item, self._expected_cim_class(parameter)):
                values[parameter.name] = self.convert(parameter, item)
                return usable

        if isinstance(item, (PSObjectValue, dict)):
            properties = item.properties if isinstance(item, PSObjectValue) else item
            lowered = {str(k).lower(): v for k, v in properties.items()}
            bound_sets = set(sets)
            bound_any = False
            for parameter in self.cmdlet.parameters.values():
                if not parameter.pipeline_by_property_name or parameter.name in values:
                    continue
                usable = {s for s in bound_sets if parameter.in_set(s)}
                if not usable:
                    continue
                for key in (parameter.name, *parameter.aliases):
                    if key.lower() in lowered:
                        values[parameter.name] = self.convert(parameter, lowered[key.lower()])
                        bound_sets = usable
                        bound_any = True
                        break
            if bound_any:
                return bound_sets

        raise errors.CmdletError(errors.input_not_bound(self.cmdlet.name))

    def _expected_cim_class(self, parameter: ParameterSpec) -> str | None:
        if parameter.name.startswith("Associated"):
            return NOUN_CIM_CLASSES.get(parameter.name.removeprefix("Associated"))
        noun = self.cmdlet.name.split("-", 1)[-1]
        return NOUN_CIM_CLASSES.get(noun)

    @staticmethod
    def _accepts_by_value(parameter: ParameterSpec, item: Any, cim_class: str | None) -> bool:
        if parameter.element_type == "CimInstance":
            if not is_cim_instance(item):
                return False
            return cim_class is None or any(
                t.endswith("/" + cim_class) or t.endswith("#" + cim_class) for t in item.type_names
            )
        if parameter.element_type == "String":
            return isinstance(item, str)
        return True

    def _choose_set(self, values: dict[str, Any], sets: set[str]) -> str:
        def missing(set_name: str) -> list[str]:
            return [
                p.name for p in self.cmdlet.parameters_in_set(set_name)
                if p.mandatory and p.name not in values
            ]

        satisfied = sorted(s for s in sets if not missing(s))
        default = self.cmdlet.default_parameter_set
        if len(satisfied) == 1:
            return satisfied[0]
        if satisfied:
            if default in satisfied:
                return default
            raise errors.ambiguous_parameter_set(self.cmdlet.name)

        if len(sets) == 1:
            raise errors.missing_mandatory(self.cmdlet.name, missing(next(iter(sets))))
        if default in sets:
            raise errors.missing_mandatory(self.cmdlet.name, missing(default))
        raise errors.ambiguous_parameter_set(self.cmdlet.name)

    # Conversion

    def _convert_common(self, name: str, value: Any) -> Any:
        if name not in ("ErrorAction", "WarningAction", "InformationAction"):
            return value
        text = str(value)
        for member in ACTION_PREFERENCES:
            if member.lower() == text.lower():
                return member
        raise errors.cannot_convert(
            self.cmdlet.name, name, text, "System.Management.Automation.ActionPreference",
            self._unmatched_enum_detail(text, list(ACTION_PREFERENCES)),
        )

    def convert(self, parameter: ParameterSpec, value: Any) -> Any:
        """Convert one argument to the parameter's documented type."""
        if parameter.is_switch:
            return True if value is None else bool(value)

        if parameter.is_array:
            items = value if isinstance(value, list) else [value]
            return [self._convert_scalar(parameter, item) for item in items]

        if isinstance(value, list):
            if len(value) == 1 and parameter.element_type != "String":
                return self._convert_scalar(parameter, value[0])
            # NOTE: compiled cmdlets reject an array for a scalar parameter
            # with this record; a CDXML function might join it with spaces.
            target = DOTNET_TYPE_NAMES.get(parameter.element_type, parameter.element_type)
            raise errors.cannot_convert_object(self.cmdlet.name, parameter.name, "System.Object[]", target)
        return self._convert_scalar(parameter, value)

    def _convert_scalar(self, parameter: ParameterSpec, value: Any) -> Any:
        type_name = parameter.element_type
        enum = self.spec.enums.get(type_name)
        if enum is not None:
            return self.convert_enum(parameter.name, enum, value)
        if type_name == "String" or type_name == "WildcardPattern":
            return self._convert_string(parameter, value)
        if type_name == "Boolean":
            return self._convert_boolean(parameter, value)
        if type_name in INTEGER_RANGES:
            return self._convert_integer(parameter, value, type_name)
        if type_name == "CimInstance":
            return self._convert_cim_instance(parameter, value)
        return value

    def _convert_string(self, parameter: ParameterSpec, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return "True" if value else "False"
        if isinstance(value, PSObjectValue):
            return value.to_string if value.to_string is not None else value.type_names[0]
        return str(value)

    def _convert_boolean(self, parameter: ParameterSpec, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        type_name = "System.String" if isinstance(value, str) else type(value).__name__
        raise errors.boolean_transformation(self.cmdlet.name, parameter.name, type_name)

    def _convert_integer(self, parameter: ParameterSpec, value: Any, type_name: str) -> int:
        dotnet = DOTNET_TYPE_NAMES[type_name]
        try:
            number = int(value) if not isinstance(value, str) else int(value.strip(), 0)
        except (TypeError, ValueError):
            raise errors.cannot_convert(
                self.cmdlet.name, parameter.name, value, dotnet, "Input string was not in a correct format."
            ) from None
        low, high = INTEGER_RANGES[type_name]
        if not low <= number <= high:
            raise errors.cannot_convert(
                self.cmdlet.name, parameter.name, value, dotnet,
                f"Value was either too large or too small for a {type_name}.",
            )
        return number

    def _convert_cim_instance(self, parameter: ParameterSpec, value: Any) -> PSObjectValue:
        if is_cim_instance(value):
            return value
        if isinstance(value, PSObjectValue):
            # A deserialized CIM instance sent by a remote client is a
            # property bag, which Windows cannot turn back into a CimInstance.
            shown = value.to_string if value.to_string is not None else value.type_names[0]
            raise errors.binding_error(
                f"Cannot bind parameter '{parameter.name}'. Cannot convert the \"{shown}\" value of "
                f"type \"{value.type_names[0]}\" to type \"{CIM_INSTANCE_TYPE}\".",
                "CannotConvertArgumentNoMessage", self.cmdlet.name, shown,
            )
        type_name = "System.String" if isinstance(value, str) else f"System.{type(value).__name__}"
        raise errors.binding_error(
            f"Cannot bind parameter '{parameter.name}'. Cannot convert the \"{value}\" value of type "
            f"\"{type_name}\" to type \"{CIM_INSTANCE_TYPE}\".",
            "CannotConvertArgumentNoMessage", self.cmdlet.name, str(value),
        )

    @staticmethod
    def _unmatched_enum_detail(text: str, members: list[str]) -> str:
        # Windows PowerShell 5.1 puts a line break before the member list
        # (PowerShell 7 uses a space).
        return (
            f"Unable to match the identifier name {text} to a valid enumerator name. "
            "Specify one of the following enumerator names and try again:\r\n" + ", ".join(members)
        )

    def convert_enum(self, parameter_name: str, enum: EnumSpec, value: Any) -> str:
        """Return the member name (flags: names joined by ", ") for a name, number or wildcard."""
        members = list(enum.values)

        def fail(detail: str) -> errors.CmdletError:
            # NOTE: some CDXML modules on Windows PowerShell 5.1 report enum
            # failures as "Cannot process argument transformation on parameter"
            # (ParameterArgumentTransformationError); not checked for NetSecurity.
            return errors.cannot_convert(self.cmdlet.name, parameter_name, value, enum.dotnet_name, detail)

        if isinstance(value, bool) or value is None:
            raise fail(self._unmatched_enum_detail(str(value), members))
        if isinstance(value, int):
            return self._enum_from_number(enum, value, fail)

        text = str(value).strip()
        parts = [p.strip() for p in text.split(",")] if enum.is_flags else [text]
        names: list[str] = []
        for part in parts:
            if part.lstrip("-").isdigit():
                names.append(self._enum_from_number(enum, int(part), fail))
                continue
            exact = [m for m in members if m.lower() == part.lower()]
            if exact:
                names.append(exact[0])
                continue
            if has_wildcards(part):
                matched = [m for m in members if wildcard_match(part, m)]
                if len(matched) == 1:
                    names.append(matched[0])
                    continue
                if len(matched) > 1:
                    raise fail(
                        f"The identifier name {part} cannot be processed due to the inability to "
                        f"differentiate between the following enumerator names: {', '.join(matched)}. "
                        "Try a more specific identifier name."
                    )
            raise fail(self._unmatched_enum_detail(text if not enum.is_flags else part, members))
        return ", ".join(dict.fromkeys(names))

    @staticmethod
    def _enum_from_number(enum: EnumSpec, number: int, fail: Any) -> str:
        name = enum.name_of(number)
        if name is not None:
            return name
        if enum.is_flags and number > 0:
            bits = [m for m, v in enum.values.items() if v and v & number == v and v != 65535]
            if sum(enum.values[m] for m in bits) == number:
                return ", ".join(bits)
        raise fail(f"Unable to match the identifier name {number} to a valid enumerator name.")
