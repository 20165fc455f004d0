"""Key rules: tell from a name (attribute key, header, query parameter, field) whether its value is secret.

A name is split into lower-case words at ``.``, ``_``, ``-``, spaces, digits and lower-to-upper case
changes (``X-Api-Key`` -> ``x api key``, ``userPassword`` -> ``user password``). Matching words, not
substrings, keeps ``author``, ``gen_ai.usage.input_tokens`` or ``token_count`` out while catching
``db.password``, ``X-Auth-Token`` and ``PGPASSWORD``.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["KeyRules", "SECRET_KEY", "COOKIE", "key_words"]

SECRET_KEY = "secret-key"
COOKIE = "cookie"

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")

# Words that make a name secret on their own.
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token", "auth",
        "authorization", "credential", "credentials", "creds", "apikey", "csrf", "xsrf", "ssn",
        "cvv", "cvc", "pin", "jwt", "signature", "sig", "otp", "totp", "privatekey",
        "accesskey", "secretkey", "sessionkey", "mysqlpwd", "pw", "hmac",
    }
)
# Word stems that make a word secret wherever they appear in it (``pgpassword``, ``clientsecret``).
_SECRET_STEM = re.compile("password|passwd|secret|credential|passphrase|apikey|privatekey")
# Concatenated OAuth-style names end with ``token`` (``accesstoken``, ``csrfmiddlewaretoken``).
_SECRET_SUFFIXES = ("token",)
# Two consecutive words that together name a secret.
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key"), ("session", "key"),
        ("signing", "key"), ("hmac", "key"), ("encryption", "key"), ("master", "key"),
        ("card", "number"), ("credit", "card"), ("security", "code"), ("account", "number"),
        ("routing", "number"), ("social", "security"), ("mysql", "pwd"), ("account", "key"),
        ("subscription", "key"), ("application", "key"), ("shared", "key"),
    }
)
# A word after the last secret word that describes the secret instead of holding it
# (``token_type``, ``password_length``, ``auth.result``, ``llm.token_count.prompt``) makes the
# name not secret.
_DESCRIPTOR_WORDS = frozenset(
    {
        "count", "counts", "total", "length", "len", "size", "limit", "ttl", "type", "kind",
        "method", "scheme", "name", "id", "expires", "expiry", "expired", "expiration", "at",
        "age", "version", "present", "set", "enabled", "required", "changed", "policy",
        "strength", "provider", "status", "valid", "mode", "source", "usage", "algorithm", "alg",
        "issuer", "iss", "audience", "aud", "result", "check", "checked", "channel", "owner",
        "path", "prefix", "in", "endpoint", "url", "uri", "host", "format", "location", "scope",
        "scopes", "kid", "rotation", "duration", "timeout", "attempts", "retries", "failed",
        "failure", "success", "succeeded", "requested", "reset", "user", "username", "used",
        # An exception's type (``jwt.exceptions.DecodeError: ...``) names a failure, not a secret.
        "error", "errors", "exception", "exceptions", "warning",
    }
)
_PLAIN_KEY_KINDS = frozenset(
    {"idempotency", "cache", "partition", "sort", "primary", "foreign", "public", "object", "message", "dedup", "dedupe", "lock", "routing"}
)
_COOKIE_WORDS = frozenset({"cookie", "cookies"})
_COOKIE_NAMES = frozenset({"sessionid", "phpsessid", "jsessionid", "aspsessionid", "connect.sid"})
# Header names that carry a credential without a secret-looking word.
_SECRET_HEADERS = frozenset({"x-honeycomb-team", "x-sentry-auth", "dd-api-key", "private-token"})
# Prefixes of captured-header attributes; the header name follows.
HEADER_PREFIXES = ("http.request.header.", "http.response.header.")


def key_words(name: str) -> list[str]:
    """Split a name into lower-case words (see the module docstring)."""
    return [word.lower() for word in _WORD.findall(name)]


class KeyRules:
    """Decides which rule, if any, makes a name's value secret; results are cached per name."""

    def __init__(self, extra_keys: Iterable[str] = (), max_cache: int = 4096) -> None:
        # A user's extra key matches a whole name, or a run of words inside a name.
        self._extra_names = frozenset(key.strip().lower() for key in extra_keys if key.strip())
        self._extra_sequences = tuple(
            tuple(words) for words in map(key_words, self._extra_names) if words
        )
        self._max_cache = max_cache
        self._cache: dict[str, str | None] = {}

    def rule_for(self, name: str) -> str | None:
        """Return ``"secret-key"``, ``"cookie"`` or None for an attribute key or any other name."""
        cached = self._cache.get(name, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        rule = self._classify(name)
        if len(self._cache) >= self._max_cache:
            self._cache.clear()  # names have low cardinality; a full cache means they do not here
        self._cache[name] = rule
        return rule

    def _classify(self, name: str) -> str | None:
        lowered = name.lower()
        is_header = False
        for prefix in HEADER_PREFIXES:
            if lowered.startswith(prefix):
                is_header = True
                lowered = lowered[len(prefix):]
                name = name[len(prefix):]
                if lowered in _SECRET_HEADERS:
                    return SECRET_KEY
                break

        stripped = lowered.strip("\"' -_")
        if stripped in _COOKIE_NAMES:
            return COOKIE
        if stripped in self._extra_names:
            return SECRET_KEY
        words = key_words(name)
        if not words:
            return None
        if self._extra_sequences and self._contains_extra(words):
            return SECRET_KEY
        if any(word in _COOKIE_WORDS or word in _COOKIE_NAMES for word in words):
            return COOKIE

        last_secret = -1
        for index, word in enumerate(words):
            if (
                word in _SECRET_WORDS
                or word.endswith(_SECRET_SUFFIXES)
                or _SECRET_STEM.search(word) is not None
                or (index and (words[index - 1], word) in _SECRET_PAIRS)
            ):
                last_secret = index

        if last_secret < 0:
            # In a header name, a last word "key" names a credential (``X-RapidAPI-Key``),
            # unless the word before it names what else it keys (``Idempotency-Key``).
            if is_header and len(words) > 1 and words[-1] == "key" and words[-2] not in _PLAIN_KEY_KINDS:
                return SECRET_KEY
            return None
        if any(word in _DESCRIPTOR_WORDS for word in words[last_secret + 1 :]):
            return None
        return SECRET_KEY

    def _contains_extra(self, words: list[str]) -> bool:
        for sequence in self._extra_sequences:
            width = len(sequence)
            if any(tuple(words[i : i + width]) == sequence for i in range(len(words) - width + 1)):
                return True
        return False
