"""Value rules: find secrets and personal data inside a text and replace only those parts.

`ValueRules.scrub_text` runs the detectors below in a fixed order on a string and returns the
string with each finding replaced by a marker such as ``[Filtered:email]``. Markers never contain
the matched text or its length. Every detector has a cheap prefilter (a substring test) so that
ordinary values (``GET``, ``/products/{id}``, ``200``) cost a few substring searches and no regex.

Every pattern here runs in time linear in the text: each starts behind a negative look-behind or a
fixed literal, so a failed attempt inside a long word is rejected at its first character, and no
pattern nests unbounded repeats.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import re
from typing import Callable, Iterable, Iterator, Sequence
from urllib.parse import quote_plus, unquote, unquote_plus

from raptorflow_otel.processors.scrub_keys import COOKIE, SECRET_KEY, KeyRules

__all__ = ["ValueRules", "BUILTIN_VALUE_RULES", "marker"]

# A query pair: at the start of a text (``url.query``) or after ``?``, ``&`` or ``;``.
_QUERY_PAIR = re.compile(r"(?:\A|(?<=[?&;]))([^=&#\s?;]+)=([^&#\s;]*)")
# Encoded query values are decoded this many times at most (a value encoded twice is found too).
_MAX_DECODE_DEPTH = 2

# Names of the value rules, in the order they run.
BUILTIN_VALUE_RULES = (
    "sql-parameters",
    "private-key",
    "url-userinfo",
    "secret-assignment",
    "bearer",
    "jwt",
    "aws-access-key",
    "vendor-token",
    "email",
    "credit-card",
    "iban",
    "us-ssn",
    "ip-address",
)

# A finding: (start, end, replacement, rule name).
Finding = tuple[int, int, str, str]


def marker(rule: str) -> str:
    return f"[Filtered:{rule}]"


# -- patterns ----------------------------------------------------------------------------------

# Spaces may arrive as ``+`` or ``%20`` when a key was put in a URL; the block runs to its END
# line or, when that was cut off, to the end of the text.
_PEM_SPACE = r"(?:[ +]|%20)"
_PRIVATE_KEY = re.compile(
    r"-----BEGIN(?:" + _PEM_SPACE + r"[A-Z0-9]+)*" + _PEM_SPACE + r"PRIVATE" + _PEM_SPACE + r"KEY(?:" + _PEM_SPACE + r"BLOCK)?-----"
    r".*?(?:-----END(?:" + _PEM_SPACE + r"[A-Z0-9]+)*" + _PEM_SPACE + r"PRIVATE" + _PEM_SPACE + r"KEY(?:" + _PEM_SPACE + r"BLOCK)?-----|\Z)",
    re.DOTALL,
)
# ``user:password@`` ends at the first ``@`` that a host follows, so a password containing an
# unencoded ``/``, ``?`` or ``@`` is covered whole. ``host:8080/path?mail=a@b.example`` is not
# userinfo, because a port follows the colon. A token alone (``token@host``) has none of those.
_USERINFO = re.compile(
    r"(?<=[A-Za-z0-9+.-])://(?:[^\s/?#@:\[]{1,256}:(?!\d{1,5}(?:[/?#]|\Z))[^\s]{0,256}?@(?=[\w.\-\[\]:%]+(?:[/?#\s'\"),;]|\Z))|[^\s/?#]{1,256}@)"
)

# ``repr()`` and JSON write a line break inside a string as the two characters ``\n``, so a
# value on the next line follows a letter. Every pattern that must start at a word boundary also
# accepts such an escape before it (`_ESCAPE`), or a secret on a later line would slip through.
_ESCAPE = r"\\[nrtfv0]"

_KV = re.compile(
    r"""(?:(?<![\w.-])|(?<=""" + _ESCAPE + r"""))(?P<key>\\?["']?-{0,2}[A-Za-z_][\w.-]*\\?["']?)"""
    r"""(?P<sep>[ \t]*(?:=>|[=:])[ \t]*)"""
    r"""(?P<value>%\(\w+\)s|\\"(?:[^"\\\n]|\\[^"\n])*\\"|[bBrRuU]?"(?:[^"\\\n]|\\.)*"|[bBrRuU]?'(?:[^'\\\n]|\\.)*'"""
    r"""|(?:(?i:bearer|basic|digest|token|negotiate|aws4-hmac-sha256|aws)[ \t]+)?[^\s&#,;"'<>(){}\[\]]+)"""
)
# A value that is a bind parameter (``:password``, ``%(token)s``, ``?``) or a word describing the
# secret (``password: str`` in a signature, ``token: refreshed``) is not a secret.
_NOT_A_SECRET_VALUE = re.compile(r"\?\d*|:[A-Za-z_]\w*|%\(\w+\)s|%s|\$\d+|@\w+|\*+|<[\w -]*>")
_NOT_A_SECRET_WORDS = frozenset(
    {
        "ok", "valid", "invalid", "refreshed", "expired", "missing", "required", "none", "null",
        "true", "false", "yes", "no", "success", "failed", "set", "unset", "present", "absent",
        "empty", "redacted", "hidden", "str", "bytes", "int", "bool", "float", "any", "optional",
        "secretstr", "dict", "list", "n/a", "on", "off", "enabled", "disabled",
    }
)
# Keys whose unquoted value in a text runs to the end of the line: an Authorization header has
# spaces and commas inside (``Digest username="...", response="..."``).
_WHOLE_LINE_KEYS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# Command-line flags: ``--password hunter2``, ``mysql -phunter2``, ``curl -u user:password``.
_CLI_FLAG = re.compile(r"(?<!\S)(--?[A-Za-z][\w-]*)[ \t]+(?!-)(\S+)")
_MYSQL_PASSWORD_FLAG = re.compile(r"(?<!\S)-p(?!assword)(\S+)")
_USER_FLAG = re.compile(r"(?<!\S)(?:-u|--user)[ \t]+[^\s:]+:(\S+)")
# ``<Password>hunter2</Password>``
_XML_ELEMENT = re.compile(r"<([A-Za-z_][\w.-]*)>([^<]{1,1000})</\1>")

_BEARER = re.compile(
    r"(?i)(?:(?<![A-Za-z0-9_])|(?<=" + _ESCAPE + r"))(bearer|basic|digest|token)[ \t]+([A-Za-z0-9._~+/=-]{8,})"
)

# A JOSE header is a base64url JSON object, so it starts with ``ey`` (``{"`` is ``eyJ``, ``{ "`` is
# ``eyA``). A signed token (JWS) has a JSON payload too; an encrypted one (JWE) has five parts.
_JWT = re.compile(
    r"ey[JAI][A-Za-z0-9_-]{4,}\.(?:ey[JAI][A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})(?:\.[A-Za-z0-9_-]*){0,2}"
)

_AWS_ACCESS_KEY = re.compile(
    r"(?:(?<![A-Za-z0-9])|(?<=" + _ESCAPE + r"))(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}(?![A-Za-z0-9])"
)

# Each branch starts with a literal, so the regex engine skips to candidates. `_vendor_tokens`
# checks the character before a match, because a look-behind first would disable the skip.
_VENDOR_TOKEN = re.compile(
    r"(?:"
    r"gh[pousr]_[A-Za-z0-9]{36,255}"
    r"|github_pat_[A-Za-z0-9_]{22,255}"
    r"|gl(?:pat|rt|dt|ptt|cbt|oas|soat|imt|ft|agent)-[A-Za-z0-9_-]{20,}"
    r"|ya29\.[A-Za-z0-9_-]{20,}"
    r"|GOCSPX-[A-Za-z0-9_-]{20,}"
    r"|xox[abposrce]-[A-Za-z0-9-]{10,}"
    r"|xapp-\d-[A-Za-z0-9-]{10,}"
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|whsec_[A-Za-z0-9]{16,}"
    r"|sntry[sua]_[A-Za-z0-9+/=_-]{20,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|sk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_-]{20,}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_-]{50,}"
    r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
    r"|SK[0-9a-f]{32}"
    r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}"
    r"|hv[sb]\.[A-Za-z0-9_-]{24,}"
    r"|do[opr]_v1_[a-f0-9]{64}"
    r")(?![A-Za-z0-9_-])"
    r"|hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"
)
_VENDOR_HINT = re.compile(
    r"gh[pousr]_|github_pat_|gl[a-z]{1,6}-|ya29\.|GOCSPX-|xox[abposrce]-|xapp-|_live_|_test_|whsec_|sntry|AIza|sk-|npm_|pypi-"
    r"|SG\.|SK[0-9a-f]{8}|shp(?:at|ss|ca|pa)_|hv[sb]\.|do[opr]_v1_|hooks\.slack"
)
# No token, key, card number or IBAN is shorter than this, so shorter texts skip those rules.
_MIN_TOKEN_CHARS = 13

