"""Platform credentials: from the environment or a secrets file, never from flags, never in logs.

Why not command-line flags: they show up in ``ps`` and shell history.  A :class:`Secret` prints as
``Secret('***')`` so an accidental ``log.info("%s", config)`` or a traceback cannot leak it.

Secrets file format: ``KEY=VALUE`` lines (``#`` comments, optional quotes), as in a Docker/Kubernetes
env file.  The environment wins over the file, so a deployment can override one value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class MissingCredentialError(RuntimeError):
    """A credential the connector needs is in neither the environment nor the secrets file."""


class Secret:
    """A string that does not reveal itself in repr/str/logs; call ``reveal()`` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secrets_file(path: str | Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


class Credentials:
    """Looks names up in the environment first, then in the optional secrets file."""

    def __init__(self, secrets_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ
        self._file = read_secrets_file(secrets_file) if secrets_file else {}
        self._source = str(secrets_file) if secrets_file else None

    def get(self, name: str) -> Secret | None:
        value = self._env.get(name) or self._file.get(name)
        return Secret(value) if value else None

    def require(self, name: str, purpose: str) -> Secret:
        secret = self.get(name)
        if secret is None:
            where = f"the environment or {self._source}" if self._source else "the environment (or --secrets-file)"
            raise MissingCredentialError(f"{name} is not set in {where}; it is needed for {purpose}")
        return secret

    def plain(self, name: str, default: str | None = None) -> str | None:
        """A non-secret setting that may live beside the secrets (e.g. a user name or an instance URL)."""
        return self._env.get(name) or self._file.get(name) or default
