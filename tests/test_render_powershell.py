"""Tests for the PowerShell renderer: syntax, cmdlet spec, round trip and quoting.

Each rendered script is parsed with the tree-sitter PowerShell grammar and
read back into ``CmdletCall`` objects, which must equal the calls the planner
builds. Every cmdlet, parameter and enum value in a script must exist in the
NetSecurity spec at ipsec_deploy/data/netsecurity-spec.json.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tree_sitter_language_pack import get_parser

from ipsec_deploy.cli import app
from ipsec_deploy.cmdlets import CmdletCall, SecretFromEnvironment
from ipsec_deploy.inventory import load_inventory, parse_inventory
from ipsec_deploy.planner import build_plan
from ipsec_deploy.render.powershell import quote, render_host_script

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_INVENTORY = ROOT / "inventory" / "example.yaml"
SPEC_PATH = ROOT / "ipsec_deploy" / "data" / "netsecurity-spec.json"

# PowerShell's tokenizer treats all of these as single quotes: any of them
# ends a single-quoted string unless the next character is one of them too.
POWERSHELL_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

PRE_SHARED_KEY = """\
allow_pre_shared_keys: true
hosts:
  LAB-A:
    ip: [192.0.2.10]
  LAB-B:
    ip: [192.0.2.20]
auth:
  lab-psk:
    phase1:
      - {method: pre_shared_key, key_env: IPSEC_LAB_PSK}
crypto:
  lab:
    main_mode: [{encryption: AES128, hash: SHA256, key_exchange: DH19}]
    quick_mode: [{encapsulation: ESP, encryption: AESGCM128, integrity: AESGMAC128}]
    pfs_group: SameAsMainMode
policies:
  - name: lab
    endpoint1: [LAB-A]
    endpoint2: [LAB-B]
    auth: lab-psk
    crypto: lab
"""

# Free-text values (policy store, authorities, user name) contain ASCII and
# Unicode single quotes and PowerShell syntax. The inventory also covers
# phase 2 authentication, AH and AES-GCM proposals, port ranges and a main
# mode lifetime.
CERTIFICATES_AND_PHASE2 = """\
policy_store: "corp.example\\\\IPsec O'Brien \u2018servers\u2019"
connection:
  username: "CORP\\\\O'Brien \u2018svc\u2019"
forests:
  corp.example: {}
  partner.example: {}
hosts:
  WEB-01:
    ip: [10.0.2.10]
    domain: corp.example
  PARTNER-01:
    ip: [172.16.9.10]
    domain: partner.example
auth:
  ca:
    phase1:
      - method: certificate
        authority: "CN=O'Brien \u2018CA\u2019, O=Corp $(Get-Date) `; \\"x\\""
        authority_type: root
    phase2:
      - {method: kerberos, identity: user}
      - {method: ntlm, identity: user}
      - method: certificate
        identity: user
        authority: "CN=Users \u201aCA\u201b"
        authority_type: intermediate
crypto:
  mixed:
    main_mode:
      - {encryption: AES256, hash: SHA384, key_exchange: DH20}
      - {encryption: AES128, hash: SHA256, key_exchange: DH14}
    quick_mode:
      - {encapsulation: AH, integrity: SHA256}
      - {encapsulation: ESP, encryption: AES256, integrity: SHA256}
      - {encapsulation: ESP, encryption: AESGCM256, integrity: AESGMAC256}
    pfs_group: DH24
    main_mode_lifetime_minutes: 480
policies:
  - name: web-partner
    endpoint1: [WEB-01]
    endpoint2: [PARTNER-01]
    protocol: TCP
    endpoint1_ports: ["49152-65535"]
    endpoint2_ports: [443, "8000-8080"]
    inbound_security: require
    outbound_security: request
    auth: ca
    crypto: mixed
    key_module: AuthIP
"""

IPV6 = """\
hosts:
  V6-A:
    ip: ["fd00:20::a", 10.0.3.10]
  V6-B:
    ip: ["fd00:20::b"]
networks:
  v6-lan: ["fd00:20::/64"]
auth:
  kerberos:
    phase1: [kerberos]