# Anchored at the ``@`` so that the regex engine skips to it; the local part is found backwards.
# The at sign also as ``%40`` (percent-encoded once or twice), ``&#64;`` (HTML) and ``\\u0040``
# (JSON); domain labels may hold any letter (``exämple.com``).
_AT_SIGNS = ("@", "%40", "%2540", "&#64;", "\\u0040")
_EMAIL_DOMAIN = re.compile(
    r"(?:@|%40|%2540|&#64;|\\u0040)[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*\.[^\W\d_]{2,24}(?![\w-])"
)
_EMAIL_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-'")
_EMAIL_MAX_LOCAL = 64

# Digit-led patterns start with their first digit and check the character before it with a
# two-character look-behind, so the engine still skips to digits in C.
_DIGIT_CANDIDATE = re.compile(r"\d(?:[ .%-]?\d){2}")
_CARD = re.compile(
    r"[2-689](?:(?<![A-Za-z0-9.-][2-689])|(?<=" + _ESCAPE + r"[2-689]))\d(?:(?:[ .\u00a0-]|%20)?\d){11,17}(?![\w-]|\.\d)"
)
# Issuer prefixes: Visa, Amex, Diners, JCB, Discover, UnionPay, Mastercard (51-55, 2221-2720),
# Maestro (50, 56-58, 63, 67), Mir (2200-2204), RuPay (60, 81, 82), Elo and Verve (50xx, 65xx),
# Troy (9792).
_CARD_PREFIXES = (
    "4", "34", "37", "36", "38", "30", "35", "6011", "62", "64", "65", "60", "63", "67", "81", "82", "9792",
    *(str(n) for n in range(50, 59)),
    *(str(n) for n in range(2200, 2205)),
    *(str(n) for n in range(2221, 2721)),
)

