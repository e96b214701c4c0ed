"""Every credential a connector reads is documented where a user looks: --help, .env.example, README.

The variable names are collected from the connectors' source (calls like ``credentials.require("X")``
and any ``TWITTER_*``/``REDDIT_*``/``MASTODON_*``/``BLUESKY_*`` string), so a new credential that is
read but not documented fails here.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
from pathlib import Path

import pytest

from connectors.platform_access import PLATFORM_ACCESS, credential_names
from connectors.twitter import TwitterConnector
from stream.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
CONNECTORS = ROOT / "connectors"
PLATFORM_VARIABLE = re.compile(r"^(TWITTER|X|REDDIT|MASTODON|BLUESKY|BSKY)_[A-Z0-9_]+$")
LOOKUPS = {"require", "get", "plain"}


def credential_variables_read_by_the_code() -> dict[str, set[str]]:
    """Variable name -> the connector files that read it."""
    found: dict[str, set[str]] = {}
    for path in sorted(CONNECTORS.glob("*.py")):
        if path.name == "platform_access.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = None
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOOKUPS
                    and isinstance(node.func.value, ast.Name) and "credential" in node.func.value.id.lower()
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                name = node.args[0].value
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and PLATFORM_VARIABLE.match(node.value):
                name = node.value
            if name:
                found.setdefault(name, set()).add(path.name)
    return found


def platform_help(platform: str) -> str:
    parser = build_parser()
    ingest = _choices(parser)["ingest"]
    return _choices(ingest)[platform].format_help()


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError(f"{parser.prog} has no subcommands")


def test_the_scan_finds_the_known_credentials() -> None:
    # Guards the scanner itself: if it found nothing, the completeness test below would pass vacuously.
    read = credential_variables_read_by_the_code()
    assert {"TWITTER_BEARER_TOKEN", "REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "MASTODON_INSTANCE"} <= set(read)


def test_every_credential_the_code_reads_is_documented_and_nothing_else() -> None:
    read = set(credential_variables_read_by_the_code())
    assert sorted(read - credential_names()) == [], "read by the connectors but not in platform_access.py"
    assert sorted(credential_names() - read) == [], "documented in platform_access.py but read by no connector"


def test_env_example_lists_every_credential_with_where_to_get_it() -> None:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for name in sorted(credential_names()):
        at = [i for i, line in enumerate(lines) if line.startswith(f"{name}=")]
        assert len(at) == 1, f"{name} must appear once as {name}= in .env.example"
        assert lines[at[0]] == f"{name}=", f"{name} must be empty in .env.example (a secret has no default)"
        comment = "\n".join(line for line in lines[max(0, at[0] - 12):at[0]] if line.startswith("#"))
        assert comment, f"{name} has no comment above it"
    section = "\n".join(lines)
    for access in PLATFORM_ACCESS.values():
        if access.variables:
            assert access.where.split(" ")[0] in section, f"{access.platform}: .env.example does not say where"


@pytest.mark.parametrize("platform", sorted(PLATFORM_ACCESS))
def test_each_connectors_help_names_its_credentials_tier_and_source(platform: str) -> None:
    text = platform_help(platform)
    access = PLATFORM_ACCESS[platform]
    assert "Access:" in text and "Get credentials:" in text
    for variable in access.variables:
        assert re.search(rf"^\s+{variable.name}\s+(required|optional): ", text, re.MULTILINE), (platform, variable.name)
    mine = {v.name for v in access.variables}
    others = credential_names() - mine
    assert not [n for n in others if n in text], f"{platform}'s help names another platform's variables"


def test_every_credential_appears_in_its_platforms_help() -> None:
    for name, files in credential_variables_read_by_the_code().items():
        platforms = [p for p, a in PLATFORM_ACCESS.items() if name in {v.name for v in a.variables}]
        assert len(platforms) == 1, (name, files)
        assert name in platform_help(platforms[0])


def test_readme_has_a_connecting_the_platforms_section_with_every_credential() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Connecting the platforms\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert match, "README has no '## Connecting the platforms' section"
    section = match.group(1)
    for name in credential_names():
        assert name in section, name
    assert "--mode stream" in section and "Pro" in section and "Basic" in section
    assert "languages" in section and "SENTISTREAM_TOPICS_FILE" in section


def test_twitter_defaults_to_recent_search() -> None:
    parser = build_parser()
    args = parser.parse_args(["ingest", "twitter", "--topics", "topics.yaml"])
    assert args.mode == "search"
    assert parser.parse_args(["ingest", "twitter", "--topics", "t.yaml", "--mode", "stream"]).mode == "stream"
    assert inspect.signature(TwitterConnector).parameters["mode"].default == "search"
    assert "Pro" in platform_help("twitter") and "Basic" in platform_help("twitter")