crypto:
  strong:
    main_mode: [{encryption: AES256, hash: SHA256, key_exchange: DH14}]
    quick_mode: [{encapsulation: ESP, encryption: AES256, integrity: SHA256}]
exemptions:
  - name: icmpv6
    endpoint1: [v6-lan]
    endpoint2: any
    protocol: ICMPv6
  - name: proto-47
    endpoint1: [V6-A]
    endpoint2: [V6-B]
    protocol: 47
policies:
  - name: v6
    endpoint1: [v6-lan]
    endpoint2: [v6-lan]
    protocol: UDP
    endpoint1_ports: [500]
    endpoint2_ports: [500]
    auth: kerberos
    crypto: strong
"""

INLINE_INVENTORIES = {
    "pre-shared-key": PRE_SHARED_KEY,
    "certificates-and-phase2": CERTIFICATES_AND_PHASE2,
    "ipv6": IPV6,
}
INVENTORY_NAMES = ["example", *INLINE_INVENTORIES]


class ScriptError(AssertionError):
    """The script has a construct that the renderer never writes."""


@cache
def parser():
    return get_parser("powershell")


@cache
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


@cache
def plan_of(name: str):
    if name == "example":
        return build_plan(load_inventory(EXAMPLE_INVENTORY))
    return build_plan(parse_inventory(INLINE_INVENTORIES[name], f"{name}.yaml"))


def scripts_of(name: str) -> list[tuple[str, str, list[CmdletCall]]]:
    """Return (host name, script, expected calls) for every host of a plan."""
    plan = plan_of(name)
    return [
        (
            host_plan.host.name,
            render_host_script(plan, host_plan),
            [obj.new_call(plan.policy_store) for obj in host_plan.objects],
        )
        for host_plan in plan.hosts
    ]


# -- reading the tree-sitter tree back into CmdletCall objects ------------


def parse(source: str):
    return parser().parse(source.encode("utf-8")).root_node


def text_of(node) -> str:
    return node.text.decode("utf-8")


def syntax_problems(node) -> list[str]:
    """Return a description of every ERROR and MISSING node under a node."""
    problems = []
    if node.type == "ERROR" or node.is_error:
        problems.append(f"ERROR at {node.start_point}: {text_of(node)[:80]!r}")
    if node.is_missing:
        problems.append(f"MISSING {node.type} at {node.start_point}")
    for child in node.children:
        problems.extend(syntax_problems(child))
    return problems


def descendants(node, node_type: str):
    if node.type == node_type:
        yield node
    for child in node.children:
        yield from descendants(child, node_type)


VALUE_NODE_TYPES = ("string_literal", "integer_literal", "variable", "command", "array_expression", "hash_literal_expression", "parenthesized_expression")


def unwrap(node):
    """Skip the grammar's single-child expression wrappers (pipeline, logical_expression, ...)."""
    while node.type not in VALUE_NODE_TYPES and len(node.children) == 1 and len(node.named_children) == 1:
        node = node.named_children[0]
    return node


def unquote(literal: str) -> str:
    """Return the value of a single-quoted PowerShell string literal, as PowerShell reads it."""
    if len(literal) < 2 or literal[0] not in POWERSHELL_SINGLE_QUOTES or literal[-1] not in POWERSHELL_SINGLE_QUOTES:
        raise ScriptError(f"not a single-quoted string: {literal!r}")
    body = literal[1:-1]
    value = []
    index = 0
    while index < len(body):
        char = body[index]
        if char in POWERSHELL_SINGLE_QUOTES:
            # A lone quote ends the string here in PowerShell. Tree-sitter
            # treats only ' as a quote, so it may read on.
            if index + 1 >= len(body) or body[index + 1] not in POWERSHELL_SINGLE_QUOTES:
                raise ScriptError(f"undoubled quote {char!r} at {index + 1} in {literal!r}")
            value.append(body[index + 1])
            index += 2
            continue
        value.append(char)
        index += 1
    return "".join(value)


