"""Credentials come from the environment or a secrets file and never show up in text."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connectors.credentials import Credentials, MissingCredentialError, Secret


def test_environment_wins_over_the_secrets_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("# comment\nexport REDDIT_CLIENT_ID=from-file\nREDDIT_CLIENT_SECRET=\"quoted value\"\n\nnot a pair\n")
    creds = Credentials(path, environ={"REDDIT_CLIENT_ID": "from-env"})
    assert creds.require("REDDIT_CLIENT_ID", "reddit").reveal() == "from-env"
    assert creds.require("REDDIT_CLIENT_SECRET", "reddit").reveal() == "quoted value"
    assert creds.get("MISSING") is None


def test_missing_credential_says_where_it_looked(tmp_path: Path) -> None:
    path = tmp_path / "s.env"
    path.write_text("")
    with pytest.raises(MissingCredentialError, match=r"TWITTER_BEARER_TOKEN is not set in the environment or .*s\.env"):
        Credentials(path, environ={}).require("TWITTER_BEARER_TOKEN", "twitter")


def test_a_secret_never_prints(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret("s3cr3t-value")
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("config: %s %r %s", secret, secret, {"token": secret})
    assert "s3cr3t-value" not in caplog.text and "***" in caplog.text
    assert f"{secret}" == "Secret('***')"
