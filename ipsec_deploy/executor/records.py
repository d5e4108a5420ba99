"""Planned objects as JSON records, for journal snapshots and back again."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..inventory.model import AuthMethod, MainModeProposal, QuickModeProposal
from ..objects import (
    IPsecRule,
    MainModeCryptoSet,
    MainModeRule,
    Phase1AuthSet,
    Phase2AuthSet,
    PlannedObject,
    QuickModeCryptoSet,
)

OBJECT_CLASSES = {cls.kind: cls for cls in (Phase1AuthSet, Phase2AuthSet, MainModeCryptoSet, QuickModeCryptoSet, MainModeRule, IPsecRule)}
PROPOSAL_CLASSES = {
    Phase1AuthSet.kind: AuthMethod,
    Phase2AuthSet.kind: AuthMethod,
    MainModeCryptoSet.kind: MainModeProposal,
    QuickModeCryptoSet.kind: QuickModeProposal,
}


class RecordError(ValueError):
    """A journal record that does not describe a valid object."""


def object_to_record(obj: PlannedObject) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": obj.kind}
    for field in fields(obj):
        if field.name == "mirrors":
            continue
        value = getattr(obj, field.name)
        if field.name == "proposals":
            value = [{f.name: getattr(p, f.name) for f in fields(p)} for p in value]
        elif isinstance(value, tuple):
            value = list(value)
        record[field.name] = value
    return record


def object_from_record(record: dict[str, Any]) -> PlannedObject:
    try:
        cls = OBJECT_CLASSES[record["kind"]]
        values: dict[str, Any] = {}
        for field in fields(cls):
            if field.name not in record:
                continue
            value = record[field.name]
            if field.name == "proposals":
                proposal_class = PROPOSAL_CLASSES[cls.kind]
                value = tuple(proposal_class(**p) for p in value)
            elif isinstance(value, list):
                value = tuple(value)
            values[field.name] = value
        return cls(**values)
    except (KeyError, TypeError) as error:
        raise RecordError(f"invalid object record: {error}") from None
