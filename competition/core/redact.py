"""Credentials never printed: the secrets of a database or tracking URL, in every form libpq and SQLAlchemy
accept, and any text that may contain them (a driver's own error message) with them masked as `***`.

Forms covered: the password of the URL's user info, also when it holds an unencoded `@`, `/` or `:`
(`postgresql://user:p@ss/w@host/db`: everything between the first `:` and the last `@` of the authority);
query parameters that carry secrets (`?password=...`, `sslpassword=`, either percent-encoded or not); libpq
keyword/value strings (`host=h password='it''s' dbname=d`). `redact(text, url)` replaces each secret in its
raw, percent-decoded and percent-encoded spellings, so a driver quoting the decoded password is masked too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

MASK = "***"
SECRET_KEYS = ("password", "sslpassword", "api_key", "apikey", "token")  # query/DSN keys whose value is secret
_QUERY = re.compile(r"(?P<key>[A-Za-z_]+)=(?P<value>[^&#]*)")
_DSN = re.compile(r"\b(?P<key>" + "|".join(SECRET_KEYS) + r")\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|\S+)", re.I)


def _authority(url: str) -> tuple[int, int] | None:
    """(start, end) of the user info of `scheme://userinfo@host...`, or None when there is none."""
    head = url.find("://")
    if head < 0:
        return None
    start = head + 3
    query = url.find("?", start)
    end = url.rfind("@", start, query if query >= 0 else len(url))
    return (start, end) if end > start else None


def url_secrets(url: str) -> list[str]:
    """The secret values a URL or libpq keyword/value string carries (empty when none)."""
    found: list[str] = []
    span = _authority(url)
    if span:
        userinfo = url[span[0] : span[1]]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    query = url.find("?")
    if query >= 0:
        for m in _QUERY.finditer(url, query + 1):
            if m.group("key").lower() in SECRET_KEYS and m.group("value"):
                found.append(m.group("value"))
    if "://" not in url:
        for m in _DSN.finditer(url):
            value = m.group("value")
            found.append(value[1:-1].replace("\\'", "'").replace("\\\\", "\\") if value.startswith("'") else value)
    return [s for s in found if s]


def _spellings(secret: str) -> set[str]:
    return {s for s in (secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")) if s}


def redact(text: str, sources: Iterable[str] | str) -> str:
    """`text` with every secret of the URLs in `sources` (one URL or several) replaced by ***."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    secrets = {s for url in sources if url for secret in url_secrets(url) for s in _spellings(secret)}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """The URL as logs may show it: user info password, secret query values and keyword values as ***."""
    span = _authority(url)
    if span and ":" in url[span[0] : span[1]]:
        user = url[span[0] : span[1]].split(":", 1)[0]
        url = f"{url[: span[0]]}{user}:{MASK}{url[span[1] :]}"
    query = url.find("?")
    if query >= 0:

        def mask(m: re.Match) -> str:
            secret = m.group("key").lower() in SECRET_KEYS and m.group("value")
            return f"{m.group('key')}={MASK}" if secret else m.group(0)

        url = url[: query + 1] + _QUERY.sub(mask, url[query + 1 :])
    if "://" not in url:
        url = _DSN.sub(lambda m: f"{m.group('key')}={MASK}", url)
    return url
