"""What each platform needs before a connector can read it: credential variables, where to get them, the tier.

Kept in one place so ``sentistream ingest <platform> --help``, ``.env.example`` and the README say the
same thing, and so a test can check that every variable the connectors read (connectors/cli.py,
connectors/reddit.py: ``credentials.require/get/plain("NAME")``) is documented here and in those files.
A newcomer's first live run then fails with "set X (get it at Y)" rather than a bare 401.

Values come from the environment or from ``--secrets-file FILE`` (``KEY=VALUE`` lines; the environment
wins), never from flags: flags show up in ``ps`` and shell history (connectors/credentials.py).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

HELP_WIDTH = 100


@dataclass(frozen=True)
class CredentialVariable:
    name: str
    required: bool
    what: str  # what it is and where to find it


@dataclass(frozen=True)
class PlatformAccess:
    platform: str
    tier: str  # which access level of the platform's API the connector needs
    where: str  # where an operator gets the credentials
    variables: tuple[CredentialVariable, ...] = ()

    def help_epilog(self) -> str:
        """The ``--help`` epilog: variables, where to get them, the tier, and how to pass them."""
        def wrap(text: str, indent: str = "  ") -> str:
            return textwrap.fill(text, HELP_WIDTH, subsequent_indent=indent)

        lines = [wrap(f"Access: {self.tier}"), wrap(f"Get credentials: {self.where}")]
        if self.variables:
            lines.append("Credentials (environment, or KEY=VALUE lines in --secrets-file; the environment wins):")
            for v in self.variables:
                need = "required" if v.required else "optional"
                lines.append(wrap(f"  {v.name:<24} {need}: {v.what}", " " * 27))
        else:
            lines.append("Credentials: none.")
        return "\n".join(lines)


PLATFORM_ACCESS: dict[str, PlatformAccess] = {
    "twitter": PlatformAccess(
        "twitter",
        tier="X API v2, Basic tier or higher for the default --mode search (recent search, polled; "
             "if the log shows rate-limit waits, raise --poll-interval); --mode stream (the filtered "
             "stream, with catch-up by recent search) needs the Pro tier.  The Free tier's read quota is "
             "too small to monitor anything.",
        where="developer.x.com > Projects & Apps > your app > Keys and tokens > Bearer Token.",
        variables=(CredentialVariable("TWITTER_BEARER_TOKEN", True, "the app's Bearer Token (app-only auth)"),),
    ),
    "reddit": PlatformAccess(
        "reddit",
        tier="Reddit Data API, free tier for non-commercial use (about 100 requests a minute per OAuth "
             "client); application-only OAuth, or a 'script' app with a user's password.",
        where="reddit.com/prefs/apps > create another app > type 'script' (or 'web app'); "
              "the id is under the app's name.",
        variables=(
            CredentialVariable("REDDIT_CLIENT_ID", True, "the app's client id (under its name)"),
            CredentialVariable("REDDIT_CLIENT_SECRET", True, "the app's secret"),
            CredentialVariable("REDDIT_USERNAME", False,
                               "with REDDIT_PASSWORD: the password grant of a script app (else app-only)"),
            CredentialVariable("REDDIT_PASSWORD", False, "that user's password"),
            CredentialVariable("REDDIT_USER_AGENT", False,
                               "descriptive User-Agent Reddit asks for (default "
                               "python:sentistream:v0.1.0 (by /u/USERNAME)); generic ones are throttled"),
        ),
    ),
    "mastodon": PlatformAccess(
        "mastodon",
        tier="any instance's public API; some instances require a token for streaming and the public "
             "timeline.",
        where="on the instance: Preferences > Development > New application, scope read:statuses; "
              "copy 'Your access token'.",
        variables=(
            CredentialVariable("MASTODON_INSTANCE", True,
                               "instance URL, e.g. https://mastodon.social (or --instance)"),
            CredentialVariable("MASTODON_ACCESS_TOKEN", False,
                               "an application's access token (scope read:statuses)"),
        ),
    ),
    "bluesky": PlatformAccess(
        "bluesky",
        tier="the public Jetstream firehose (wss://jetstream*.bsky.network); no account, no key.",
        where="nothing to get.",
    ),
}


def credential_names() -> set[str]:
    """Every credential variable a connector may read."""
    return {v.name for access in PLATFORM_ACCESS.values() for v in access.variables}