def value_of(node, variables: dict[str, object]):
    node = unwrap(node)
    if node.type == "string_literal":
        child = node.named_children[0]
        if child.type != "verbatim_string_characters":
            raise ScriptError(f"expected a single-quoted string, got {text_of(node)!r}")
        return unquote(text_of(child))
    if node.type == "integer_literal":
        return int(text_of(node))
    if node.type == "variable":
        return variable_value(text_of(node), variables)
    if node.type == "array_expression":
        return array_value(node, variables)
    if node.type == "parenthesized_expression":
        return value_of(node.named_children[0], variables)
    if node.type == "command":
        return command_call(node, variables)
    if node.type == "hash_literal_expression":
        return hashtable_value(node, variables)
    raise ScriptError(f"unexpected {node.type}: {text_of(node)!r}")


def variable_value(name: str, variables: dict[str, object]):
    if name.lower() == "$true":
        return True
    if name.lower() == "$false":
        return False
    if name.lower().startswith("$env:"):
        return SecretFromEnvironment(name[len("$env:") :])
    if name in variables:
        return variables[name]
    raise ScriptError(f"variable {name} is used before it is assigned")


def array_value(node, variables: dict[str, object]) -> tuple:
    """Read @( ... ): one element per statement, or per item of a comma list."""
    items: list[object] = []
    statements = [child for child in node.named_children if child.type == "statement_list"]
    for statement_list in statements:
        for statement in statement_list.named_children:
            if statement.type == "comment":
                continue
            inner = unwrap(statement)
            if inner.type == "array_literal_expression":
                items.extend(value_of(element, variables) for element in inner.named_children)
            else:
                items.append(value_of(inner, variables))
    return tuple(items)


def hashtable_value(node, variables: dict[str, object]) -> dict[str, object]:
    entries: dict[str, object] = {}
    bodies = [child for child in node.named_children if child.type == "hash_literal_body"]
    for entry in (entry for body in bodies for entry in body.named_children if entry.type == "hash_entry"):
        key = text_of(entry.child_by_field_name("key") or entry.named_children[0])
        if key.lower() in (k.lower() for k in entries):
            raise ScriptError(f"duplicate hashtable key {key}")
        entries[key] = value_of(entry.named_children[-1], variables)
    return entries


def command_call(node, variables: dict[str, object]) -> CmdletCall:
    """Read a command: -Name value pairs, bare switches and @splatted hashtables."""
    name = text_of(node.child_by_field_name("command_name") or node.named_children[0])
    cmdlet = spec()["cmdlets"].get(name, {"parameters": {}})
    elements_node = next((c for c in node.named_children if c.type == "command_elements"), None)
    elements = [c for c in (elements_node.named_children if elements_node else []) if c.type != "command_argument_sep"]

    parameters: list[tuple[str, object]] = []
    index = 0
    while index < len(elements):
        element = elements[index]
        if element.type == "command_parameter":
            parameter = text_of(element)[1:]
            is_switch = cmdlet["parameters"].get(parameter, {}).get("is_switch", False)
            following = elements[index + 1] if index + 1 < len(elements) else None
            if is_switch or following is None or following.type == "command_parameter":
                parameters.append((parameter, True))
                index += 1
            else:
                parameters.append((parameter, value_of(following, variables)))
                index += 2
            continue
        inner = unwrap(element)
        if inner.type == "variable" and text_of(inner).startswith("@"):
            splatted = variables.get("$" + text_of(inner)[1:])
            if not isinstance(splatted, dict):
                raise ScriptError(f"{text_of(inner)} splats no hashtable")
            parameters.extend(splatted.items())
            index += 1
            continue
        raise ScriptError(f"positional argument {text_of(element)!r} to {name}")

    seen = [parameter.lower() for parameter, _ in parameters]
    if len(seen) != len(set(seen)):
        raise ScriptError(f"{name} binds a parameter twice: {seen}")
    return CmdletCall(name, tuple(parameters))


