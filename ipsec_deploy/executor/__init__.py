"""The executor: read hosts, compute changes, apply them, and journal every run."""
