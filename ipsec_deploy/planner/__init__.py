"""The planner: a pure function from inventory to the objects each host must hold."""

from .build import build_plan
from .model import HostPlan, MirrorPair, Plan

__all__ = ["HostPlan", "MirrorPair", "Plan", "build_plan"]