# Upper-case only: a lower-case IBAN is usually labelled (``iban=...``), which the
# secret-assignment rule covers, and allowing lower case here would scan every word.
_IBAN = re.compile(
    r"[A-Z](?:(?<![A-Za-z0-9][A-Z])|(?<=" + _ESCAPE + r"[A-Z]))[A-Z]\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
)

_SSN = re.compile(r"(\d(?:(?<![\w-]\d)|(?<=" + _ESCAPE + r"\d))\d\d)-(\d{2})-(\d{4})(?![\w-])")

_IPV4 = re.compile(r"\d(?:(?<![\w.]\d)|(?<=" + _ESCAPE + r"\d))\d{0,2}(?:\.\d{1,3}){3}(?![\w]|\.\w)")
_IPV6_HINT = re.compile(r":(?<=[0-9A-Fa-f:]:)[0-9A-Fa-f:]")
_IPV6 = re.compile(r"[0-9A-Fa-f:](?:(?<![\w:.%][0-9A-Fa-f:])|(?<=" + _ESCAPE + r"[0-9A-Fa-f:]))[0-9A-Fa-f:]{1,38}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w.]+)?(?![\w:])")

# SQLAlchemy's error text: ``[SQL: ...]`` then ``[parameters: ...]`` on the next line.
# Each section runs from its opener to the first closing bracket that one of these follows. The
# openers and the closings are found in one pass each, then paired, so the cost stays linear.
_SQL_TEXT_END = re.compile(r"\](?=\s*(?:\[parameters|\(Background on|\Z))")
_SQL_PARAMETERS_END = re.compile(r"\](?=[ \t]*(?:\n|\(Background on|\[SQL|\Z))")
# SQLAlchemy's echo log: ``[generated in 0.00015s] ('row', 'values')``.
_SQL_ECHO_PARAMETERS = re.compile(r"(\[(?:generated in|cached since) [\d.]+s(?: ago)?\] )(.{1,4000})")
# Lazy scans are bounded (a row, a userinfo, a quoted snippet), so a text that repeats a pattern's
# opening many times costs linear time, not quadratic.
# Database error details that quote the row: PostgreSQL ``Key (email)=(...)``, also with an
# expression column (``lower(name::text)``), and ``Failing row contains (...)``.
_PG_KEY_DETAIL = re.compile(
    r"((?i:key) \((?:[^()\n]|\([^()\n]*\))*\)=\()(.{0,1000}?)(\)(?= already exists| is not present| conflicts|\.?\s*$|\.?\s*\n))",
    re.MULTILINE,
)
_PG_FAILING_ROW = re.compile(r"(Failing row contains \()(.{0,4000}?)(\)\.?)(?=\s|\Z)", re.DOTALL)
# A rejected input value: PostgreSQL ``invalid input syntax for type integer: "..."``, MySQL
# ``Incorrect integer value: '...'`` and ``near '...' at line 1``.
_QUOTED_INPUT = re.compile(
    r"((?:invalid input (?:syntax|value) for (?:type |enum )?[\w ]+|Incorrect [\w ]+ value): )"
    r"(\"(?:[^\"\n])*\"|'(?:[^'\n]|'')*')"
)
_MYSQL_NEAR = re.compile(r"(near ')(.{0,500}?)(' at line \d+)")
# psycopg's ``LINE 1: ...VALUES ('row', ...)``: the statement line with the caret under it.
_SQL_ERROR_LINE = re.compile(r"^(LINE \d+: )(.+)$", re.MULTILINE)
# A Redis command quoted in a client error: ``Command # 1 (AUTH default <password>) of pipeline``.
_REDIS_COMMAND_IN_TEXT = re.compile(r"(\((?:AUTH|HELLO \d+ AUTH|CONFIG SET (?:requirepass|masterauth)|ACL SETUSER)\b)([^)\n]{0,500})\)", re.IGNORECASE)
_MYSQL_DUPLICATE = re.compile(r"(Duplicate entry ')(.{0,1000}?)(' for key)")
_DATABASE_DETAIL_HINT = re.compile(
    r"ey \(|Failing row|Duplicate entry|invalid input|Incorrect |near '|LINE \d|generated in|cached since"
    r"|\((?:AUTH|HELLO|CONFIG|ACL|auth|hello|config|acl) "
)