def script_calls(script: str) -> list[CmdletCall]:
    """Read a rendered script back into the cmdlet calls it runs, in order."""
    variables: dict[str, object] = {}
    calls = []
    root = parse(script)
    statement_lists = [child for child in root.named_children if child.type == "statement_list"]
    if len(statement_lists) != 1:
        raise ScriptError(f"expected one statement list, found {len(statement_lists)}")
    for statement in statement_lists[0].named_children:
        if statement.type == "comment":
            continue
        if statement.type == "foreach_statement" and "GetEnvironmentVariable" in text_of(statement):
            # The check that the pre-shared key variables are set; it runs no cmdlet.
            continue
        assignment = unwrap(statement)
        if assignment.type == "assignment_expression":
            target = text_of(unwrap(assignment.named_children[0]))
            variables[target] = value_of(assignment.named_children[-1], variables)
            continue
        if assignment.type == "pipeline_chain":
            assignment = unwrap(assignment.named_children[0])
        if assignment.type != "command":
            raise ScriptError(f"unexpected statement {text_of(statement)!r}")
        calls.append(command_call(assignment, variables))
    return calls


def normalized(value):
    """Make parameter order irrelevant, as it is to PowerShell, but keep proposal order."""
    if isinstance(value, CmdletCall):
        return (value.name, {name: normalized(v) for name, v in value.parameters})
    if isinstance(value, tuple):
        return tuple(normalized(v) for v in value)
    return value


def flattened(calls):
    """Yield every call, including the proposals nested in parameters."""
    for call in calls:
        yield call
        for _, value in call.parameters:
            if isinstance(value, tuple):
                yield from flattened(v for v in value if isinstance(v, CmdletCall))


def spec_problems(call: CmdletCall) -> list[str]:
    """Return every cmdlet, parameter, type or enum value of a call that the spec lacks."""
    cmdlets = spec()["cmdlets"]
    enums = spec()["enums"]
    if call.name not in cmdlets:
        return [f"unknown cmdlet {call.name}"]
    problems = []
    for name, value in call.parameters:
        parameter = cmdlets[call.name]["parameters"].get(name)
        if parameter is None:
            problems.append(f"{call.name} has no parameter -{name}")
            continue
        if parameter["is_switch"]:
            if value is not True:
                problems.append(f"{call.name} -{name} is a switch but gets {value!r}")
            continue
        if isinstance(value, bool):
            problems.append(f"{call.name} -{name} is not a switch but gets {value!r}")
            continue
        if parameter["is_array"] != isinstance(value, tuple):
            problems.append(f"{call.name} -{name} of type {parameter['type']} gets {value!r}")
            continue
        if parameter["type"] in ("Int32", "UInt32", "UInt64") and not isinstance(value, int):
            problems.append(f"{call.name} -{name} of type {parameter['type']} gets {value!r}")
            continue
        accepted = parameter["accepted_values"] or enums.get(parameter["type"].removesuffix("[]"), {}).get("members")
        if accepted:
            for item in value if isinstance(value, tuple) else (value,):
                if item not in accepted:
                    problems.append(f"{call.name} -{name} {item!r} is not one of {accepted}")
    return problems


# -- syntax ----------------------------------------------------------------


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_script_syntax_valid(name):
    for host, script, _ in scripts_of(name):
        assert syntax_problems(parse(script)) == [], host


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_script_no_backtick_continuation(name):
    for host, script, _ in scripts_of(name):
        continued = [line for line in script.splitlines() if line.rstrip().endswith("`")]
        assert continued == [], host


def test_syntax_check_catches_broken_script():
    assert syntax_problems(parse("$p = @{\n    Name = 'a'\nNew-NetIPsecRule @p\n")) != []


# -- cmdlets, parameters and enum values against the spec ------------------


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_script_calls_match_spec(name):
    for host, script, _ in scripts_of(name):
        calls = list(flattened(script_calls(script)))
        assert calls, host
        problems = [problem for call in calls for problem in spec_problems(call)]
        assert problems == [], host


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_script_commands_all_in_spec(name):
    # Every command node in the tree, not only those reached from a statement.
    for host, script, _ in scripts_of(name):
        names = {text_of(node.child_by_field_name("command_name") or node.named_children[0]) for node in descendants(parse(script), "command")}
        assert names, host
        assert names <= set(spec()["cmdlets"]), host


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_script_pfs_only_on_quick_mode_set(name):
    for host, script, _ in scripts_of(name):
        assert "RequireInRequireOut" not in script, host
        for call in flattened(script_calls(script)):
            pfs = [p for p, _ in call.parameters if p.lower() in ("perfectforwardsecrecygroup", "pfsgroup")]
            if call.name == "New-NetIPsecQuickModeCryptoSet":
                assert pfs == ["PerfectForwardSecrecyGroup"], host
            else:
                assert pfs == [], (host, call.name)


