"""The planner: a pure function from inventory to the objects each host must hold."""

from .build import build_plan
from .management import ManagementConflict, management_path_problems
from .model import HostPlan, MirrorPair, Plan

__all__ = ["HostPlan", "ManagementConflict", "MirrorPair", "Plan", "build_plan", "management_path_problems"]
