"""A webhook's URL as it is stored: encrypted with the installation's key (vh_orch/keyring.py), because a
URL can itself be the credential (Slack's incoming-webhook URLs are), beside the short form its owner is
shown (`https://hooks.slack.com/…AbCd`: scheme, host and the last 4 characters).

The column holds `SHOWN TOKEN` (a URL has no spaces: services/webhooks.check_url refuses them), so lists,
pages and the API show a webhook without decrypting anything; only the sender opens the token.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from vh_orch.errors import ConfigError

SHOWN_TAIL = 4


def _after_host(url: str) -> str:
    """What follows scheme://host[:port] in url (path, query, fragment)."""
    netloc = urlsplit(url).netloc
    start = url.find("//")
    return url[start + 2 + len(netloc):] if start >= 0 and netloc else ""


def shown_url(url: str) -> str:
    """scheme://host/…(the last 4 characters after the host): enough to tell webhooks apart."""
    parts = urlsplit(url)
    rest = _after_host(url).lstrip("/")
    return f"{parts.scheme}://{parts.netloc}/" + (f"…{rest[-SHOWN_TAIL:]}" if rest else "")


def seal_url(url: str, encrypt: Callable[[str], str]) -> str:
    """What the `webhook.url` column holds for url (encrypt: KeyRing.encrypt)."""
    return f"{shown_url(url)} {encrypt(url)}"


def stored_shown(stored: str) -> str:
    """The short form of a stored URL (no key needed)."""
    return stored.split(" ", 1)[0]


def open_url(stored: str, decrypt: Callable[[str], bytes]) -> str:
    """The whole URL (decrypt: KeyRing.decrypt); ConfigError for a value that was never sealed."""
    _, sep, token = stored.partition(" ")
    if not sep:
        raise ConfigError("a webhook's URL is stored unencrypted: remove the webhook and add it again")
    return decrypt(token).decode()


def reseal_url(stored: str, rotate: Callable[[str], str]) -> str:
    """The stored URL encrypted again with the newest key (rotate: KeyRing.rotate)."""
    shown, sep, token = stored.partition(" ")
    if not sep:
        raise ConfigError("a webhook's URL is stored unencrypted: remove the webhook and add it again")
    return f"{shown} {rotate(token)}"


def redact(text: str, url: str) -> str:
    """text (an error about a try) without the URL or its path and query, which requests' errors quote."""
    if not url:
        return text
    text = text.replace(url, shown_url(url))
    parts = urlsplit(url)
    tail = _after_host(url)
    sent = parts.path + (f"?{parts.query}" if parts.query else "")  # what reaches the server (no #fragment)
    for quoted in sorted({tail, tail.split("#", 1)[0], sent}, key=len, reverse=True):
        if len(quoted) > 1:  # "/" alone says nothing
            text = text.replace(quoted, "/…" + quoted.lstrip("/")[-SHOWN_TAIL:])
    return text