@pytest.mark.parametrize(
    "call, problem",
    [
        (CmdletCall("New-NetIPsecRuleX"), "unknown cmdlet"),
        # Name is an alias of IPsecRuleName: only exact names pass.
        (CmdletCall("New-NetIPsecRule", (("Name", "r"),)), "no parameter -Name"),
        (CmdletCall("New-NetIPsecRule", (("IPsecRule", "r"),)), "no parameter -IPsecRule"),
        (CmdletCall("New-NetIPsecRule", (("InboundSecurity", "RequireInRequireOut"),)), "is not one of"),
        (CmdletCall("New-NetIPsecRule", (("Mode", "transport"),)), "is not one of"),
        (CmdletCall("New-NetIPsecRule", (("LocalAddress", "10.0.0.1"),)), "of type String[]"),
        (CmdletCall("New-NetIPsecQuickModeCryptoProposal", (("PerfectForwardSecrecyGroup", "DH14"),)), "no parameter"),
        (CmdletCall("New-NetIPsecAuthProposal", (("Machine", False),)), "is a switch"),
        (CmdletCall("New-NetIPsecMainModeCryptoSet", (("MaxMinutes", "480"),)), "of type UInt32"),
    ],
)
def test_spec_check_rejects(call, problem):
    problems = spec_problems(call)
    assert len(problems) == 1
    assert problem in problems[0]


def test_spec_check_accepts_valid_call():
    call = CmdletCall("New-NetIPsecRule", (("IPsecRuleName", "r"), ("Mode", "Transport"), ("LocalAddress", ("10.0.0.1",))))
    assert spec_problems(call) == []


# -- round trip --------------------------------------------------------------


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_script_round_trip(name):
    for host, script, expected in scripts_of(name):
        calls = script_calls(script)
        assert [normalized(c) for c in calls] == [normalized(c) for c in expected], host


def test_round_trip_keeps_proposal_order():
    _, script, expected = next(s for s in scripts_of("certificates-and-phase2") if s[0] == "WEB-01")
    calls = {call.name: call for call in script_calls(script)}
    proposals = calls["New-NetIPsecQuickModeCryptoSet"].parameter("Proposal")
    assert [p.parameter("Encapsulation") for p in proposals] == ["AH", "ESP", "ESP"]
    assert [p.parameter("Encryption") for p in proposals] == [None, "AES256", "AESGCM256"]


def test_round_trip_free_text_values():
    _, script, _ = scripts_of("certificates-and-phase2")[0]
    calls = {call.name: call for call in script_calls(script)}
    phase1 = calls["New-NetIPsecPhase1AuthSet"]
    assert phase1.parameter("PolicyStore") == "corp.example\\IPsec O'Brien \u2018servers\u2019"
    authority = phase1.parameter("Proposal")[0].parameter("Authority")
    assert authority == "CN=O'Brien \u2018CA\u2019, O=Corp $(Get-Date) `; \"x\""


def test_round_trip_secret_from_environment():
    _, script, _ = scripts_of("pre-shared-key")[0]
    calls = {call.name: call for call in script_calls(script)}
    proposal = calls["New-NetIPsecPhase1AuthSet"].parameter("Proposal")[0]
    assert proposal.parameter("PreSharedKey") == SecretFromEnvironment("IPSEC_LAB_PSK")
    assert "$env:IPSEC_LAB_PSK" in script
    # The script stops before any New- call when the variable is not set.
    guard = script.index("foreach ($name in @('IPSEC_LAB_PSK'))")
    assert guard < script.index("New-NetIPsecPhase1AuthSet")
    assert "throw \"Set the environment variable $name to the pre-shared key before running this script.\"" in script