# -- validators --------------------------------------------------------------------------------


# Prefilter of the secret-assignment rule, run on the lower-cased text: a word that `KeyRules`
# may call secret, then the rest of its key and a separator.
_ASSIGNMENT_HINT = re.compile(
    r"(?:pass|pwd|pw|secret|token|auth|credential|key|csrf|xsrf|ssn|cvv|cvc|pin|sig|jwt|otp|cookie|card|session|hmac)"
    r"[\w.-]*\\?[\"']?[ \t]*(?:[=:]|=>)"
)
# Prefilter of command-line flags: a flag with a secret-looking word, ``-p<password>`` or ``-u``.
_FLAG_HINT = re.compile(
    r"-(?<!\S-)(?:-?[\w-]*(?:pass|pwd|secret|token|key|auth|credential)[\w-]*[ \t]|p\S|u[ \t]|-user[ \t])"
)


_HINT_WORDS = (
    "pass", "pw", "secret", "token", "auth", "credential", "key", "csrf", "xsrf", "ssn", "cvv",
    "cvc", "pin", "sig", "jwt", "otp", "cookie", "card", "session", "hmac",
)


def _has_secret_word(lowered: str) -> bool:
    """Prefilter of the key=value rule on the lower-cased text: substring tests, then one regex."""
    for word in _HINT_WORDS:
        if word in lowered:
            return _ASSIGNMENT_HINT.search(lowered) is not None
    return False


def _after_escape(text: str, start: int) -> bool:
    """Tell whether ``start`` follows an escape such as ``\\n`` (see `_ESCAPE`)."""
    return start >= 2 and text[start - 2] == "\\" and text[start - 1] in "nrtfv0"


_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_UNICODE_ESCAPE = re.compile(r"\\u00([0-9A-Fa-f]{2})")


def _decode(text: str) -> str:
    """Undo percent-encoding and JSON's ``\\u00XX`` escapes (only those two)."""
    if "\\u00" in text:
        text = _UNICODE_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)
    if "%" in text and _PERCENT_ESCAPE.search(text) is not None:
        text = unquote(text)
    return text


def _sections(text: str, opener: str, closing: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of the content of each ``opener ... ]`` section (see `_SQL_TEXT_END`).

    An opener inside a section that is already open is part of that section. A section without a
    closing runs to the end of the text, so cut-off text is still covered.
    """
    ends = [match.start() for match in closing.finditer(text)]
    position = 0
    while True:
        opening = text.find(opener, position)
        if opening < 0:
            return
        start = opening + len(opener)
        index = bisect.bisect_left(ends, start)
        end = ends[index] if index < len(ends) else len(text)
        yield start, end
        position = end + 1


def _lower_same_length(text: str) -> str:
    """Lower-case ``text`` keeping every index valid (a few characters grow when lower-cased)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(char if len(char.lower()) != 1 else char.lower() for char in text)


def _is_placeholder(value: str) -> bool:
    """Tell a bind parameter, a type name or a status word from a secret value."""
    bare = value.strip(",.;)")
    return _NOT_A_SECRET_VALUE.fullmatch(bare) is not None or bare.lower() in _NOT_A_SECRET_WORDS


def _end_of_line(text: str, start: int) -> int:
    """Index of the next line break, written as a character or as the escape ``\\n``."""
    ends = [index for index in (text.find("\n", start), text.find("\\n", start)) if index >= 0]
    return min(ends) if ends else len(text)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _is_card_number(text: str) -> bool:
    digits = "".join(char for char in text.replace("%20", "") if "0" <= char <= "9")
    return 13 <= len(digits) <= 19 and digits.startswith(_CARD_PREFIXES) and _luhn_valid(digits)


