"""Count WinRM round trips and time for plan, apply and a second apply against the lab.

Run from the repository root:

    .venv/bin/python bench/round_trips.py [--hosts N]

It copies inventory/lab.yaml (or generates N hosts in one VLAN), starts the
lab on free loopback ports, runs the CLI in-process, and prints, per
command, the HTTP requests each host's listener received and the wall time.
The times depend on the machine. The request counts do not, and they
matter on a WAN, where each request costs a network round trip.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from ipsec_deploy.cli import app
from ipsec_deploy.inventory import load_inventory
from ipsec_deploy.lab.runner import start_lab

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_VARIABLE = "IPSEC_DEPLOY_BENCH_PASSWORD"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def generated_inventory(hosts: int) -> dict:
    """Build a VLAN of N hosts with one any-protocol Kerberos policy and a domain controller exemption."""
    document = yaml.safe_load((ROOT / "inventory" / "lab.yaml").read_text(encoding="utf-8"))
    document["hosts"] = {
        f"SRV{index:03d}": {
            "address": "127.0.0.1",
            "connection": {},
            "ip": [f"10.0.1.{index + 10}"],
            "domain": "corp.example",
        }
        for index in range(hosts)
    }
    document["groups"] = {}
    document["policies"] = [p for p in document["policies"] if p["name"] == "server-vlan"]
    document["exemptions"] = [e for e in document["exemptions"] if e["name"] == "domain-controllers"]
    document["lab"]["hosts"] = {}
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=0, help="generate this many hosts instead of using inventory/lab.yaml")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if arguments.hosts:
            document = generated_inventory(arguments.hosts)
        else:
            document = yaml.safe_load((ROOT / "inventory" / "lab.yaml").read_text(encoding="utf-8"))
        document["connection"]["password_env"] = PASSWORD_VARIABLE
        for host in document["hosts"].values():
            host.setdefault("connection", {})["port"] = free_port()
            host["connection"]["password_env"] = PASSWORD_VARIABLE
        source = folder / "bench.yaml"
        source.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

        inventory = load_inventory(source)
        os.environ[PASSWORD_VARIABLE] = document["lab"]["password"]
        with start_lab(inventory, state_dir=folder / "state") as lab:

            commands = [
                ("apply --dry-run", ["apply", str(source), "--dry-run"]),
                ("apply", ["apply", str(source), "--yes", "--verify-timeout", "0"]),
                ("apply (no changes)", ["apply", str(source), "--yes", "--verify-timeout", "0"]),
                ("verify", ["verify", str(source), "--verify-timeout", "0"]),
            ]
            print(f"{len(lab.listeners)} lab host(s); HTTP requests per host (min/max) and wall time per command")
            for label, command in commands:
                for listener in lab.listeners.values():
                    listener.round_trips.reset()
                started = time.perf_counter()
                journal = ["--journal-dir", str(folder / "journal")] if command[0] == "apply" else []
                result = CliRunner().invoke(app, command + journal)
                elapsed = time.perf_counter() - started
                counts = [listener.round_trips.total for listener in lab.listeners.values()]
                print(f"  {label:<20} exit {result.exit_code}  requests/host {min(counts)}-{max(counts)}  total {sum(counts):>5}  {elapsed:6.2f} s")


if __name__ == "__main__":
    main()
