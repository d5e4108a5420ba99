"""The inventory: the YAML file an admin writes, and its typed, validated model."""

from .loader import load_inventory, parse_inventory
from .model import Inventory
from .problems import InventoryError, Problem

__all__ = ["Inventory", "InventoryError", "Problem", "load_inventory", "parse_inventory"]