def _is_card_match(match: re.Match[str]) -> bool:
    return _is_card_number(match.group(0))


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def _ssn_valid(match: re.Match[str]) -> bool:
    area, group, serial = match.group(1), match.group(2), match.group(3)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _token_credential(credential: str) -> bool:
    """Tell a credential after the ``Token`` scheme (Django REST framework) from a word.

    A value that a more specific rule names (a vendor token, a JWT) is left to that rule.
    """
    if _VENDOR_TOKEN.match(credential) is not None or credential.startswith("ey"):
        return False
    return len(credential) >= 16 and any(char.isdigit() for char in credential) and any(char.isalpha() for char in credential)


def _bearer_credential(credential: str) -> bool:
    """Tell a credential (``mF_9.B5f-4.1JqM``) from an English word after ``Bearer`` or ``Basic``."""
    if any(char.isdigit() for char in credential) or len(credential) >= 20 or credential.endswith("="):
        return True
    return any(char.isupper() for char in credential[1:]) and any(char.islower() for char in credential)


def _is_url_host(text: str, start: int) -> bool:
    """Tell whether the address at ``start`` is the host of a URL: a server, not a person."""
    before = text[max(0, start - 4) : start]
    return before.endswith(("://", "@", "://[", "@["))


def _ipv4_valid(text: str, start: int, candidate: str) -> bool:
    if any(int(octet) > 255 for octet in candidate.split(".")):
        return False
    # ``Chrome/120.0.0.0`` in a user agent, or ``version 4.1.0.2``, is a version, not an address.
    if start >= 2 and text[start - 1] == "/" and text[start - 2].isalnum():
        return False
    before = text[max(0, start - 12) : start].rstrip(" :=").lower()
    if before.rsplit(None, 1)[-1:] and before.rsplit(None, 1)[-1] in _VERSION_WORDS:
        return False
    return not _is_url_host(text, start)


# A word right before a four-part number that makes it a version (``version 4.1.0.2``).
_VERSION_WORDS = frozenset({"version", "ver", "release", "build"})


def _ipv6_valid(text: str, start: int, candidate: str) -> bool:
    # Real addresses have a digit (``fe80::1``, ``2001:db8::``); ``::`` or ``cafe::babe`` in a text
    # is code or a name.
    if _is_url_host(text, start) or not any(char.isdigit() for char in candidate):
        return False
    address = candidate.split("%", 1)[0]
    if address.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


# -- the rules ---------------------------------------------------------------------------------