def test_round_trip_counts_every_object():
    for name in INVENTORY_NAMES:
        plan = plan_of(name)
        for host_plan, (host, script, _) in zip(plan.hosts, scripts_of(name)):
            assert len(script_calls(script)) == len(host_plan.objects), host


# -- quoting -----------------------------------------------------------------

# What the loader accepts in a string: no control characters below U+0020 and
# no surrogates, which YAML cannot carry.
LOADER_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)),
        st.sampled_from(list(POWERSHELL_SINGLE_QUOTES) + ['"', "`", "$", "(", ")", ";", "#", "@", "{", "}", "\u201c", "\u201d"]),
    ),
    min_size=1,
)
SAMPLES = ["O'Brien \u2018CA\u2019", "'", "\u2019';Remove-Item C:\\ -Recurse;'", "$(Get-Date)", "x`", "a;b", "\u201a\u201b", "''"]


def string_literal_value(source: str) -> str:
    """Parse `$value = <source>` and return the value of its single string literal."""
    root = parse(f"$value = {source}\n")
    assert syntax_problems(root) == []
    statements = root.named_children[0].named_children
    assert len(statements) == 1
    assignment = unwrap(statements[0])
    assert assignment.type == "assignment_expression"
    literal = unwrap(assignment.named_children[-1])
    assert literal.type == "string_literal"
    return value_of(literal, {})


@pytest.mark.parametrize("text", SAMPLES)
def test_quote_samples(text):
    assert string_literal_value(quote(text)) == text


@settings(max_examples=300, deadline=None)
@given(LOADER_TEXT)
def test_quote_any_text(text):
    assert string_literal_value(quote(text)) == text


def test_unquote_rejects_lone_unicode_quote():
    # A renderer that doubled only ' would pass tree-sitter but not PowerShell.
    with pytest.raises(ScriptError):
        unquote("'O''Brien \u2018CA\u2019'")


def yaml_scalar(text: str) -> str:
    """Return a double-quoted YAML scalar for any text, escaping non-ASCII characters."""
    dumped = yaml.safe_dump([text], default_flow_style=True, default_style='"', allow_unicode=False, width=10**9)
    return dumped.strip()[1:-1]


def inventory_with_authority(authority: str) -> str:
    return re.sub(r'(?m)^(        authority: )".*CA\u2019, O=Corp.*"$', lambda m: m.group(1) + yaml_scalar(authority), CERTIFICATES_AND_PHASE2)


@settings(max_examples=60, deadline=None)
@given(LOADER_TEXT)
def test_authority_round_trip(authority):
    plan = build_plan(parse_inventory(inventory_with_authority(authority), "inv.yaml"))
    host_plan = plan.hosts[0]
    script = render_host_script(plan, host_plan)

    assert syntax_problems(parse(script)) == []
    calls = script_calls(script)
    phase1 = next(call for call in calls if call.name == "New-NetIPsecPhase1AuthSet")
    assert phase1.parameter("Proposal")[0].parameter("Authority") == authority
    expected = [obj.new_call(plan.policy_store) for obj in host_plan.objects]
    assert [normalized(c) for c in calls] == [normalized(c) for c in expected]


def test_authority_substitution_applies():
    assert inventory_with_authority("X") != CERTIFICATES_AND_PHASE2


# -- script files ------------------------------------------------------------


def test_script_file_starts_with_bom(tmp_path):
    # Windows PowerShell 5.1, the shell of Server 2019, reads a .ps1 file
    # without a byte order mark in the ANSI code page. In Windows-1252 the
    # UTF-8 bytes of U+0451 decode to U+00D1 U+2018, and U+2018 ends a
    # single-quoted string, so the files must start with the UTF-8 BOM.
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["plan", str(EXAMPLE_INVENTORY), "--format", "powershell", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.glob("*.ps1"))
    assert len(files) == len(plan_of("example").hosts)
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b"\xef\xbb\xbf"), path.name
        assert data[3:].decode("utf-8") == render_host_script(plan_of("example"), plan_of("example").host(path.stem))
