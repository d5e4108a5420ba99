"""Shared fixtures: ``lab_factory`` starts lab hosts for an inventory on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.lab.runner import RunningLab, start_lab

LabFactory = Callable[..., tuple[RunningLab, Path]]


def write_with_ports(text: str, ports: dict[str, int], path: Path) -> Path:
    """Write the inventory with each host's connection port replaced; comments are not kept."""
    document = yaml.safe_load(text)
    for name, port in ports.items():
        host = document["hosts"][name]
        host["connection"] = {**(host.get("connection") or {}), "port": port}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    """Start a lab for an inventory (a Path is read as a file, a str is YAML text) on free ports.

    Returns the running lab and the path of the inventory rewritten with the
    ports in use, so a client reads its endpoints from there. Every lab
    started is stopped after the test.
    """
    started: list[RunningLab] = []

    def start(inventory: str | Path, state_dir: Path | None = None) -> tuple[RunningLab, Path]:
        text = inventory.read_text(encoding="utf-8") if isinstance(inventory, Path) else inventory
        number = len(started) + 1
        source = tmp_path / f"inventory-{number}.yaml"
        source.write_text(text, encoding="utf-8")
        loaded = load_inventory(source)

        lab = start_lab(loaded, state_dir or tmp_path / "lab-state", ports={name: 0 for name in loaded.hosts})
        started.append(lab)
        ports = {name: listener.port for name, listener in lab.listeners.items()}
        return lab, write_with_ports(text, ports, tmp_path / f"inventory-{number}-lab.yaml")

    yield start

    for lab in started:
        lab.stop()