class ValueRules:
    """The enabled value detectors, with the optional keyed-pseudonym function."""

    def __init__(
        self,
        key_rules: KeyRules,
        *,
        disabled: Iterable[str] = (),
        hash_key: bytes | None = None,
        custom_patterns: Sequence[tuple[str, Callable[[str], Iterator[tuple[int, int]]]]] = (),
    ) -> None:
        self._keys = key_rules
        self._hash_key = hash_key
        self._custom = tuple(custom_patterns)
        disabled = frozenset(disabled)
        self.enabled = frozenset(BUILTIN_VALUE_RULES) - disabled
        self._on = {rule: rule in self.enabled for rule in BUILTIN_VALUE_RULES}

    # The keyed pseudonym: stable for one key, never reversible without it.
    def pseudonym(self, rule: str, normalized: str) -> str:
        assert self._hash_key is not None
        digest = hmac.new(self._hash_key, normalized.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"[{rule}:{digest.hexdigest()[:16]}]"

    @property
    def hashing(self) -> bool:
        return self._hash_key is not None

    def scrub_text(
        self, text: str, fired: list[str], *, allow_ip: bool = True, _depth: int = 0
    ) -> str:
        """Return ``text`` with every finding replaced; append one rule name to ``fired`` per finding.

        Each detector runs only when its prefilter (substring tests, or one regex that the engine
        scans in C) finds a candidate. Most values pass every prefilter untouched.
        """
        on = self._on
        long_enough = len(text) >= _MIN_TOKEN_CHARS
        if "-----BEGIN" in text and on["private-key"]:
            text = self._replace(text, fired, self._simple(_PRIVATE_KEY, text, "private-key"))
        encoded = ("%" in text or "+" in text or "\\u00" in text) and _depth < _MAX_DECODE_DEPTH
        if encoded and "=" in text:
            text = self._scrub_encoded_query(text, fired, allow_ip, _depth)
        if "[" in text and on["sql-parameters"] and ("[parameters: " in text or "[SQL: " in text):
            text = self._scrub_sql_message(text, fired)
        if on["sql-parameters"] and ("(" in text or "'" in text or '"' in text or "LINE " in text) and _DATABASE_DETAIL_HINT.search(text) is not None:
            text = self._replace(text, fired, self._database_detail_findings(text))
        if "://" in text and "@" in text and on["url-userinfo"]:
            text = self._replace(text, fired, self._userinfo(text))
        if on["secret-assignment"]:
            text = self._replace(text, fired, self._assignments(text))
        if on["bearer"] and ("earer" in text or "asic" in text or "igest" in text or "oken" in text or "EARER" in text or "ASIC" in text or "OKEN" in text):
            text = self._replace(text, fired, self._bearer(text))
        if long_enough and "ey" in text and on["jwt"]:
            text = self._replace(text, fired, self._simple(_JWT, text, "jwt"))
        if long_enough and on["aws-access-key"] and ("AKIA" in text or "ASIA" in text or "ABIA" in text or "ACCA" in text):
            text = self._replace(text, fired, self._simple(_AWS_ACCESS_KEY, text, "aws-access-key"))
        if long_enough and on["vendor-token"] and _VENDOR_HINT.search(text) is not None:
            text = self._replace(text, fired, self._vendor_tokens(text))
        if ("@" in text or "%40" in text or "&#64;" in text or "\\u0040" in text) and on["email"]:
            text = self._replace(text, fired, self._emails(text))
        if _DIGIT_CANDIDATE.search(text) is not None:
            if long_enough and on["credit-card"]:
                text = self._replace(text, fired, self._validated(_CARD, text, "credit-card", _is_card_match))
            if "-" in text and on["us-ssn"]:
                text = self._replace(text, fired, self._validated(_SSN, text, "us-ssn", _ssn_valid))
            if "." in text and allow_ip and on["ip-address"]:
                text = self._replace(text, fired, self._ipv4(text))
            # An IBAN has at least three digits in a row after its country code.
            if long_enough and on["iban"] and _IBAN.search(text) is not None:
                text = self._replace(text, fired, self._ibans(text))
        if allow_ip and on["ip-address"] and ":" in text and _IPV6_HINT.search(text) is not None:
            text = self._replace(text, fired, self._ipv6(text))
        for name, finditer in self._custom:
            text = self._replace(text, fired, ((start, end, marker(name), name) for start, end in finditer(text)))
        if encoded:
            text = self._scrub_decoded(text, fired, allow_ip, _depth)
        return text

    def pseudonymize_or_filter(self, rule: str, normalized: str) -> str:
        return self.pseudonym(rule, normalized) if self._hash_key is not None else marker(rule)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _replace(text: str, fired: list[str], findings: Iterable[Finding]) -> str:
        parts: list[str] = []
        copied = 0
        for start, end, replacement, rule in findings:
            if start < copied:
                continue  # overlaps the previous finding, which already covers it
            parts.append(text[copied:start])
            parts.append(replacement)
            copied = end
            fired.append(rule)
        if not parts:
            return text
        parts.append(text[copied:])
        return "".join(parts)

    def _scrub_decoded(self, text: str, fired: list[str], allow_ip: bool, depth: int) -> str:
        """Scrub the whole text decoded, after every rule ran on it as it is.

        This catches an encoded name (``access%5Ftoken=``), an encoded separator
        (``password%3Dhunter2`` in free text) and JSON's ``\\u0022`` escapes. When the decoded
        text has a finding, the whole text is replaced by its scrubbed decoded form, since
        positions in the decoded text do not map back to the encoded one.
        """
        decoded = _decode(text)
        if decoded == text:
            return text
        inner: list[str] = []
        scrubbed = self.scrub_text(decoded, inner, allow_ip=allow_ip, _depth=depth + 1)
        if not inner:
            return text
        fired.extend(inner)
        return scrubbed

    def _scrub_encoded_query(self, text: str, fired: list[str], allow_ip: bool, depth: int) -> str:
        """Scrub percent- or plus-encoded query values in their decoded form.

        ``payout=DE12+5001+0517+...`` or ``note=password%3Dhunter2`` hide their secret from the
        rules until decoded. A value whose decoded form has findings is replaced by its scrubbed
        form, encoded again; other values are left exactly as they were.
        """
        parts: list[str] = []
        copied = 0
        for match in _QUERY_PAIR.finditer(text):
            value = match.group(2)
            if "%" not in value and "+" not in value:
                continue
            decoded = unquote_plus(value)
            inner: list[str] = []
            scrubbed = self.scrub_text(decoded, inner, allow_ip=allow_ip, _depth=depth + 1)
            if not inner:
                continue
            parts.append(text[copied : match.start(2)])
            parts.append(quote_plus(scrubbed, safe="[]:"))
            copied = match.end(2)
            fired.extend(inner)
        if not parts:
            return text
        parts.append(text[copied:])
        return "".join(parts)

    @staticmethod
    def _simple(pattern: re.Pattern[str], text: str, rule: str) -> Iterator[Finding]:
        replacement = marker(rule)
        for match in pattern.finditer(text):
            yield match.start(), match.end(), replacement, rule

    @staticmethod
    def _validated(
        pattern: re.Pattern[str], text: str, rule: str, valid: Callable[[re.Match[str]], bool]
    ) -> Iterator[Finding]:
        replacement = marker(rule)
        for match in pattern.finditer(text):
            if valid(match):
                yield match.start(), match.end(), replacement, rule

    def _scrub_sql_message(self, text: str, fired: list[str]) -> str:
        from raptorflow_otel.processors.sql import sanitize_sql

        def sql_findings() -> Iterator[Finding]:
            for start, end in _sections(text, "[SQL: ", _SQL_TEXT_END):
                statement = text[start:end]
                sanitized = sanitize_sql(statement)
                if sanitized != statement:
                    yield start, end, sanitized, "sql-literal"

        text = self._replace(text, fired, sql_findings())
        replacement = marker("sql-parameters")
        return self._replace(
            text,
            fired,
            ((start, end, replacement, "sql-parameters") for start, end in _sections(text, "[parameters: ", _SQL_PARAMETERS_END)),
        )

    @staticmethod
    def _database_detail_findings(text: str) -> Iterator[Finding]:
        from raptorflow_otel.processors.sql import sanitize_sql

        replacement = marker("sql-parameters")
        findings = []
        for pattern in (_PG_KEY_DETAIL, _PG_FAILING_ROW, _MYSQL_DUPLICATE, _SQL_ECHO_PARAMETERS, _MYSQL_NEAR):
            for match in pattern.finditer(text):
                findings.append((match.start(2), match.end(2), replacement, "sql-parameters"))
        for match in _QUOTED_INPUT.finditer(text):
            findings.append((match.start(2) + 1, match.end(2) - 1, replacement, "sql-parameters"))
        for match in _SQL_ERROR_LINE.finditer(text):
            sanitized = sanitize_sql(match.group(2))
            if sanitized != match.group(2):
                findings.append((match.start(2), match.end(2), sanitized, "sql-literal"))
        for match in _REDIS_COMMAND_IN_TEXT.finditer(text):
            if match.group(2).strip():
                arguments = " ".join("?" for _ in match.group(2).split())
                findings.append((match.start(2), match.end(2), " " + arguments, "db-command-args"))
        return iter(sorted(findings))

    @staticmethod
    def _vendor_tokens(text: str) -> Iterator[Finding]:
        replacement = marker("vendor-token")
        for match in _VENDOR_TOKEN.finditer(text):
            start = match.start()
            if match.group(0).startswith("hooks."):
                start += len("hooks.slack.com/services/")  # keep the host, filter the secret path
            elif start and (text[start - 1].isalnum() or text[start - 1] in "_-") and not _after_escape(text, start):
                continue  # the prefix is inside a longer word, not a token's start
            yield start, match.end(), replacement, "vendor-token"

    @staticmethod
    def _userinfo(text: str) -> Iterator[Finding]:
        for match in _USERINFO.finditer(text):
            yield match.start(), match.end(), "://REDACTED:REDACTED@", "url-userinfo"

    def _assignments(self, text: str) -> Iterator[Finding]:
        findings: list[Finding] = []
        if "=" in text or ":" in text:
            lowered = _lower_same_length(text)
            if _has_secret_word(lowered):
                findings += self._key_value_pairs(text, lowered)
        if "-" in text and _FLAG_HINT.search(text) is not None:
            findings += self._command_line_flags(text)
        if "</" in text:
            findings += self._xml_elements(text)
        return iter(sorted(findings))

    def _is_secret_name(self, name: str) -> bool:
        return self._keys.rule_for(name) in (SECRET_KEY, COOKIE)

    def _key_value_pairs(self, text: str, lowered: str) -> Iterator[Finding]:
        for match in self._pair_candidates(text, lowered):
            key = match.group("key").strip("\\\"'-")
            if _after_escape(text, match.start("key") + 1):
                key = key[1:]  # ``\npassword=``: the n belongs to the escape, not to the key
            if not self._is_secret_name(key):
                continue
            value = match.group("value")
            start, end = match.start("value"), match.end("value")
            quote = value[:2] if value.startswith('\\"') else value.lstrip("bBrRuU")[:1]
            if quote in ('"', "'", '\\"') and len(value) > 2 * len(quote) and value.endswith(quote):
                # Keep the quotes (and a string prefix such as b), so JSON stays JSON.
                start = start + len(value) - len(value.lstrip("bBrRuU")) + len(quote)
                end -= len(quote)
            elif key.lower() in _WHOLE_LINE_KEYS:
                end = _end_of_line(text, start)
            bare = text[start:end]
            if not bare or bare.startswith(("[Filtered:", "REDACTED")) or _is_placeholder(bare):
                continue
            yield start, end, marker("secret-assignment"), "secret-assignment"

    @staticmethod
    def _pair_candidates(text: str, lowered: str) -> Iterator[re.Match[str]]:
        """Yield ``key=value`` matches whose key contains a secret-looking word, left to right.

        The prefilter's matches in the lower-cased text point at those words, so the pair regex
        runs only there instead of at every separator of a long text.
        """
        covered = 0
        for hint in _ASSIGNMENT_HINT.finditer(lowered):
            start = hint.start()
            while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_.-"):
                start -= 1
            if start > 0 and text[start - 1] in "\"'":
                start -= 1
                if start > 0 and text[start - 1] == "\\":
                    start -= 1
            if start < covered:
                continue
            match = _KV.match(text, start)
            if match is not None:
                covered = match.end()
                yield match

    def _command_line_flags(self, text: str) -> Iterator[Finding]:
        replacement = marker("secret-assignment")
        for match in _CLI_FLAG.finditer(text):
            if self._is_secret_name(match.group(1).lstrip("-")) and not _is_placeholder(match.group(2)):
                yield match.start(2), match.end(2), replacement, "secret-assignment"
        lowered = text.lower()
        if "mysql" in lowered or "mariadb" in lowered:
            for match in _MYSQL_PASSWORD_FLAG.finditer(text):
                yield match.start(1), match.end(1), replacement, "secret-assignment"
        for match in _USER_FLAG.finditer(text):
            yield match.start(1), match.end(1), replacement, "secret-assignment"

    def _xml_elements(self, text: str) -> Iterator[Finding]:
        for match in _XML_ELEMENT.finditer(text):
            if self._is_secret_name(match.group(1)) and not _is_placeholder(match.group(2)):
                yield match.start(2), match.end(2), marker("secret-assignment"), "secret-assignment"

    @staticmethod
    def _bearer(text: str) -> Iterator[Finding]:
        for match in _BEARER.finditer(text):
            credential = match.group(2)
            if credential.startswith("[Filtered") or not _bearer_credential(credential):
                continue
            scheme = match.group(1).lower()
            if scheme == "token" and not _token_credential(credential):
                continue  # "token" is also an English word: only a long random value follows it
            # Digest credentials are a list of quoted parameters: all of them go.
            end = _end_of_line(text, match.start(2)) if scheme == "digest" else match.end(2)
            yield match.start(2), end, marker("bearer"), "bearer"

    def _emails(self, text: str) -> Iterator[Finding]:
        for match in _EMAIL_DOMAIN.finditer(text):
            at = match.start()
            start = at
            floor = max(0, at - _EMAIL_MAX_LOCAL)
            while start > floor and text[start - 1] in _EMAIL_LOCAL_CHARS:
                start -= 1
            while start < at and text[start] in ".'":
                start += 1  # a local part never starts with a dot; a quote is the text's own
            if start == at and at >= 2 and text[at - 1] == '"':
                quoted = text.rfind('"', floor, at - 1)  # a quoted local part: "alice smith"@...
                start = quoted if quoted >= 0 else at
            if start == at or text.startswith("REDACTED", start):
                continue  # no local part, or the marker left by the url-userinfo rule
            if self._hash_key is not None:
                at_sign = next(sign for sign in _AT_SIGNS if match.group(0).startswith(sign))
                address = (text[start:at] + "@" + match.group(0)[len(at_sign):]).lower()
                yield start, match.end(), self.pseudonym("email", address), "email"
            else:
                yield start, match.end(), marker("email"), "email"

    def _ibans(self, text: str) -> Iterator[Finding]:
        for match in _IBAN.finditer(text):
            candidate = match.group(0)
            # A greedy match may have taken a word after the IBAN ("... 3000 AND"): cut it at
            # its separators from the end until the checksum holds.
            cuts = [len(candidate)] + [index for index in range(len(candidate) - 1, 0, -1) if candidate[index] in " -"]
            for cut in cuts:
                compact = candidate[:cut].replace(" ", "").replace("-", "")
                if len(compact) < 15:
                    break
                if _iban_valid(compact):
                    yield match.start(), match.start() + cut, marker("iban"), "iban"
                    break

    def _ipv4(self, text: str) -> Iterator[Finding]:
        for match in _IPV4.finditer(text):
            candidate = match.group(0)
            if _ipv4_valid(text, match.start(), candidate):
                yield match.start(), match.end(), self._ip_replacement(candidate), "ip-address"

    def _ipv6(self, text: str) -> Iterator[Finding]:
        for match in _IPV6.finditer(text):
            candidate = match.group(0)
            if _ipv6_valid(text, match.start(), candidate):
                yield match.start(), match.end(), self._ip_replacement(candidate), "ip-address"

    def _ip_replacement(self, candidate: str) -> str:
        if self._hash_key is None:
            return marker("ip-address")
        address = candidate.split("%", 1)[0]
        return self.pseudonym("ip-address", str(ipaddress.ip_address(address)))
