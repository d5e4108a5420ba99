"""The plan as stable, machine-readable JSON; docs/plan-json.md describes its shape."""

from __future__ import annotations

import json
from typing import Any

from ..cmdlets import CmdletCall, ParameterValue, SecretFromEnvironment
from ..inventory.problems import Problem
from ..objects import IPsecRule, PlannedObject
from ..planner.model import Plan

FORMAT_VERSION = 1


def parameter_to_json(value: ParameterValue) -> Any:
    if isinstance(value, SecretFromEnvironment):
        # The secret itself never enters a plan.
        return {"secret_from_environment": value.variable}
    if isinstance(value, tuple):
        return [call_to_json(v) if isinstance(v, CmdletCall) else v for v in value]
    return value


def call_to_json(call: CmdletCall) -> dict[str, Any]:
    return {
        "cmdlet": call.name,
        "parameters": [{"name": name, "value": parameter_to_json(value)} for name, value in call.parameters],
    }


def object_to_json(obj: PlannedObject, policy_store: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": obj.kind,
        "name": obj.name,
        "display_name": obj.display_name,
        "new": call_to_json(obj.new_call(policy_store)),
    }
    if isinstance(obj, IPsecRule):
        data["policy"] = obj.policy
        data["mirrors"] = [{"host": m.host, "rule": m.rule} for m in obj.mirrors]
    return data


def problem_to_json(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.location.file,
        "line": problem.location.line,
        "severity": problem.severity,
        "message": problem.message,
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "inventory": plan.inventory_path,
        "managed_group": plan.managed_group,
        "policy_store": plan.policy_store,
        "hosts": [
            {
                "name": host_plan.host.name,
                "management": {
                    "address": host_plan.host.address,
                    "transport": host_plan.host.connection.transport,
                    "port": host_plan.host.connection.effective_port,
                },
                "ip_addresses": [str(a) for a in host_plan.host.ip_addresses],
                "forest": host_plan.host.forest,
                "objects": [object_to_json(obj, plan.policy_store) for obj in host_plan.objects],
            }
            for host_plan in plan.hosts
        ],
        "pairs": [
            {
                "policy": pair.policy,
                "a": {"host": pair.host_a, "rule": pair.rule_a},
                "b": {"host": pair.host_b, "rule": pair.rule_b},
            }
            for pair in plan.pairs
        ],
        "warnings": [problem_to_json(p) for p in plan.warnings],
    }


def render_json(plan: Plan) -> str:
    return json.dumps(plan_to_json(plan), indent=2, sort_keys=False) + "\n"
