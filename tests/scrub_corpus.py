"""Labelled corpus for the privacy scrubber: values that must be scrubbed and values that must be kept.

Every value is synthetic. Addresses use the example.com, example.org and example.net domains and
the documentation IP ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32). Card
numbers are the payment networks' published test numbers, or are built here with a Luhn check digit.
IBANs are made-up account numbers whose check digits are computed here (mod 97). Tokens, JWTs and
PEM bodies come from ``random.Random`` seeded with a fixed label, so the corpus is the same on every
run. The SSNs are sample numbers in the valid form (area not 000, 666 or 9xx).

Rule names in ``Leak.detector`` are the rule names of docs/privacy.md. `scrub_harness` turns a case
into a span or a Sentry event, and tests/test_scrub_corpus.py runs the scrubber on it.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass, field
from typing import Mapping

LOCATIONS = (
    "attribute",
    "span_name",
    "event_attribute",
    "link_attribute",
    "resource_attribute",
    "sentry_event",
)

ATTRIBUTE, SPAN_NAME, EVENT, LINK, RESOURCE, SENTRY = LOCATIONS


@dataclass(frozen=True)
class Leak:
    """A value that must not reach an exporter as it is.

    ``secrets`` must not appear anywhere in the scrubbed span or event, raw, percent-encoded or
    JSON-escaped. ``keep`` are parts of the value that must survive a partial replacement.
    ``context`` contains more attributes of the same span (see `scrub_harness` for the special keys).
    """

    id: str
    location: str
    key: str
    value: object
    secrets: tuple[str, ...]
    detector: str
    keep: tuple[str, ...] = ()
    context: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Keep:
    """A value that must come back unchanged at the same place."""

    id: str
    location: str
    key: str
    value: object
    context: Mapping[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
BASE64URL = ALNUM + "-_"


def random_string(label: str, alphabet: str, length: int) -> str:
    """Return ``length`` characters of ``alphabet`` drawn from a generator seeded with ``label``."""
    rng = random.Random(f"raptorflow-scrub-corpus/{label}")
    return "".join(rng.choice(alphabet) for _ in range(length))


def random_bytes(label: str, length: int) -> bytes:
    rng = random.Random(f"raptorflow-scrub-corpus/bytes/{label}")
    return bytes(rng.getrandbits(8) for _ in range(length))


def base64url(data: bytes) -> str:
    """Encode ``data`` as base64url without padding, as JWTs do."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def luhn_is_valid(digits: str) -> bool:
    """Check the Luhn check digit of a card number (spaces and dashes are ignored)."""
    digits = digits.replace(" ", "").replace("-", "")
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def with_luhn_digit(partial: str) -> str:
    """Append the check digit that makes ``partial`` pass the Luhn check."""
    for check in string.digits:
        if luhn_is_valid(partial + check):
            return partial + check
    raise AssertionError("unreachable: one of ten check digits always passes")


def _iban_remainder(text: str) -> int:
    # ISO 13616: letters count as 10..35, then the whole number is taken mod 97.
    return int("".join(str(int(char, 36)) for char in text)) % 97


def make_iban(country: str, bban: str) -> str:
    """Build a compact IBAN with correct mod-97 check digits from a country code and an account part."""
    check = 98 - _iban_remainder(bban + country + "00")
    return f"{country}{check:02d}{bban}"


def iban_is_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    return _iban_remainder(compact[4:] + compact[:4]) == 1


def group_by_four(text: str) -> str:
    """Format an IBAN in groups of four characters, as banks print it."""
    return " ".join(text[index : index + 4] for index in range(0, len(text), 4))


def make_jwt(label: str, claims: Mapping[str, object], algorithm: str = "HS256", key_id: str | None = None) -> str:
    """Build a JSON Web Token with a random signature (it verifies against no key)."""
    header: dict[str, object] = {"alg": algorithm, "typ": "JWT"}
    if key_id is not None:
        header["kid"] = key_id
    signature_length = 32 if algorithm.startswith("HS") else 256
    segments = [
        base64url(json.dumps(header, separators=(",", ":")).encode()),
        base64url(json.dumps(dict(claims), separators=(",", ":")).encode()),
        base64url(random_bytes(f"jwt/{label}", signature_length)),
    ]
    return ".".join(segments)


def jwt_secrets(token: str) -> tuple[str, str]:
    """Return the payload and signature segments, the parts of a JWT that differ between tokens."""
    _, payload, signature = token.split(".")
    return payload, signature


def make_pem(label: str, kind: str = "PRIVATE KEY", lines: int = 8, cut_after: int | None = None) -> str:
    """Build a PEM private-key block with a random body.

    With ``cut_after``, the block ends after that many body lines and has no footer, like a key
    that a log line or an exception message cut short.
    """
    body = [base64.b64encode(random_bytes(f"pem/{label}/{index}", 48)).decode() for index in range(lines)]
    body[-1] = body[-1][:28]
    if cut_after is not None:
        return "\n".join([f"-----BEGIN {kind}-----", *body[:cut_after]])
    return "\n".join([f"-----BEGIN {kind}-----", *body, f"-----END {kind}-----"]) + "\n"


def pem_secrets(pem: str, count: int = 3) -> tuple[str, ...]:
    """Return the first body lines of a PEM block, whether its line breaks are real or written as ``\\n``."""
    lines = pem.replace("\\n", "\n").splitlines()
    body = [line for line in lines if line and not line.startswith("-----")]
    return tuple(body[:count])


def aws_key_id(label: str, prefix: str = "AKIA") -> str:
    return prefix + random_string(f"aws/{label}", UPPER_ALNUM, 16)


def basic_credentials(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


_VENDOR_FORMATS = {
    "github-classic": lambda seed: "ghp_" + random_string(seed, ALNUM, 36),
    "github-oauth": lambda seed: "gho_" + random_string(seed, ALNUM, 36),
    "github-user": lambda seed: "ghu_" + random_string(seed, ALNUM, 36),
    "github-server": lambda seed: "ghs_" + random_string(seed, ALNUM, 36),
    "github-refresh": lambda seed: "ghr_" + random_string(seed, ALNUM, 36),
    "github-fine-grained": lambda seed: (
        "github_pat_" + random_string(seed + "/a", UPPER_ALNUM, 22) + "_" + random_string(seed + "/b", ALNUM, 59)
    ),
    "gitlab": lambda seed: "glpat-" + random_string(seed, ALNUM + "-_", 20),
    "slack-bot": lambda seed: (
        "xoxb-" + random_string(seed + "/a", string.digits, 12) + "-" + random_string(seed + "/b", string.digits, 13)
        + "-" + random_string(seed + "/c", ALNUM, 24)
    ),
    "slack-user": lambda seed: (
        "xoxp-" + random_string(seed + "/a", string.digits, 12) + "-" + random_string(seed + "/b", string.digits, 12)
        + "-" + random_string(seed + "/c", string.digits, 13) + "-" + random_string(seed + "/d", HEX, 32)
    ),
    "stripe-live": lambda seed: "sk_live_" + random_string(seed, ALNUM, 48),
    "stripe-test": lambda seed: "sk_test_" + random_string(seed, ALNUM, 48),
    "stripe-restricted-live": lambda seed: "rk_live_" + random_string(seed, ALNUM, 48),
    "stripe-restricted-test": lambda seed: "rk_test_" + random_string(seed, ALNUM, 48),
    "stripe-webhook": lambda seed: "whsec_" + random_string(seed, ALNUM, 32),
    "sentry-org": lambda seed: (
        "sntrys_"
        + base64url(json.dumps({"iat": 1714558530, "url": "https://sentry.example.com", "org": "example"}).encode())
        + "_" + random_string(seed, BASE64URL, 43)
    ),
    "sentry-user": lambda seed: "sntryu_" + random_string(seed, HEX, 64),
    "google-api": lambda seed: "AIza" + random_string(seed, BASE64URL, 35),
    "openai-project": lambda seed: "sk-proj-" + random_string(seed, BASE64URL, 64),
    "openai-legacy": lambda seed: "sk-" + random_string(seed, ALNUM, 48),
    "anthropic": lambda seed: "sk-ant-api03-" + random_string(seed, BASE64URL, 93) + "AA",
    "npm": lambda seed: "npm_" + random_string(seed, ALNUM, 36),
    "pypi": lambda seed: "pypi-AgEIcHlwaS5vcmc" + random_string(seed, BASE64URL, 70),
    "sendgrid": lambda seed: "SG." + random_string(seed + "/a", BASE64URL, 22) + "." + random_string(seed + "/b", BASE64URL, 43),
    "twilio": lambda seed: "SK" + random_string(seed, HEX, 32),
    "shopify-access": lambda seed: "shpat_" + random_string(seed, HEX, 32),
    "shopify-shared-secret": lambda seed: "shpss_" + random_string(seed, HEX, 32),
    "vault": lambda seed: "hvs." + random_string(seed, ALNUM + "-_", 90),
    "digitalocean": lambda seed: "dop_v1_" + random_string(seed, HEX, 64),
}


def vendor_token(kind: str, label: str = "") -> str:
    """Return a token in the format of a well-known vendor (``kind`` is a key of _VENDOR_FORMATS)."""
    return _VENDOR_FORMATS[kind](f"vendor/{kind}/{label}")


def python_traceback(last_line: str, *frames: tuple[str, int, str, str]) -> str:
    """Format a traceback as ``exception.stacktrace`` records it: frames of (path, line, function, code)."""
    lines = ["Traceback (most recent call last):"]
    for path, lineno, function, code in frames:
        lines.append(f'  File "{path}", line {lineno}, in {function}')
        lines.append(f"    {code}")
    lines.append(last_line)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Shared values
# ---------------------------------------------------------------------------------------------

PG = {"db.system": "postgresql"}
MYSQL = {"db.system": "mysql"}
SQLITE = {"db.system": "sqlite"}
REDIS = {"db.system": "redis"}
SERVER = {"span.kind": "server"}
PROMPT_EVENT = {"event.name": "gen_ai.content.prompt"}

CHROME_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
TRACE_ID_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID_HEX = "00f067aa0ba902b7"

# Published test card numbers of the card networks (each passes the Luhn check).
VISA = "4111111111111111"
VISA_2 = "4242424242424242"
VISA_3 = "4012888888881881"
VISA_DEBIT = "4000056655665556"
VISA_13 = "4222222222222"
VISA_19 = with_luhn_digit("401288888888188100")
MASTERCARD = "5555555555554444"
MASTERCARD_2 = "5105105105105100"
MASTERCARD_2_SERIES = "2223003122003222"
AMEX = "378282246310005"
AMEX_2 = "371449635398431"
AMEX_3 = "378734493671000"
DISCOVER = "6011111111111117"
DISCOVER_2 = "6011000990139424"
DINERS = "30569309025904"
JCB = "3530111333300000"
UNIONPAY = "6200000000000005"

IBAN_DE = make_iban("DE", "100200300123456789")
IBAN_GB = make_iban("GB", "EXMP60161331926819")
IBAN_NL = make_iban("NL", "EXMP0417164300")
IBAN_FR = make_iban("FR", "3000600001123456789018")
IBAN_ES = make_iban("ES", "21000813610123456789")
IBAN_IT = make_iban("IT", "X0542811101000000123456")
IBAN_PL = make_iban("PL", "109010140000071219800001")
IBAN_BE = make_iban("BE", "510007547061")
IBAN_CH = make_iban("CH", "007620116238529X7")
IBAN_AT = make_iban("AT", "1904300234500001")
IBAN_FR_2 = make_iban("FR", "2004101005050001300M02")
IBAN_DE_2 = make_iban("DE", "500105170648489012")

SSNS = (
    "123-45-6789",
    "234-56-7890",
    "345-67-8901",
    "456-78-9012",
    "567-89-0123",
    "123-45-6780",
    "234-56-7801",
    "345-67-8012",
    "456-78-9123",
    "567-89-1234",
    "321-54-9876",
    "432-65-0987",
)

AWS_EXAMPLE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # the key id of AWS's own documentation
AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

RFC6750_TOKEN = "mF_9.B5f-4.1JqM"  # the example bearer token of RFC 6750


def _token(label: str, length: int = 32, alphabet: str = ALNUM) -> str:
    return random_string(f"token/{label}", alphabet, length)


def _leak(
    detector: str,
    name: str,
    location: str,
    key: str,
    value: object,
    secrets: str | tuple[str, ...],
    keep: str | tuple[str, ...] = (),
    context: Mapping[str, object] | None = None,
) -> Leak:
    if isinstance(secrets, str):
        secrets = (secrets,)
    if isinstance(keep, str):
        keep = (keep,)
    return Leak(f"{detector}/{name}", location, key, value, tuple(secrets), detector, tuple(keep), dict(context or {}))


def _keep(name: str, location: str, key: str, value: object, context: Mapping[str, object] | None = None) -> Keep:
    return Keep(f"keep/{location}/{name}", location, key, value, dict(context or {}))


# ---------------------------------------------------------------------------------------------
# Key rules
# ---------------------------------------------------------------------------------------------


def _secret_key_leaks() -> list[Leak]:
    rule = "secret-key"
    t = _token
    jwt_header = make_jwt("auth-header", {"sub": "usr_5521", "scope": "orders:write", "exp": 1714562130})
    pem = make_pem("attr-private-key")
    presign_key_id = aws_key_id("presign")
    presign_signature = random_string("presign-signature", HEX, 64)
    sas_signature = random_string("sas-signature", ALNUM, 43)
    percent_token = t("percent-token", 20) + "/" + t("percent-token-2", 12) + "+="
    percent_quoted = percent_token.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")
    sentry_credentials = {"username": "svc-export", "password": "Sentry-Data-Pw-2213"}
    return [
        # span attributes, every key word of the rule
        _leak(rule, "db.password", ATTRIBUTE, "db.password", "Pg-Attr-Pw-7781", "Pg-Attr-Pw-7781", context=PG),
        _leak(rule, "password", ATTRIBUTE, "password", "hunter2-Xk91", "hunter2-Xk91"),
        _leak(rule, "camel-case-password", ATTRIBUTE, "app.user.userPassword", "CamelCase-Pw-5531", "CamelCase-Pw-5531"),
        _leak(rule, "passwd", ATTRIBUTE, "app.smtp.passwd", "Passwd-Value-3318", "Passwd-Value-3318"),
        _leak(rule, "pwd", ATTRIBUTE, "app.mysql_pwd", "MyPwd-Value-9014", "MyPwd-Value-9014"),
        _leak(rule, "client-secret", ATTRIBUTE, "oauth.client_secret", t("client-secret"), t("client-secret")),
        _leak(rule, "secret", ATTRIBUTE, "app.secret", "s3cr3t-value-6641", "s3cr3t-value-6641"),
        _leak(rule, "token", ATTRIBUTE, "app.token", t("app-token"), t("app-token")),
        _leak(rule, "access-token", ATTRIBUTE, "app.access_token", t("access-token", 40), t("access-token", 40)),
        _leak(rule, "refresh-token", ATTRIBUTE, "app.refresh_token", t("refresh-token", 40), t("refresh-token", 40)),
        _leak(rule, "auth", ATTRIBUTE, "app.auth", "auth-blob-8823xq", "auth-blob-8823xq"),
        _leak(rule, "authorization", ATTRIBUTE, "app.authorization", "Token " + t("token-scheme"), t("token-scheme")),
        _leak(
            rule, "credentials", ATTRIBUTE, "app.credentials",
            '{"user": "svc-sync", "pass": "Cred-Pw-8810"}', "Cred-Pw-8810",
        ),
        _leak(rule, "credential", ATTRIBUTE, "app.credential", t("credential"), t("credential")),
        _leak(rule, "apikey", ATTRIBUTE, "app.apikey", t("apikey"), t("apikey")),
        _leak(rule, "api-key", ATTRIBUTE, "app.api_key", t("api-key"), t("api-key")),
        _leak(rule, "camel-case-api-key", ATTRIBUTE, "app.apiKey", t("camel-api-key"), t("camel-api-key")),
        _leak(rule, "header-style-api-key", ATTRIBUTE, "X-Api-Key", t("header-style-api-key"), t("header-style-api-key")),
        _leak(
            rule, "passphrase", ATTRIBUTE, "app.passphrase",
            "correct horse battery staple 4417", "correct horse battery staple 4417",
        ),
        _leak(rule, "csrf", ATTRIBUTE, "app.csrf", t("csrf"), t("csrf")),
        _leak(rule, "xsrf-token", ATTRIBUTE, "app.xsrf_token", t("xsrf"), t("xsrf")),
        _leak(rule, "ssn-key", ATTRIBUTE, "user.ssn", SSNS[0], SSNS[0]),
        _leak(rule, "cvv-int", ATTRIBUTE, "payment.cvv", 737, "737"),
        _leak(rule, "cvc", ATTRIBUTE, "payment.cvc", "4829", "4829"),
        _leak(rule, "pin-int", ATTRIBUTE, "user.pin", 48213, "48213"),
        _leak(rule, "jwt-key", ATTRIBUTE, "app.session.jwt", jwt_header, jwt_secrets(jwt_header)),
        _leak(
            rule, "signature", ATTRIBUTE, "webhook.signature",
            "t=1714558530,v1=" + random_string("webhook-signature", HEX, 64),
            random_string("webhook-signature", HEX, 64),
        ),
        _leak(rule, "sig", ATTRIBUTE, "app.sig", random_string("app-sig", HEX, 40), random_string("app-sig", HEX, 40)),
        _leak(rule, "private-key-pem", ATTRIBUTE, "app.private_key", pem, pem_secrets(pem)),
        _leak(rule, "camel-case-private-key", ATTRIBUTE, "app.privateKey", t("private-key", 44), t("private-key", 44)),
        _leak(
            rule, "secret-key-pair", ATTRIBUTE, "app.secret_key",
            "django-insecure-" + t("django-secret", 40), t("django-secret", 40),
        ),
        _leak(rule, "access-key", ATTRIBUTE, "app.access_key", t("access-key", 40), t("access-key", 40)),
        _leak(rule, "session-key", ATTRIBUTE, "app.session_key", t("session-key"), t("session-key")),
        _leak(rule, "card-number", ATTRIBUTE, "payment.card_number", "4111 1111 1111 1111", "4111 1111 1111 1111"),
        _leak(rule, "camel-case-card-number", ATTRIBUTE, "payment.cardNumber", MASTERCARD, MASTERCARD),
        _leak(rule, "credit-card-key", ATTRIBUTE, "payment.credit_card", AMEX, AMEX),
        _leak(rule, "security-code", ATTRIBUTE, "payment.security_code", "9023", "9023"),
        # captured headers, as OpenTelemetry's HTTP instrumentations record them (tuples of strings)
        _leak(
            rule, "authorization-bearer-header", ATTRIBUTE, "http.request.header.authorization",
            ("Bearer " + t("bearer-header", 40),), t("bearer-header", 40),
        ),
        _leak(
            rule, "authorization-jwt-header", ATTRIBUTE, "http.request.header.authorization",
            ("Bearer " + jwt_header,), jwt_secrets(jwt_header),
        ),
        _leak(
            rule, "authorization-basic-header", ATTRIBUTE, "http.request.header.authorization",
            ("Basic " + basic_credentials("shop-admin", "Hdr-Basic-Pw-6620"),),
            basic_credentials("shop-admin", "Hdr-Basic-Pw-6620"),
        ),
        _leak(
            rule, "proxy-authorization-header", ATTRIBUTE, "http.request.header.proxy_authorization",
            ("Basic " + basic_credentials("proxy-user", "Proxy-Pw-1181"),),
            basic_credentials("proxy-user", "Proxy-Pw-1181"),
        ),
        _leak(rule, "x-api-key-header", ATTRIBUTE, "http.request.header.x_api_key", (t("x-api-key"),), t("x-api-key")),
        _leak(
            rule, "x-api-key-header-dashes", ATTRIBUTE, "http.request.header.x-api-key",
            (t("x-api-key-dashes"),), t("x-api-key-dashes"),
        ),
        _leak(
            rule, "x-auth-token-header", ATTRIBUTE, "http.request.header.x_auth_token",
            (t("x-auth-token"),), t("x-auth-token"),
        ),
        _leak(rule, "csrf-header", ATTRIBUTE, "http.request.header.x_csrf_token", (t("csrf-header"),), t("csrf-header")),
        _leak(rule, "xsrf-header", ATTRIBUTE, "http.request.header.x_xsrf_token", (t("xsrf-header"),), t("xsrf-header")),
        _leak(
            rule, "gitlab-private-token-header", ATTRIBUTE, "http.request.header.private_token",
            (vendor_token("gitlab", "header"),), vendor_token("gitlab", "header"),
        ),
        _leak(rule, "datadog-api-key-header", ATTRIBUTE, "http.request.header.dd_api_key", (t("dd", 32, HEX),), t("dd", 32, HEX)),
        _leak(
            rule, "shopify-access-token-header", ATTRIBUTE, "http.request.header.x_shopify_access_token",
            (vendor_token("shopify-access", "header"),), vendor_token("shopify-access", "header"),
        ),
        _leak(
            rule, "stripe-signature-header", ATTRIBUTE, "http.request.header.stripe_signature",
            ("t=1714558530,v1=" + random_string("stripe-v1", HEX, 64) + ",v0=" + random_string("stripe-v0", HEX, 64),),
            (random_string("stripe-v1", HEX, 64), random_string("stripe-v0", HEX, 64)),
        ),
        _leak(
            rule, "github-webhook-signature-header", ATTRIBUTE, "http.request.header.x_hub_signature_256",
            ("sha256=" + random_string("hub-signature", HEX, 64),), random_string("hub-signature", HEX, 64),
        ),
        _leak(
            rule, "aws-security-token-header", ATTRIBUTE, "http.request.header.x_amz_security_token",
            (t("amz-security-token", 120, ALNUM + "+/"),), t("amz-security-token", 120, ALNUM + "+/"),
        ),
        _leak(
            rule, "google-api-key-header", ATTRIBUTE, "http.request.header.x_goog_api_key",
            (vendor_token("google-api", "header"),), vendor_token("google-api", "header"),
        ),
        # query parameters with a secret-looking name: the value goes, the name stays (a query
        # string is a list of key=value pairs, so the secret-assignment rule covers it)
        _leak(
            "secret-assignment", "url-full-api-key", ATTRIBUTE, "url.full",
            f"https://api.example.net/v1/export?format=csv&api_key={t('url-api-key')}&page=2",
            t("url-api-key"), keep=("format=csv", "api_key=", "page=2"),
        ),
        _leak(
            "secret-assignment", "url-full-token", ATTRIBUTE, "url.full",
            f"https://shop.example.com/reset?token={t('reset-token', 43, BASE64URL)}",
            t("reset-token", 43, BASE64URL), keep="https://shop.example.com/reset?token=",
        ),
        _leak(
            "secret-assignment", "http-url-apikey", ATTRIBUTE, "http.url",
            f"https://maps.example.com/geo?apikey={t('http-url-apikey')}&q=Berlin",
            t("http-url-apikey"), keep=("https://maps.example.com/geo?", "q=Berlin"),
        ),
        _leak(
            "secret-assignment", "http-target-access-token", ATTRIBUTE, "http.target",
            f"/oauth/callback?access_token={t('target-access-token', 40)}&state=af31c0e2",
            t("target-access-token", 40), keep=("/oauth/callback?", "state=af31c0e2"), context=SERVER,
        ),
        _leak(
            "secret-assignment", "url-query-password", ATTRIBUTE, "url.query",
            f"password={t('query-password', 16)}&remember=1", t("query-password", 16), keep="remember=1",
        ),
        _leak(
            "secret-assignment", "url-query-azure-sas-sig", ATTRIBUTE, "url.query",
            f"sp=r&sv=2022-11-02&sig={sas_signature}%3D", sas_signature, keep=("sp=r", "sv=2022-11-02"),
        ),
        _leak(
            "secret-assignment", "url-query-client-secret", ATTRIBUTE, "url.query",
            f"client_id=shop-web&client_secret={t('query-client-secret')}&grant_type=client_credentials",
            t("query-client-secret"), keep=("client_id=shop-web", "grant_type=client_credentials"),
        ),
        _leak(
            "secret-assignment", "url-full-s3-presigned", ATTRIBUTE, "url.full",
            "https://examplebucket.s3.amazonaws.com/invoices/8841.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential={presign_key_id}%2F20240501%2Feu-central-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date=20240501T101530Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={presign_signature}",
            (presign_key_id, presign_signature), keep=("X-Amz-Expires=3600", "X-Amz-SignedHeaders=host"),
        ),
        _leak(
            "secret-assignment", "url-full-percent-encoded-token", ATTRIBUTE, "url.full",
            f"https://api.example.net/v2/files?token={percent_quoted}&inline=1", percent_token, keep="inline=1",
        ),
        _leak(
            "secret-assignment", "http-target-jwt-parameter", ATTRIBUTE, "http.target",
            f"/api/v1/stream?jwt={jwt_header}", jwt_secrets(jwt_header), keep="/api/v1/stream?", context=SERVER,
        ),
        # span-event, link and resource attributes
        _leak(
            rule, "event-auth-password", EVENT, "auth.password", "Event-Pw-5190", "Event-Pw-5190",
            context={"event.name": "login.failed"},
        ),
        _leak(rule, "event-api-key", EVENT, "api_key", t("event-api-key"), t("event-api-key"), context={"event.name": "log"}),
        _leak(
            rule, "event-stripe-secret-key", EVENT, "stripe.secret_key", t("event-stripe-secret"), t("event-stripe-secret"),
            context={"event.name": "config.loaded"},
        ),
        _leak(rule, "link-auth-token", LINK, "auth.token", t("link-auth-token"), t("link-auth-token")),
        _leak(
            rule, "link-authorization-header", LINK, "messaging.header.authorization",
            "Bearer " + t("link-bearer", 40), t("link-bearer", 40),
        ),
        _leak(rule, "resource-smtp-password", RESOURCE, "app.config.smtp_password", "Smtp-Res-Pw-8842", "Smtp-Res-Pw-8842"),
        _leak(rule, "resource-auth-token", RESOURCE, "service.auth_token", t("resource-auth-token"), t("resource-auth-token")),
        _leak(rule, "resource-api-key", RESOURCE, "vendor.api_key", t("resource-api-key"), t("resource-api-key")),
        # Sentry events of an app's own sentry-sdk
        _leak(rule, "sentry-frame-password", SENTRY, "frame_vars.password", "hunter2-Frame-3391", "hunter2-Frame-3391"),
        _leak(rule, "sentry-frame-api-key", SENTRY, "frame_vars.api_key", t("frame-api-key"), t("frame-api-key")),
        _leak(rule, "sentry-frame-token", SENTRY, "frame_vars.token", t("frame-token", 40), t("frame-token", 40)),
        _leak(rule, "sentry-frame-card-number", SENTRY, "frame_vars.card_number", VISA_2, VISA_2),
        _leak(rule, "sentry-frame-cvv-int", SENTRY, "frame_vars.cvv", 7379, "7379"),
        _leak(
            rule, "sentry-frame-nested-cvc", SENTRY, "frame_vars.card",
            {"number": VISA_DEBIT, "cvc": "9474", "exp_month": 12}, ("9474", VISA_DEBIT),
        ),
        _leak(rule, "sentry-request-password", SENTRY, "request.data.password", "Req-Data-Pw-4478", "Req-Data-Pw-4478"),
        _leak(rule, "sentry-request-card-number", SENTRY, "request.data.card_number", MASTERCARD_2, MASTERCARD_2),
        _leak(rule, "sentry-request-cvc", SENTRY, "request.data.cvc", "6190", "6190"),
        _leak(
            rule, "sentry-request-credentials-object", SENTRY, "request.data.credentials",
            sentry_credentials, "Sentry-Data-Pw-2213",
        ),
        _leak(rule, "sentry-request-nested-card-number", SENTRY, "request.data.payment.card_number", DISCOVER, DISCOVER),
        _leak(
            rule, "sentry-authorization-header", SENTRY, "request.headers.Authorization",
            "Bearer " + t("sentry-bearer", 40), t("sentry-bearer", 40),
        ),
        _leak(rule, "sentry-api-key-header", SENTRY, "request.headers.X-Api-Key", t("sentry-x-api-key"), t("sentry-x-api-key")),
        _leak(rule, "sentry-csrf-header", SENTRY, "request.headers.X-CSRF-Token", t("sentry-csrf"), t("sentry-csrf")),
        _leak(rule, "sentry-extra-secret-key", SENTRY, "extra.stripe_secret_key", t("extra-stripe-secret"), t("extra-stripe-secret")),
        _leak(rule, "sentry-extra-spaced-api-key", SENTRY, "extra.API Key", t("extra-spaced-api-key"), t("extra-spaced-api-key")),
        _leak(
            "secret-assignment", "sentry-query-string-token", SENTRY, "request.query_string",
            f"token={t('sentry-query-token')}&step=payment", t("sentry-query-token"), keep="step=payment",
        ),
        _leak(
            "secret-assignment", "sentry-request-url-api-key", SENTRY, "request.url",
            f"https://shop.example.com/api/checkout?api_key={t('sentry-url-api-key')}",
            t("sentry-url-api-key"), keep="https://shop.example.com/api/checkout?",
        ),
    ]


def _cookie_leaks() -> list[Leak]:
    rule = "cookie"
    session = [random_string(f"sessionid/{index}", string.ascii_lowercase + string.digits, 32) for index in range(10)]
    csrf = [random_string(f"csrftoken/{index}", ALNUM, 32) for index in range(3)]
    return [
        _leak(
            rule, "cookie-header", ATTRIBUTE, "http.request.header.cookie",
            (f"sessionid={session[0]}; theme=dark; csrftoken={csrf[0]}",), (session[0], csrf[0]),
        ),
        _leak(
            rule, "set-cookie-header", ATTRIBUTE, "http.response.header.set_cookie",
            (f"sessionid={session[1]}; Path=/; HttpOnly; Secure; SameSite=Lax",), session[1],
        ),
        _leak(
            rule, "set-cookie-header-two-values", ATTRIBUTE, "http.response.header.set_cookie",
            (f"sessionid={session[2]}; Path=/; HttpOnly", f"csrftoken={csrf[1]}; Path=/; SameSite=Strict"),
            (session[2], csrf[1]),
        ),
        _leak(
            rule, "set-cookie-header-dashes", ATTRIBUTE, "http.response.header.set-cookie",
            (f"sessionid={session[3]}; Max-Age=1209600; Path=/",), session[3],
        ),
        _leak(
            rule, "cookie-header-with-analytics", ATTRIBUTE, "http.request.header.cookie",
            (f"_ga=GA1.2.1838420215.1714558530; sessionid={session[4]}",), session[4],
        ),
        _leak(rule, "sessionid-attribute", ATTRIBUTE, "app.sessionid", session[5], session[5]),
        _leak(rule, "request-cookie-attribute", ATTRIBUTE, "app.request.cookie", f"sessionid={session[6]}", session[6]),
        _leak(rule, "sentry-sessionid-cookie", SENTRY, "request.cookies.sessionid", session[7], session[7]),
        _leak(
            rule, "sentry-cookie-header", SENTRY, "request.headers.Cookie",
            f"sessionid={session[8]}; theme=dark; csrftoken={csrf[2]}", (session[8], csrf[2]),
        ),
        _leak(rule, "sentry-frame-sessionid", SENTRY, "frame_vars.sessionid", session[9], session[9]),
        _leak(
            rule, "sentry-extra-cookie", SENTRY, "extra.cookie",
            f"sessionid={random_string('sessionid/extra', HEX, 32)}", random_string("sessionid/extra", HEX, 32),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Value rules
# ---------------------------------------------------------------------------------------------


def _email_leaks() -> list[Leak]:
    rule = "email"
    not_found = {"exception.type": "shop.errors.UserNotFound"}
    smtp = {"exception.type": "smtplib.SMTPRecipientsRefused"}
    return [
        _leak(rule, "user-email", ATTRIBUTE, "user.email", "alice@example.org", "alice@example.org"),
        _leak(rule, "mixed-case", ATTRIBUTE, "app.customer.email", "Bob.Example@Example.COM", "Bob.Example@Example.COM"),
        _leak(
            rule, "recipient-list", ATTRIBUTE, "app.notify.recipients",
            ("carol+orders@example.net", "dave@example.com"), ("carol+orders@example.net", "dave@example.com"),
        ),
        _leak(
            rule, "inside-note", ATTRIBUTE, "app.note", "Customer frank@example.org asked for a refund",
            "frank@example.org", keep=("Customer ", " asked for a refund"),
        ),
        _leak(
            rule, "percent-encoded-url-full", ATTRIBUTE, "url.full",
            "https://api.example.com/v1/users?email=alice.k%40example.org&fields=id",
            "alice.k@example.org", keep=("https://api.example.com/v1/users?", "fields=id"),
        ),
        _leak(
            rule, "percent-encoded-url-query", ATTRIBUTE, "url.query", "email=gina%2Bnews%40example.net&sort=asc",
            "gina+news@example.net", keep="sort=asc", context=SERVER,
        ),
        _leak(
            rule, "url-path", ATTRIBUTE, "url.path", "/api/users/hank@example.com/orders", "hank@example.com",
            keep=("/api/users/", "/orders"), context=SERVER,
        ),
        _leak(
            rule, "http-target", ATTRIBUTE, "http.target", "/unsubscribe?addr=ivy@example.org&list=weekly",
            "ivy@example.org", keep=("/unsubscribe?", "list=weekly"), context=SERVER,
        ),
        _leak(
            rule, "display-name-address", ATTRIBUTE, "app.reply_to", "Shop Support <support-reply@example.org>",
            "support-reply@example.org",
        ),
        _leak(rule, "kafka-message-key", ATTRIBUTE, "messaging.kafka.message.key", "jon@example.net", "jon@example.net"),
        _leak(
            rule, "json-body", ATTRIBUTE, "app.request.body", '{"email": "kim@example.com", "plan": "pro"}',
            "kim@example.com", keep='"plan": "pro"',
        ),
        _leak(rule, "upper-case", ATTRIBUTE, "app.audit.actor", "LEO@EXAMPLE.NET", "LEO@EXAMPLE.NET"),
        _leak(rule, "subdomain", ATTRIBUTE, "app.invoice.recipient", "mia@mail.eu.example.com", "mia@mail.eu.example.com"),
        _leak(
            rule, "span-name-path", SPAN_NAME, "name", "GET /api/users/nina@example.org", "nina@example.org",
            keep="GET /api/users/",
        ),
        _leak(
            rule, "span-name-task", SPAN_NAME, "name", "send_welcome_email to oscar@example.com", "oscar@example.com",
            keep="send_welcome_email to ",
        ),
        _leak(
            rule, "exception-message", EVENT, "exception.message", "User paula@example.net not found",
            "paula@example.net", keep=("User ", " not found"), context=not_found,
        ),
        _leak(
            rule, "exception-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "ValueError: invalid recipient quinn@example.org",
                ("/srv/shop/mail.py", 41, "send_receipt", "raise ValueError(f'invalid recipient {to}')"),
            ),
            "quinn@example.org", keep=("Traceback (most recent call last):", "ValueError: invalid recipient "),
            context={"exception.type": "ValueError"},
        ),
        _leak(
            rule, "log-event", EVENT, "message", "password reset requested for rosa@example.com",
            "rosa@example.com", keep="password reset requested for ", context={"event.name": "log"},
        ),
        _leak(
            rule, "gen-ai-prompt", EVENT, "gen_ai.prompt", "Draft a reply to sam@example.org about the late delivery",
            "sam@example.org", keep=("Draft a reply to ", " about the late delivery"), context=PROMPT_EVENT,
        ),
        _leak(
            rule, "smtp-refused-message", EVENT, "exception.message",
            "{'tess@example.net': (550, b'5.1.1 User unknown')}", "tess@example.net", keep="5.1.1 User unknown",
            context=smtp,
        ),
        _leak(rule, "link-customer-email", LINK, "app.customer_email", "uma@example.net", "uma@example.net"),
        _leak(rule, "link-reported-by", LINK, "app.reported_by", "Reported by vera@example.org", "vera@example.org"),
        _leak(rule, "resource-service-owner", RESOURCE, "service.owner", "payments-team@example.com", "payments-team@example.com"),
        _leak(
            rule, "resource-command-line", RESOURCE, "process.command_line",
            "python manage.py createsuperuser --email walt@example.org --noinput", "walt@example.org",
            keep=("python manage.py createsuperuser --email ", " --noinput"),
        ),
        _leak(rule, "sentry-request-data", SENTRY, "request.data.email", "xena@example.com", "xena@example.com"),
        _leak(rule, "sentry-extra", SENTRY, "extra.customer_email", "yael@example.org", "yael@example.org"),
        _leak(
            rule, "sentry-breadcrumb", SENTRY, "breadcrumb.message", "sent receipt to yuri@example.net",
            "yuri@example.net", keep="sent receipt to ",
        ),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.recipient", "zoe@example.org", "zoe@example.org"),
        _leak(
            rule, "sentry-logentry", SENTRY, "logentry.formatted", "failed to charge customer abby@example.com",
            "abby@example.com", keep="failed to charge customer ",
        ),
        _leak(
            rule, "sentry-query-string", SENTRY, "request.query_string", "email=ben%40example.org&step=2",
            "ben@example.org", keep="step=2",
        ),
        _leak(
            rule, "sentry-exception-value", SENTRY, "exception.value",
            "{'cleo@example.net': (550, b'5.1.1 User unknown')}", "cleo@example.net", keep="5.1.1 User unknown",
            context=smtp,
        ),
        _leak(
            rule, "sentry-message", SENTRY, "message", "Invoice bounced for dina@example.com", "dina@example.com",
            keep="Invoice bounced for ",
        ),
    ]


def _credit_card_leaks() -> list[Leak]:
    rule = "credit-card"
    declined = {"exception.type": "stripe.error.CardError"}
    return [
        _leak(
            rule, "spaced-visa-in-note", ATTRIBUTE, "app.note",
            "customer typed 4111 1111 1111 1111 into the notes field", "4111 1111 1111 1111",
            keep=("customer typed ", " into the notes field"),
        ),
        _leak(rule, "dashed-mastercard", ATTRIBUTE, "app.payment.reference", "5555-5555-5555-4444", "5555-5555-5555-4444"),
        _leak(
            rule, "amex-groups-in-row", ATTRIBUTE, "app.import.row", "3782 822463 10005;12/29;Example Corp",
            "3782 822463 10005", keep=";12/29;Example Corp",
        ),
        _leak(
            rule, "url-query", ATTRIBUTE, "url.query", f"card={VISA_3}&amount=1999", VISA_3, keep="amount=1999",
            context=SERVER,
        ),
        _leak(rule, "csv-line", ATTRIBUTE, "app.csv_line", f"{DISCOVER},2029-12,ok", DISCOVER, keep=",2029-12,ok"),
        _leak(rule, "visa-13-digits", ATTRIBUTE, "app.legacy.pan_hint", VISA_13, VISA_13),
        _leak(
            rule, "visa-19-digits", ATTRIBUTE, "app.note", f"pasted {VISA_19} in chat", VISA_19,
            keep=("pasted ", " in chat"),
        ),
        _leak(
            rule, "span-name-path", SPAN_NAME, "name", f"POST /cards/{MASTERCARD}/verify", MASTERCARD,
            keep=("POST /cards/", "/verify"),
        ),
        _leak(rule, "span-name-amex", SPAN_NAME, "name", f"GET /wallet/{AMEX_2}", AMEX_2, keep="GET /wallet/"),
        _leak(
            rule, "exception-message", EVENT, "exception.message",
            f"card {VISA_DEBIT} was declined (insufficient_funds)", VISA_DEBIT,
            keep=("was declined (insufficient_funds)",), context=declined,
        ),
        _leak(
            rule, "exception-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                f"stripe.error.CardError: Request req_8841: card {VISA_2} was declined",
                ("/srv/shop/payments/stripe_gateway.py", 57, "charge", "return stripe.Charge.create(**params)"),
            ),
            VISA_2, keep="was declined", context=declined,
        ),
        _leak(
            rule, "log-event", EVENT, "message", "retrying charge for 5105-1051-0510-5100", "5105-1051-0510-5100",
            keep="retrying charge for ", context={"event.name": "log"},
        ),
        _leak(
            rule, "gen-ai-prompt", EVENT, "gen_ai.prompt", "why was my card 2223 0031 2200 3222 declined?",
            "2223 0031 2200 3222", keep=("why was my card ", " declined?"), context=PROMPT_EVENT,
        ),
        _leak(
            rule, "link-batch-row", LINK, "app.batch.row", f"{DINERS} | Example Corp", DINERS, keep=" | Example Corp",
        ),
        _leak(
            rule, "sentry-request-comment", SENTRY, "request.data.comment", "please use 3530 1113 3330 0000 instead",
            "3530 1113 3330 0000", keep=("please use ", " instead"),
        ),
        _leak(rule, "sentry-extra-row", SENTRY, "extra.raw_row", f"{UNIONPAY},2030-01", UNIONPAY, keep=",2030-01"),
        _leak(
            rule, "sentry-breadcrumb", SENTRY, "breadcrumb.message", f"card {VISA} tokenized", VISA,
            keep=" tokenized",
        ),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.line", f"{VISA_3}|12/29", VISA_3, keep="|12/29"),
        _leak(
            rule, "sentry-exception-value", SENTRY, "exception.value", f"invalid expiry for {AMEX_3}", AMEX_3,
            keep="invalid expiry for ",
        ),
        _leak(
            rule, "sentry-logentry", SENTRY, "logentry.formatted", f"charge failed for {DISCOVER_2}", DISCOVER_2,
            keep="charge failed for ",
        ),
    ]


def _iban_leaks() -> list[Leak]:
    rule = "iban"
    return [
        _leak(rule, "compact-attribute", ATTRIBUTE, "app.payout.account", IBAN_DE, IBAN_DE),
        _leak(
            rule, "grouped-in-note", ATTRIBUTE, "app.note", f"refund to {group_by_four(IBAN_GB)} approved",
            group_by_four(IBAN_GB), keep=("refund to ", " approved"),
        ),
        _leak(
            rule, "url-query", ATTRIBUTE, "url.query", f"iban={IBAN_NL}&currency=EUR", IBAN_NL, keep="currency=EUR",
            context=SERVER,
        ),
        _leak(rule, "span-name", SPAN_NAME, "name", f"GET /payouts/{IBAN_FR}", IBAN_FR, keep="GET /payouts/"),
        _leak(
            rule, "exception-message", EVENT, "exception.message",
            f"SEPA mandate rejected for {group_by_four(IBAN_ES)}", group_by_four(IBAN_ES),
            keep="SEPA mandate rejected for ", context={"exception.type": "shop.errors.MandateRejected"},
        ),
        _leak(
            rule, "log-event", EVENT, "message", f"payout scheduled to {IBAN_PL}", IBAN_PL,
            keep="payout scheduled to ", context={"event.name": "log"},
        ),
        _leak(
            rule, "gen-ai-prompt", EVENT, "gen_ai.prompt", f"my IBAN is {group_by_four(IBAN_IT)}, is it correct?",
            group_by_four(IBAN_IT), keep=("my IBAN is ", ", is it correct?"), context=PROMPT_EVENT,
        ),
        _leak(rule, "link-attribute", LINK, "app.payout.iban_display", IBAN_BE, IBAN_BE),
        _leak(rule, "sentry-request-data", SENTRY, "request.data.iban", IBAN_CH, IBAN_CH),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.iban", IBAN_AT, IBAN_AT),
        _leak(rule, "sentry-extra-grouped", SENTRY, "extra.payout_account", group_by_four(IBAN_FR_2), group_by_four(IBAN_FR_2)),
        _leak(
            rule, "sentry-breadcrumb", SENTRY, "breadcrumb.message", f"validated {IBAN_DE_2} for payout",
            IBAN_DE_2, keep=("validated ", " for payout"),
        ),
    ]


def _us_ssn_leaks() -> list[Leak]:
    rule = "us-ssn"
    return [
        _leak(rule, "tax-id-attribute", ATTRIBUTE, "app.applicant.tax_id", SSNS[0], SSNS[0]),
        _leak(
            rule, "in-note", ATTRIBUTE, "app.note", f"number on file {SSNS[1]} verified", SSNS[1],
            keep=("number on file ", " verified"),
        ),
        _leak(
            rule, "span-name", SPAN_NAME, "name", f"GET /employees/{SSNS[2]}/w2", SSNS[2],
            keep=("GET /employees/", "/w2"),
        ),
        _leak(
            rule, "exception-message", EVENT, "exception.message", f"record {SSNS[3]} failed validation", SSNS[3],
            keep=("record ", " failed validation"), context={"exception.type": "pydantic.ValidationError"},
        ),
        _leak(
            rule, "log-event", EVENT, "message", f"background check requested for {SSNS[4]}", SSNS[4],
            keep="background check requested for ", context={"event.name": "log"},
        ),
        _leak(
            rule, "gen-ai-prompt", EVENT, "gen_ai.prompt", f"my social is {SSNS[5]}, can you fill in the form",
            SSNS[5], keep=("my social is ", ", can you fill in the form"), context=PROMPT_EVENT,
        ),
        _leak(rule, "link-attribute", LINK, "app.subject_ref", SSNS[6], SSNS[6]),
        _leak(rule, "sentry-request-data", SENTRY, "request.data.tax_id", SSNS[7], SSNS[7]),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.tin", SSNS[8], SSNS[8]),
        _leak(rule, "sentry-extra", SENTRY, "extra.applicant_tin", SSNS[9], SSNS[9]),
        _leak(
            rule, "sentry-breadcrumb", SENTRY, "breadcrumb.message", f"looked up {SSNS[10]} in payroll", SSNS[10],
            keep=("looked up ", " in payroll"),
        ),
        _leak(
            rule, "sentry-exception-value", SENTRY, "exception.value", f"duplicate applicant {SSNS[11]}", SSNS[11],
            keep="duplicate applicant ",
        ),
    ]


def _jwt_leaks() -> list[Leak]:
    rule = "jwt"

    def token(label: str, **claims: object) -> str:
        base = {"sub": f"usr_{label}", "iat": 1714558530, "exp": 1714562130}
        base.update(claims)
        # Tokens from an identity provider (RS256 with a key id) and the app's own session tokens (HS256).
        if label.endswith("-kid"):
            return make_jwt(label, base, algorithm="RS256", key_id="2024-05")
        return make_jwt(label, base)

    tokens = {name: token(name) for name in (
        "verify-email", "magic-login", "debug-body", "invite", "exception", "stacktrace", "log", "prompt",
        "link", "sentry-extra", "sentry-crumb", "sentry-state", "sentry-frame", "sentry-exception", "assertion-kid",
    )}
    invalid_signature = {"exception.type": "jwt.exceptions.InvalidSignatureError"}
    return [
        _leak(
            rule, "url-full-query", ATTRIBUTE, "url.full", f"https://shop.example.com/verify-email?t={tokens['verify-email']}",
            jwt_secrets(tokens["verify-email"]), keep="https://shop.example.com/verify-email?t=",
        ),
        _leak(
            rule, "http-target-query", ATTRIBUTE, "http.target", f"/magic-login?code={tokens['magic-login']}&next=%2Fcart",
            jwt_secrets(tokens["magic-login"]), keep=("/magic-login?code=", "next=%2Fcart"), context=SERVER,
        ),
        _leak(
            rule, "debug-attribute", ATTRIBUTE, "app.debug.last_response", f"ok, session {tokens['debug-body']} issued",
            jwt_secrets(tokens["debug-body"]), keep=("ok, session ", " issued"),
        ),
        _leak(
            rule, "client-assertion-header", ATTRIBUTE, "http.request.header.x_client_assertion",
            (tokens["assertion-kid"],), jwt_secrets(tokens["assertion-kid"]),
        ),
        _leak(
            rule, "span-name", SPAN_NAME, "name", f"GET /invite/{tokens['invite']}", jwt_secrets(tokens["invite"]),
            keep="GET /invite/",
        ),
        _leak(
            rule, "exception-message", EVENT, "exception.message",
            f"Signature verification failed for {tokens['exception']}", jwt_secrets(tokens["exception"]),
            keep="Signature verification failed for ", context=invalid_signature,
        ),
        _leak(
            rule, "exception-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "shop.errors.SessionInvalid: Invalid crypto padding",
                ("/srv/shop/auth/sessions.py", 73, "load_session", f"claims = decoder.decode('{tokens['stacktrace']}')"),
            ),
            jwt_secrets(tokens["stacktrace"]), keep="shop.errors.SessionInvalid: Invalid crypto padding",
            context={"exception.type": "shop.errors.SessionInvalid"},
        ),
        _leak(
            rule, "log-event", EVENT, "message", f"refreshing session {tokens['log']}", jwt_secrets(tokens["log"]),
            keep="refreshing session ", context={"event.name": "log"},
        ),
        _leak(
            rule, "gen-ai-prompt", EVENT, "gen_ai.prompt", f"decode this please {tokens['prompt']}",
            jwt_secrets(tokens["prompt"]), keep="decode this please ", context=PROMPT_EVENT,
        ),
        _leak(
            rule, "link-attribute", LINK, "app.origin_request", f"GET /api/me?t={tokens['link']}",
            jwt_secrets(tokens["link"]), keep="GET /api/me?t=",
        ),
        _leak(
            rule, "sentry-extra", SENTRY, "extra.last_response", f"session {tokens['sentry-extra']}",
            jwt_secrets(tokens["sentry-extra"]), keep="session ",
        ),
        _leak(
            rule, "sentry-breadcrumb-url", SENTRY, "breadcrumb.data.url",
            f"https://api.example.com/v1/me?t={tokens['sentry-crumb']}", jwt_secrets(tokens["sentry-crumb"]),
            keep="https://api.example.com/v1/me?t=",
        ),
        _leak(
            rule, "sentry-query-string", SENTRY, "request.query_string",
            f"state={tokens['sentry-state']}&next=%2Fcart", jwt_secrets(tokens["sentry-state"]), keep="next=%2Fcart",
        ),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.raw", tokens["sentry-frame"], jwt_secrets(tokens["sentry-frame"])),
        _leak(
            rule, "sentry-exception-value", SENTRY, "exception.value",
            f"ExpiredSignatureError for {tokens['sentry-exception']}", jwt_secrets(tokens["sentry-exception"]),
            keep="ExpiredSignatureError for ",
        ),
    ]


def _bearer_leaks() -> list[Leak]:
    rule = "bearer"
    tokens = {name: random_string(f"bearer/{name}", BASE64URL, 40) for name in (
        "exception", "stacktrace", "link", "crumb", "extra", "frame", "logentry", "note",
    )}
    basic_exception = basic_credentials("svc-export", "Basic-Exc-Pw-4471")
    basic_note = basic_credentials("ops", "Basic-Note-Pw-1290")
    basic_sentry = basic_credentials("partner", "Basic-Sentry-Pw-5518")
    http_error = {"exception.type": "httpx.HTTPStatusError"}
    return [
        _leak(
            rule, "exception-message", EVENT, "exception.message",
            f"upstream returned 401 for Bearer {tokens['exception']}", tokens["exception"],
            keep="upstream returned 401 for Bearer ", context=http_error,
        ),
        _leak(
            rule, "exception-message-basic", EVENT, "exception.message",
            f"401 Client Error for url https://api.example.net/v1/export, sent Basic {basic_exception}",
            basic_exception, keep=("401 Client Error for url https://api.example.net/v1/export", "Basic "),
            context=http_error,
        ),
        _leak(
            rule, "exception-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                f"httpx.HTTPStatusError: 401 Unauthorized, request sent Bearer {tokens['stacktrace']}",
                ("/srv/shop/billing/client.py", 88, "fetch_invoice", "response.raise_for_status()"),
            ),
            tokens["stacktrace"], keep="request sent Bearer ", context=http_error,
        ),
        _leak(
            rule, "rfc6750-example-log-event", EVENT, "message", f"retrying with Bearer {RFC6750_TOKEN}",
            RFC6750_TOKEN, keep="retrying with Bearer ", context={"event.name": "log"},
        ),
        _leak(
            rule, "basic-in-note", ATTRIBUTE, "app.note", f"replayed request with Basic {basic_note} from the runbook",
            basic_note, keep=("replayed request with Basic ", " from the runbook"),
        ),
        _leak(
            rule, "bearer-in-debug-attribute", ATTRIBUTE, "app.debug.upstream_call",
            f"GET https://api.example.net/v1/me with Bearer {tokens['note']}", tokens["note"],
            keep="GET https://api.example.net/v1/me with Bearer ",
        ),
        _leak(rule, "link-attribute", LINK, "app.replay", f"Bearer {tokens['link']}", tokens["link"], keep="Bearer "),
        _leak(
            rule, "sentry-breadcrumb", SENTRY, "breadcrumb.message", f"calling billing with Bearer {tokens['crumb']}",
            tokens["crumb"], keep="calling billing with Bearer ",
        ),
        _leak(rule, "sentry-extra", SENTRY, "extra.upstream_header", f"Bearer {tokens['extra']}", tokens["extra"], keep="Bearer "),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.header", f"Bearer {tokens['frame']}", tokens["frame"], keep="Bearer "),
        _leak(rule, "sentry-request-data-basic", SENTRY, "request.data.note", f"Basic {basic_sentry}", basic_sentry, keep="Basic "),
        _leak(
            rule, "sentry-logentry", SENTRY, "logentry.formatted", f"refresh failed, Bearer {tokens['logentry']} rejected",
            tokens["logentry"], keep=("refresh failed, Bearer ", " rejected"),
        ),
    ]


def _private_key_leaks() -> list[Leak]:
    rule = "private-key"
    rsa = make_pem("rsa-attribute", "RSA PRIVATE KEY")
    ec_cut = make_pem("ec-cut", "EC PRIVATE KEY", lines=4, cut_after=2)
    openssh = make_pem("openssh-log", "OPENSSH PRIVATE KEY")
    pkcs8_escaped = make_pem("pkcs8-escaped").replace("\n", "\\n")
    openssh_attribute = make_pem("openssh-attribute", "OPENSSH PRIVATE KEY", lines=6)
    env_key = make_pem("env-dump")
    encrypted = make_pem("encrypted", "ENCRYPTED PRIVATE KEY")
    frame_pem = make_pem("frame-var")
    prompt_cut = make_pem("prompt-cut", "RSA PRIVATE KEY", cut_after=3)
    link_pem = make_pem("link", "EC PRIVATE KEY", lines=3)

    return [
        _leak(rule, "rsa-attribute", ATTRIBUTE, "app.config.github_app_pem", rsa, pem_secrets(rsa)),
        _leak(rule, "openssh-attribute", ATTRIBUTE, "app.ssh.deploy_material", openssh_attribute, pem_secrets(openssh_attribute)),
        _leak(
            rule, "cut-short-in-exception-message", EVENT, "exception.message",
            "('Could not deserialize key data.', '" + ec_cut.replace("\n", "\\n") + "')",
            pem_secrets(ec_cut), keep="Could not deserialize key data.", context={"exception.type": "ValueError"},
        ),
        _leak(
            rule, "openssh-log-event", EVENT, "message", "loaded deploy key\n" + openssh, pem_secrets(openssh),
            keep="loaded deploy key", context={"event.name": "log"},
        ),
        _leak(
            rule, "escaped-in-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "ValueError: Could not deserialize key data.",
                ("/srv/shop/signing.py", 19, "load_signer", f"key = load_pem_private_key(b'{pkcs8_escaped}', None)"),
            ),
            pem_secrets(pkcs8_escaped), keep="Could not deserialize key data.", context={"exception.type": "ValueError"},
        ),
        _leak(
            rule, "cut-short-gen-ai-prompt", EVENT, "gen_ai.prompt", "is this key valid?\n" + prompt_cut,
            pem_secrets(prompt_cut), keep="is this key valid?", context=PROMPT_EVENT,
        ),
        _leak(rule, "link-attribute", LINK, "app.signing_material", link_pem, pem_secrets(link_pem)),
        _leak(
            rule, "sentry-extra-env-dump", SENTRY, "extra.env_dump", "DEBUG=False\nTLS_KEY=" + env_key,
            pem_secrets(env_key), keep="DEBUG=False",
        ),
        _leak(rule, "sentry-request-data", SENTRY, "request.data.key_material", encrypted, pem_secrets(encrypted)),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.pem", frame_pem, pem_secrets(frame_pem)),
    ]


def _url_userinfo_leaks() -> list[Leak]:
    rule = "url-userinfo"
    dsn_key = random_string("dsn-key", HEX, 32)
    envelope_key = random_string("envelope-key", HEX, 32)
    git_token = random_string("git-oauth2", ALNUM, 40)
    return [
        _leak(
            rule, "db-connection-string", ATTRIBUTE, "db.connection_string",
            "postgresql://shop:Pg-Url-Pw-6612@db.internal.example.net:5432/shop", "Pg-Url-Pw-6612",
            keep=("postgresql://", "@db.internal.example.net:5432/shop"), context=PG,
        ),
        _leak(
            rule, "url-full", ATTRIBUTE, "url.full", "https://deploy:Dep-Url-Pw-2290@ci.example.com/api/v4/builds",
            "Dep-Url-Pw-2290", keep=("https://", "@ci.example.com/api/v4/builds"),
        ),
        _leak(
            rule, "token-only-http-url", ATTRIBUTE, "http.url",
            f"https://{envelope_key}@sentry.example.com/api/42/envelope/", envelope_key,
            keep="@sentry.example.com/api/42/envelope/",
        ),
        _leak(
            rule, "redis-empty-user", ATTRIBUTE, "app.cache_url",
            "redis://:Rds-Url-Pw-7713@cache.internal.example.net:6379/0", "Rds-Url-Pw-7713",
            keep="@cache.internal.example.net:6379/0",
        ),
        _leak(
            rule, "amqp-broker", ATTRIBUTE, "app.broker_url", "amqp://shop:Amqp-Url-Pw-5501@mq.internal.example.net:5672/shop",
            "Amqp-Url-Pw-5501", keep=("amqp://", "@mq.internal.example.net:5672/shop"),
        ),
        _leak(
            rule, "mongodb-srv", ATTRIBUTE, "app.mongo_uri",
            "mongodb+srv://app:Mongo-Url-Pw-3307@cluster0.example.net/shop?retryWrites=true&w=majority",
            "Mongo-Url-Pw-3307", keep=("@cluster0.example.net/shop?", "retryWrites=true"),
        ),
        _leak(
            rule, "percent-encoded-password", ATTRIBUTE, "app.database_url",
            "postgresql://shop:p%40ss%3Aw0rd-1717@db.internal.example.net:5432/shop", "p@ss:w0rd-1717",
            keep="@db.internal.example.net:5432/shop",
        ),
        _leak(
            rule, "git-oauth2-token", ATTRIBUTE, "url.full", f"https://oauth2:{git_token}@git.example.com/group/repo.git",
            git_token, keep="@git.example.com/group/repo.git",
        ),
        _leak(
            rule, "span-name", SPAN_NAME, "name", "GET https://svc:Span-Url-Pw-4403@api.example.net/v1/items",
            "Span-Url-Pw-4403", keep=("GET https://", "@api.example.net/v1/items"),
        ),
        _leak(
            rule, "exception-message", EVENT, "exception.message",
            "could not connect to postgresql://shop:Exc-Url-Pw-8824@db.internal.example.net:5432/shop (timeout)",
            "Exc-Url-Pw-8824", keep=("could not connect to postgresql://", "@db.internal.example.net:5432/shop (timeout)"),
            context={"exception.type": "sqlalchemy.exc.OperationalError"},
        ),
        _leak(
            rule, "exception-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "sqlalchemy.exc.ArgumentError: Could not parse SQLAlchemy URL from given URL string",
                ("/srv/shop/db.py", 12, "<module>",
                 "engine = create_engine('postgresql+psycopg://shop:Tb-Url-Pw-6108@db.internal.example.net/shop')"),
            ),
            "Tb-Url-Pw-6108", keep="Could not parse SQLAlchemy URL", context={"exception.type": "sqlalchemy.exc.ArgumentError"},
        ),
        _leak(
            rule, "log-event", EVENT, "message", "connecting to mysql://report:My-Url-Pw-4410@reports.example.net/warehouse",
            "My-Url-Pw-4410", keep=("connecting to mysql://", "@reports.example.net/warehouse"),
            context={"event.name": "log"},
        ),
        _leak(
            rule, "link-attribute", LINK, "messaging.url", "amqps://consumer:Link-Url-Pw-6631@mq.example.net/vhost",
            "Link-Url-Pw-6631", keep="@mq.example.net/vhost",
        ),
        _leak(
            rule, "resource-command-line", RESOURCE, "process.command_line",
            "celery -A shop worker --broker=redis://:Res-Url-Pw-5518@cache.example.net:6379/1", "Res-Url-Pw-5518",
            keep=("celery -A shop worker --broker=redis://", "@cache.example.net:6379/1"),
        ),
        _leak(
            rule, "resource-sentry-dsn", RESOURCE, "app.sentry_dsn",
            f"https://{dsn_key}@o450001.ingest.sentry.example.com/4500002", dsn_key,
            keep="@o450001.ingest.sentry.example.com/4500002",
        ),
        _leak(
            rule, "sentry-extra-database-url", SENTRY, "extra.DATABASE_URL",
            "postgresql://shop:Extra-Url-Pw-7120@db.internal.example.net/shop", "Extra-Url-Pw-7120",
            keep="@db.internal.example.net/shop",
        ),
        _leak(
            rule, "sentry-frame-dsn", SENTRY, "frame_vars.dsn",
            "mysql+pymysql://report:Frame-Url-Pw-3362@reports.example.net/warehouse", "Frame-Url-Pw-3362",
            keep="@reports.example.net/warehouse",
        ),
        _leak(
            rule, "sentry-breadcrumb-url", SENTRY, "breadcrumb.data.url",
            "https://bot:Crumb-Url-Pw-2219@hooks.example.com/notify", "Crumb-Url-Pw-2219", keep="@hooks.example.com/notify",
        ),
        _leak(
            rule, "sentry-request-data", SENTRY, "request.data.callback_url",
            "https://hook:Cb-Url-Pw-7782@partner.example.org/cb", "Cb-Url-Pw-7782", keep="@partner.example.org/cb",
        ),
        _leak(
            rule, "sentry-exception-value", SENTRY, "exception.value",
            "connection to postgresql://shop:SExc-Url-Pw-9013@db.internal.example.net/shop failed", "SExc-Url-Pw-9013",
            keep="@db.internal.example.net/shop failed",
        ),
    ]


def _aws_access_key_leaks() -> list[Leak]:
    rule = "aws-access-key"
    ids = {name: aws_key_id(name) for name in ("exception", "span-name", "resource", "link", "frame", "crumb", "stacktrace")}
    temporary = aws_key_id("temporary", "ASIA")
    temporary_sentry = aws_key_id("temporary-sentry", "ASIA")
    return [
        _leak(
            rule, "documentation-example", ATTRIBUTE, "app.note", f"rotated {AWS_EXAMPLE_KEY_ID} yesterday",
            AWS_EXAMPLE_KEY_ID, keep=("rotated ", " yesterday"),
        ),
        _leak(
            rule, "identity-attribute", ATTRIBUTE, "app.aws.identity", f"uploader via {ids['exception']}",
            ids["exception"], keep="uploader via ",
        ),
        _leak(rule, "span-name", SPAN_NAME, "name", f"sts GetCallerIdentity {ids['span-name']}", ids["span-name"], keep="sts GetCallerIdentity "),
        _leak(
            rule, "exception-message", EVENT, "exception.message",
            f"InvalidAccessKeyId when calling PutObject with key id {ids['stacktrace']}", ids["stacktrace"],
            keep="when calling PutObject with key id ", context={"exception.type": "botocore.exceptions.ClientError"},
        ),
        _leak(
            rule, "exception-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                f"botocore.exceptions.ClientError: ExpiredToken for {temporary}",
                ("/srv/shop/storage.py", 64, "upload_invoice", "s3.put_object(Bucket=bucket, Key=key, Body=body)"),
            ),
            temporary, keep="botocore.exceptions.ClientError: ExpiredToken for ",
            context={"exception.type": "botocore.exceptions.ClientError"},
        ),
        _leak(
            rule, "log-event-temporary", EVENT, "message", f"assumed role, temporary key id {temporary_sentry}",
            temporary_sentry, keep="assumed role, temporary key id ", context={"event.name": "log"},
        ),
        _leak(
            rule, "resource-command-line", RESOURCE, "process.command_line",
            f"aws configure set aws_access_key_id {ids['resource']} --profile ci", ids["resource"],
            keep=("aws configure set aws_access_key_id ", " --profile ci"),
        ),
        _leak(rule, "link-attribute", LINK, "aws.principal", ids["link"], ids["link"]),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.key_id", ids["frame"], ids["frame"]),
        _leak(
            rule, "sentry-breadcrumb", SENTRY, "breadcrumb.message", f"s3 upload as {ids['crumb']}", ids["crumb"],
            keep="s3 upload as ",
        ),
        _leak(
            rule, "sentry-extra", SENTRY, "extra.boto_debug",
            f"Found credentials in environment variables, using {AWS_EXAMPLE_KEY_ID}", AWS_EXAMPLE_KEY_ID,
            keep="Found credentials in environment variables, using ",
        ),
    ]


def _vendor_token_leaks() -> list[Leak]:
    rule = "vendor-token"

    def v(kind: str, label: str = "") -> str:
        return vendor_token(kind, label or kind)

    twine = {"exception.type": "twine.exceptions.UploadError"}
    return [
        _leak(
            rule, "github-classic-exception", EVENT, "exception.message",
            f"GitHub API returned 401 Bad credentials using {v('github-classic')}", v("github-classic"),
            keep="GitHub API returned 401 Bad credentials using ", context={"exception.type": "github.GithubException"},
        ),
        _leak(
            rule, "github-oauth-log-event", EVENT, "message", f"oauth exchange returned {v('github-oauth')}",
            v("github-oauth"), keep="oauth exchange returned ", context={"event.name": "log"},
        ),
        _leak(
            rule, "github-user-to-server-attribute", ATTRIBUTE, "app.note",
            f"user-to-server {v('github-user')} expires in 8h", v("github-user"), keep=("user-to-server ", " expires in 8h"),
        ),
        _leak(
            rule, "github-server-resource", RESOURCE, "process.command_line",
            f"deploy-helper --installation 4417 {v('github-server')}", v("github-server"),
            keep="deploy-helper --installation 4417 ",
        ),
        _leak(rule, "github-refresh-sentry-extra", SENTRY, "extra.refresh", v("github-refresh"), v("github-refresh")),
        _leak(
            rule, "github-fine-grained-prompt", EVENT, "gen_ai.prompt",
            f"my PAT {v('github-fine-grained')} stopped working", v("github-fine-grained"),
            keep=("my PAT ", " stopped working"), context=PROMPT_EVENT,
        ),
        _leak(
            rule, "gitlab-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "gitlab.exceptions.GitlabAuthenticationError: 401 Unauthorized",
                ("/srv/shop/ci/mirror.py", 30, "push", f"gl = gitlab.Gitlab(GITLAB_URL, private_token_value('{v('gitlab')}'))"),
            ),
            v("gitlab"), keep="401 Unauthorized", context={"exception.type": "gitlab.exceptions.GitlabAuthenticationError"},
        ),
        _leak(
            rule, "slack-bot-attribute", ATTRIBUTE, "app.slack.client", f"WebClient(base_url=slack.example.com, {v('slack-bot')})",
            v("slack-bot"), keep="WebClient(base_url=slack.example.com, ",
        ),
        _leak(rule, "slack-user-sentry-frame", SENTRY, "frame_vars.slack", v("slack-user"), v("slack-user")),
        _leak(
            rule, "stripe-live-url-key-parameter", ATTRIBUTE, "url.full",
            f"https://api.example.net/v1/charges?key={v('stripe-live')}&limit=3", v("stripe-live"),
            keep=("https://api.example.net/v1/charges?", "limit=3"),
        ),
        _leak(
            rule, "stripe-test-sentry-extra", SENTRY, "extra.settings", f"Settings(stripe={v('stripe-test')!r}, debug=False)",
            v("stripe-test"), keep="debug=False",
        ),
        _leak(rule, "stripe-restricted-live-link", LINK, "app.partner_client", v("stripe-restricted-live"), v("stripe-restricted-live")),
        _leak(
            rule, "stripe-restricted-test-log-event", EVENT, "message",
            f"using restricted key {v('stripe-restricted-test')} for reports", v("stripe-restricted-test"),
            keep=("using restricted key ", " for reports"), context={"event.name": "log"},
        ),
        _leak(
            rule, "stripe-webhook-exception", EVENT, "exception.message",
            f"webhook verification failed with {v('stripe-webhook')}", v("stripe-webhook"),
            keep="webhook verification failed with ", context={"exception.type": "stripe.error.SignatureVerificationError"},
        ),
        _leak(
            rule, "sentry-org-log-event", EVENT, "message", f"uploading sourcemaps with org token {v('sentry-org')}",
            v("sentry-org"), keep="uploading sourcemaps with org token ", context={"event.name": "log"},
        ),
        _leak(
            rule, "sentry-user-breadcrumb", SENTRY, "breadcrumb.message", f"release api called with {v('sentry-user')}",
            v("sentry-user"), keep="release api called with ",
        ),
        _leak(
            rule, "google-api-url-key-parameter", ATTRIBUTE, "url.full",
            f"https://maps.example.com/maps/api/geocode/json?address=Main+St&key={v('google-api')}", v("google-api"),
            keep=("https://maps.example.com/maps/api/geocode/json?", "address=Main+St"),
        ),
        _leak(
            rule, "google-api-span-name", SPAN_NAME, "name", f"GET /maps/api/js?key={v('google-api', 'span-name')}",
            v("google-api", "span-name"), keep="GET /maps/api/js?",
        ),
        _leak(
            rule, "openai-project-prompt", EVENT, "gen_ai.prompt", f"here is my key {v('openai-project')} - why is it rejected?",
            v("openai-project"), keep=("here is my key ", " - why is it rejected?"), context=PROMPT_EVENT,
        ),
        _leak(
            rule, "anthropic-exception", EVENT, "exception.message", f"request rejected for key {v('anthropic')}",
            v("anthropic"), keep="request rejected for key ", context={"exception.type": "anthropic.AuthenticationError"},
        ),
        _leak(rule, "openai-legacy-sentry-frame", SENTRY, "frame_vars.llm_client_key_hint", v("openai-legacy"), v("openai-legacy")),
        _leak(
            rule, "npm-attribute", ATTRIBUTE, "app.ci.log_line", f"npm notice publishing with {v('npm')}", v("npm"),
            keep="npm notice publishing with ",
        ),
        _leak(
            rule, "pypi-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "twine.exceptions.UploadError: 403 Forbidden from https://upload.pypi.example.org/legacy/",
                ("/srv/tools/release.py", 48, "upload", f"upload(dist, username='__token__', secret_value_of('{v('pypi')}'))"),
            ),
            v("pypi"), keep="403 Forbidden from https://upload.pypi.example.org/legacy/", context=twine,
        ),
        _leak(
            rule, "sendgrid-log-event", EVENT, "message", f"sendgrid client init {v('sendgrid')}", v("sendgrid"),
            keep="sendgrid client init ", context={"event.name": "log"},
        ),
        _leak(rule, "twilio-attribute", ATTRIBUTE, "app.twilio.key_sid", v("twilio"), v("twilio")),
        _leak(rule, "shopify-access-link", LINK, "shopify.session", v("shopify-access"), v("shopify-access")),
        _leak(rule, "shopify-shared-secret-sentry-request", SENTRY, "request.data.shared", v("shopify-shared-secret"), v("shopify-shared-secret")),
        _leak(
            rule, "vault-exception", EVENT, "exception.message", f"vault denied access for {v('vault')}", v("vault"),
            keep="vault denied access for ", context={"exception.type": "hvac.exceptions.Forbidden"},
        ),
        _leak(
            rule, "digitalocean-resource", RESOURCE, "process.command_line",
            f"doctl compute droplet list -t {v('digitalocean')}", v("digitalocean"), keep="doctl compute droplet list -t ",
        ),
        _leak(
            rule, "github-oauth-sentry-exception", SENTRY, "exception.value",
            f"401 from GitHub for {v('github-oauth', 'sentry')}", v("github-oauth", "sentry"), keep="401 from GitHub for ",
        ),
        _leak(
            rule, "slack-bot-span-name", SPAN_NAME, "name", f"POST /hooks/{v('slack-bot', 'span-name')}",
            v("slack-bot", "span-name"), keep="POST /hooks/",
        ),
    ]


def _secret_assignment_leaks() -> list[Leak]:
    rule = "secret-assignment"
    t = _token
    return [
        _leak(
            rule, "password-in-log-event", EVENT, "message", "login retry with password=Tr0ub4dor-8812 for svc-report",
            "Tr0ub4dor-8812", keep=("login retry with password=", " for svc-report"), context={"event.name": "log"},
        ),
        _leak(
            rule, "yaml-style-passwd", EVENT, "exception.message", "passwd: Qx7-Lm2-Pz44 is too short",
            "Qx7-Lm2-Pz44", keep=("passwd: ", " is too short"), context={"exception.type": "shop.errors.ConfigError"},
        ),
        _leak(
            rule, "json-api-key", ATTRIBUTE, "app.upstream.request_body", f'{{"api_key": "{t("json-api-key", 24)}", "plan": "pro"}}',
            t("json-api-key", 24), keep=('"api_key": ', '"plan": "pro"'),
        ),
        _leak(
            rule, "command-line-flag", RESOURCE, "process.command_line",
            "/usr/local/bin/python -m shop.sync --password=Cli-Flag-Pw-4411 --dry-run", "Cli-Flag-Pw-4411",
            keep=("--password=", " --dry-run"),
        ),
        _leak(
            rule, "environment-variable", RESOURCE, "process.command_line",
            "env DB_PASSWORD=Env-Var-Pw-2290 python -m shop.migrate", "Env-Var-Pw-2290",
            keep=("DB_PASSWORD=", " python -m shop.migrate"),
        ),
        _leak(
            rule, "raw-http-request", ATTRIBUTE, "app.raw_request",
            f"GET /v1/items HTTP/1.1\r\nHost: api.example.net\r\nX-Api-Key: {t('raw-x-api-key')}\r\nAccept: */*",
            t("raw-x-api-key"), keep=("Host: api.example.net", "X-Api-Key: ", "Accept: */*"),
        ),
        _leak(
            rule, "authorization-basic-line", ATTRIBUTE, "app.raw_header",
            f"Authorization: Basic {basic_credentials('ops-admin', 'Assign-Basic-Pw-3390')}",
            basic_credentials("ops-admin", "Assign-Basic-Pw-3390"), keep="Authorization: ",
        ),
        _leak(
            rule, "python-repr-in-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "pydantic_core._pydantic_core.ValidationError: 1 validation error for Settings",
                ("/srv/shop/settings.py", 22, "load", "return Settings(db_password='Repr-Pw-7731', debug=False)"),
            ),
            "Repr-Pw-7731", keep=("db_password=", "debug=False"), context={"exception.type": "pydantic_core.ValidationError"},
        ),
        _leak(
            rule, "token-colon-log-event", EVENT, "message", f"token: {t('colon-token')} issued for job 8841",
            t("colon-token"), keep=("token: ", " issued for job 8841"), context={"event.name": "log"},
        ),
        _leak(
            rule, "form-body", ATTRIBUTE, "app.form_body",
            f"grant_type=client_credentials&client_id=shop&client_secret={t('form-client-secret')}",
            t("form-client-secret"), keep=("grant_type=client_credentials", "client_id=shop", "client_secret="),
        ),
        _leak(
            rule, "django-secret-key-exception", EVENT, "exception.message",
            f"SECRET_KEY=django-insecure-{t('django-exc', 30)} must not be used in production", t("django-exc", 30),
            keep=("SECRET_KEY=", " must not be used in production"),
            context={"exception.type": "django.core.exceptions.ImproperlyConfigured"},
        ),
        _leak(
            rule, "sentry-extra-env-dump", SENTRY, "extra.env_dump",
            f"DEBUG=False\nSECRET_KEY={t('env-secret-key', 40)}\nALLOWED_HOSTS=shop.example.com", t("env-secret-key", 40),
            keep=("DEBUG=False", "SECRET_KEY=", "ALLOWED_HOSTS=shop.example.com"),
        ),
        _leak(
            rule, "sentry-breadcrumb", SENTRY, "breadcrumb.message", f"retrying login with password={t('crumb-password', 14)}",
            t("crumb-password", 14), keep="retrying login with password=",
        ),
        _leak(
            rule, "sentry-logentry", SENTRY, "logentry.formatted", f"upstream refused apikey={t('logentry-apikey')} scope=read",
            t("logentry-apikey"), keep=("upstream refused apikey=", " scope=read"),
        ),
        _leak(
            rule, "sentry-exception-value", SENTRY, "exception.value", f"unexpected field csrf_token={t('sentry-csrf-field')}",
            t("sentry-csrf-field"), keep="unexpected field csrf_token=",
        ),
        _leak(
            rule, "pin-in-link", LINK, "app.note", "pin=90417 reset requested", "90417", keep=("pin=", " reset requested"),
        ),
        _leak(
            rule, "span-name-command", SPAN_NAME, "name", "exec backup.sh --password=Span-Assign-Pw-2207",
            "Span-Assign-Pw-2207", keep="exec backup.sh --password=",
        ),
        _leak(
            rule, "passphrase-prompt", EVENT, "gen_ai.prompt",
            "my config has passphrase: violet-anchor-quarry-88 is that safe?", "violet-anchor-quarry-88",
            keep=("my config has passphrase: ", " is that safe?"), context=PROMPT_EVENT,
        ),
        _leak(
            rule, "yaml-credentials-exception", EVENT, "exception.message",
            f"could not parse line 4: credentials: {t('yaml-credentials', 24)}", t("yaml-credentials", 24),
            keep=("could not parse line 4: ", "credentials: "), context={"exception.type": "yaml.scanner.ScannerError"},
        ),
        _leak(
            rule, "signature-kwargs", ATTRIBUTE, "app.debug.kwargs",
            f"signature={random_string('kwargs-signature', HEX, 40)} ts=1714558530",
            random_string("kwargs-signature", HEX, 40), keep=("signature=", " ts=1714558530"),
        ),
        _leak(
            rule, "api-key-flag", ATTRIBUTE, "app.job.args", f"--api-key={t('job-api-key')} --limit=100",
            t("job-api-key"), keep=("--api-key=", " --limit=100"),
        ),
        _leak(
            rule, "sentry-frame-command", SENTRY, "frame_vars.cmd",
            "psql --host=db.internal.example.net --password=Frame-Assign-Pw-6631", "Frame-Assign-Pw-6631",
            keep=("psql --host=db.internal.example.net --password=",),
        ),
        _leak(
            rule, "sentry-request-raw-body", SENTRY, "request.data.raw", "username=svc&password=Raw-Body-Pw-1842",
            "Raw-Body-Pw-1842", keep=("username=svc", "password="),
        ),
        _leak(
            rule, "json-auth-in-exception", EVENT, "exception.message",
            f'Expecting property name in {{"auth": "{t("json-auth", 24)}", "v": 2', t("json-auth", 24),
            keep=('"auth": ', '"v": 2'), context={"exception.type": "json.decoder.JSONDecodeError"},
        ),
        _leak(
            rule, "secret-in-attribute-text", ATTRIBUTE, "app.debug.env_line", f"STRIPE_SECRET={t('env-line-secret')}",
            t("env-line-secret"), keep="STRIPE_SECRET=",
        ),
    ]


def _ip_address_leaks() -> list[Leak]:
    rule = "ip-address"
    connect = {"exception.type": "ConnectionRefusedError"}
    return [
        _leak(rule, "client-address", ATTRIBUTE, "client.address", "203.0.113.9", "203.0.113.9", context=SERVER),
        _leak(rule, "http-client-ip", ATTRIBUTE, "http.client_ip", "198.51.100.23", "198.51.100.23", context=SERVER),
        _leak(rule, "net-peer-ip", ATTRIBUTE, "net.peer.ip", "192.0.2.44", "192.0.2.44", context=SERVER),
        _leak(rule, "network-peer-address-server", ATTRIBUTE, "network.peer.address", "203.0.113.71", "203.0.113.71", context=SERVER),
        _leak(
            rule, "client-address-ipv6", ATTRIBUTE, "client.address", "2001:db8:85a3::8a2e:370:7334",
            "2001:db8:85a3::8a2e:370:7334", context=SERVER,
        ),
        _leak(rule, "client-address-ipv4-mapped", ATTRIBUTE, "client.address", "::ffff:203.0.113.7", "203.0.113.7", context=SERVER),
        _leak(
            rule, "x-forwarded-for-header", ATTRIBUTE, "http.request.header.x_forwarded_for",
            ("203.0.113.195, 198.51.100.17",), ("203.0.113.195", "198.51.100.17"),
        ),
        _leak(rule, "x-real-ip-header", ATTRIBUTE, "http.request.header.x_real_ip", ("192.0.2.61",), "192.0.2.61"),
        _leak(
            rule, "forwarded-header", ATTRIBUTE, "http.request.header.forwarded",
            ("for=192.0.2.60;proto=https;by=203.0.113.43",), ("192.0.2.60", "203.0.113.43"), keep="proto=https",
        ),
        _leak(
            rule, "allow-list-note", ATTRIBUTE, "app.note", "allow-listed 198.51.100.12 and 198.51.100.250 for exports",
            ("198.51.100.12", "198.51.100.250"), keep=("allow-listed ", " for exports"),
        ),
        _leak(
            rule, "exception-message", EVENT, "exception.message", "connection to 10.20.30.40:5432 refused",
            "10.20.30.40", keep=("connection to ", ":5432 refused"), context=connect,
        ),
        _leak(
            rule, "exception-message-ipv6", EVENT, "exception.message",
            "[Errno 111] Connect call failed ('2001:db8:1::5', 443, 0, 0)", "2001:db8:1::5",
            keep="[Errno 111] Connect call failed (", context=connect,
        ),
        _leak(
            rule, "log-event", EVENT, "message", "rate limit hit by 198.51.100.99 (12 requests in 1.0s)", "198.51.100.99",
            keep=("rate limit hit by ", " (12 requests in 1.0s)"), context={"event.name": "log"},
        ),
        _leak(rule, "span-name", SPAN_NAME, "name", "connect 192.0.2.144:6379", "192.0.2.144", keep="connect "),
        _leak(rule, "link-client-address", LINK, "client.address", "203.0.113.12", "203.0.113.12"),
        _leak(rule, "sentry-remote-addr", SENTRY, "request.env.REMOTE_ADDR", "203.0.113.5", "203.0.113.5"),
        _leak(rule, "sentry-forwarded-for", SENTRY, "request.headers.X-Forwarded-For", "198.51.100.8", "198.51.100.8"),
        _leak(rule, "sentry-extra", SENTRY, "extra.client_ip", "192.0.2.33", "192.0.2.33"),
        _leak(
            rule, "sentry-breadcrumb-ipv6", SENTRY, "breadcrumb.message", "blocked 2001:db8:ffff::42 after 5 attempts",
            "2001:db8:ffff::42", keep=("blocked ", " after 5 attempts"),
        ),
        _leak(rule, "sentry-frame-var", SENTRY, "frame_vars.remote_addr", "198.51.100.77", "198.51.100.77"),
    ]


# ---------------------------------------------------------------------------------------------
# Database rules
# ---------------------------------------------------------------------------------------------


def _sql_literal_leaks() -> list[Leak]:
    rule = "sql-literal"
    bcrypt_hash = "$2b$12$" + random_string("bcrypt", ALNUM + "./", 53)
    return [
        _leak(
            rule, "string-with-email", ATTRIBUTE, "db.statement",
            "SELECT id, email FROM users WHERE email = 'erin.example@example.com'", "erin.example@example.com",
            keep="SELECT id, email FROM users WHERE email = ", context=PG,
        ),
        _leak(
            rule, "two-strings", ATTRIBUTE, "db.statement",
            "SELECT * FROM customers WHERE last_name = 'Examplesson' AND birth_date = '1984-03-12'",
            ("Examplesson", "1984-03-12"), keep=("SELECT * FROM customers WHERE last_name = ", " AND birth_date = "), context=PG,
        ),
        _leak(
            rule, "decimal-and-string", ATTRIBUTE, "db.statement",
            "UPDATE accounts SET balance = 1520.75 WHERE account_no = 'ACC-55821'", ("1520.75", "ACC-55821"),
            keep=("UPDATE accounts SET balance = ", " WHERE account_no = "), context=PG,
        ),
        _leak(
            rule, "insert-values", ATTRIBUTE, "db.statement",
            "INSERT INTO payments (order_id, card_last4, amount_cents) VALUES (904512, '4242', 129990)",
            ("904512", "129990"), keep="INSERT INTO payments (order_id, card_last4, amount_cents) VALUES (", context=PG,
        ),
        _leak(
            rule, "hex-number", ATTRIBUTE, "db.statement", "DELETE FROM sessions WHERE token_hash = 0x9F3A7C21E4B8",
            "9F3A7C21E4B8", keep="DELETE FROM sessions WHERE token_hash = ", context=MYSQL,
        ),
        _leak(
            rule, "in-list", ATTRIBUTE, "db.statement", "SELECT * FROM orders WHERE id IN (771201, 771202, 771203)",
            ("771201", "771202", "771203"), keep="SELECT * FROM orders WHERE id IN (", context=PG,
        ),
        _leak(
            rule, "string-in-list", ATTRIBUTE, "db.statement",
            "SELECT * FROM users WHERE username NOT IN ('kasia.example', 'lars.example')",
            ("kasia.example", "lars.example"), keep="SELECT * FROM users WHERE username NOT IN (", context=PG,
        ),
        _leak(
            rule, "password-hash-literal", ATTRIBUTE, "db.statement",
            f"UPDATE users SET password_hash = '{bcrypt_hash}' WHERE id = 55012", (bcrypt_hash[7:], "55012"),
            keep="UPDATE users SET password_hash = ", context=PG,
        ),
        _leak(
            rule, "backtick-identifiers", ATTRIBUTE, "db.statement",
            "SELECT * FROM `users` WHERE `phone` = '+1-202-555-0178'", "202-555-0178",
            keep="SELECT * FROM `users` WHERE `phone` = ", context=MYSQL,
        ),
        _leak(
            rule, "ip-in-literal", ATTRIBUTE, "db.statement",
            "INSERT INTO audit_log (actor, action, ip) VALUES ('svc-billing-7', 'refund', '203.0.113.77')",
            ("svc-billing-7", "203.0.113.77"), keep="INSERT INTO audit_log (actor, action, ip) VALUES (", context=PG,
        ),
        _leak(
            rule, "dollar-quoted", ATTRIBUTE, "db.statement", "SELECT set_config('app.tenant', $$tenant-zq81-px$$, false)",
            "tenant-zq81-px", keep=("SELECT set_config(", ", false)"), context=PG,
        ),
        _leak(
            rule, "national-string", ATTRIBUTE, "db.statement", "SELECT * FROM Customers WHERE FullName = N'Zofia Przykład'",
            "Zofia Przykład", keep="SELECT * FROM Customers WHERE FullName = ", context={"db.system": "mssql"},
        ),
        _leak(
            rule, "negative-number", ATTRIBUTE, "db.statement", "UPDATE ledger SET delta = -250.75 WHERE entry_id = 8812301",
            ("250.75", "8812301"), keep="UPDATE ledger SET delta = ", context=PG,
        ),
        _leak(
            rule, "comment-kept", ATTRIBUTE, "db.statement",
            "/* request_id=af31c0e2 */ SELECT * FROM users WHERE email = 'yusuf@example.org'", "yusuf@example.org",
            keep=("/* request_id=af31c0e2 */", "SELECT * FROM users WHERE email = "), context=PG,
        ),
        _leak(
            rule, "sqlite-insert", ATTRIBUTE, "db.statement",
            "INSERT INTO customers (name, email) VALUES ('Quinn Example', 'quinn.c@example.net')",
            ("Quinn Example", "quinn.c@example.net"), keep="INSERT INTO customers (name, email) VALUES (", context=SQLITE,
        ),
        _leak(
            rule, "token-literal", ATTRIBUTE, "db.statement",
            f"SELECT * FROM api_clients WHERE id = 42 AND api_token = 'tok_{_token('sql-token', 24)}'",
            _token("sql-token", 24), keep=("SELECT * FROM api_clients WHERE id = ", " AND api_token = "), context=PG,
        ),
        _leak(
            rule, "procedure-call", ATTRIBUTE, "db.statement", "CALL refund_order(551203, 'duplicate charge by Ola')",
            ("551203", "duplicate charge by Ola"), keep="CALL refund_order(", context=MYSQL,
        ),
        _leak(
            rule, "hex-string", ATTRIBUTE, "db.statement", "SELECT * FROM accounts WHERE iban_hash = X'1F2E3D4C5B6A'",
            "1F2E3D4C5B6A", keep="SELECT * FROM accounts WHERE iban_hash = ", context=MYSQL,
        ),
        _leak(
            rule, "ssn-literal", ATTRIBUTE, "db.statement", f"UPDATE employees SET ssn = '{SSNS[1]}' WHERE id = 88127",
            (SSNS[1], "88127"), keep=("UPDATE employees SET ssn = ", " WHERE id = "), context=PG,
        ),
        _leak(
            rule, "iban-literal", ATTRIBUTE, "db.query.text", f"SELECT * FROM payouts WHERE iban = '{IBAN_AT}'", IBAN_AT,
            keep="SELECT * FROM payouts WHERE iban = ", context={"db.system.name": "postgresql"},
        ),
        _leak(
            rule, "query-text-limit", ATTRIBUTE, "db.query.text",
            "SELECT * FROM orders WHERE customer_ref = 'CUST-330918' LIMIT 50", "CUST-330918",
            keep=("SELECT * FROM orders WHERE customer_ref = ", " LIMIT "), context={"db.system.name": "mysql"},
        ),
        _leak(
            rule, "escaped-quote", ATTRIBUTE, "db.statement", "SELECT * FROM notes WHERE body = 'O''Example owes 310.40'",
            ("Example owes 310.40",), keep="SELECT * FROM notes WHERE body = ", context=PG,
        ),
        _leak(
            rule, "multi-line", ATTRIBUTE, "db.statement",
            "SELECT o.id\nFROM orders o\nJOIN customers c ON c.id = o.customer_id\nWHERE c.postcode = 'EX1 2MP'",
            "EX1 2MP", keep=("JOIN customers c ON c.id = o.customer_id", "WHERE c.postcode = "), context=PG,
        ),
        _leak(
            rule, "exception-message", EVENT, "exception.message",
            "(sqlite3.OperationalError) no such column: emial\n"
            "[SQL: SELECT * FROM users WHERE emial = 'frank.q@example.org']\n"
            "(Background on this error at: https://sqlalche.me/e/20/e3q8)",
            "frank.q@example.org", keep=("no such column: emial", "[SQL: SELECT * FROM users WHERE emial = "),
            context={"exception.type": "sqlalchemy.exc.OperationalError", **SQLITE},
        ),
        _leak(
            rule, "exception-message-name", EVENT, "exception.message",
            "(psycopg2.errors.UndefinedTable) relation \"customer\" does not exist\n"
            "[SQL: SELECT * FROM customer WHERE last_name = 'Nowakowska-Example']",
            "Nowakowska-Example", keep="[SQL: SELECT * FROM customer WHERE last_name = ",
            context={"exception.type": "sqlalchemy.exc.ProgrammingError", **PG},
        ),
    ]


def _sql_parameters_leaks() -> list[Leak]:
    rule = "sql-parameters"
    integrity = {"exception.type": "sqlalchemy.exc.IntegrityError", **PG}
    unique_email = (
        "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint \"users_email_key\"\n"
        "DETAIL:  Key (email)=(alice.kowalski@example.org) already exists.\n\n"
        "[SQL: INSERT INTO users (email, full_name) VALUES (%(email)s, %(full_name)s) RETURNING users.id]\n"
        "[parameters: {'email': 'alice.kowalski@example.org', 'full_name': 'Alicja Examplewska'}]\n"
        "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )
    batch = (
        "(sqlite3.IntegrityError) UNIQUE constraint failed: customers.email\n"
        "[SQL: INSERT INTO customers (name, email) VALUES (?, ?)]\n"
        "[parameters: [('Ava Example', 'ava@example.org'), ('Ben Example', 'ben.b@example.org'), "
        "('Cleo Example', 'cleo.c@example.org')]]\n"
        "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )
    return [
        _leak(
            rule, "unique-violation-key-and-parameters", EVENT, "exception.message", unique_email,
            ("alice.kowalski@example.org", "Alicja Examplewska"),
            keep=(
                "duplicate key value violates unique constraint",
                "[SQL: INSERT INTO users (email, full_name) VALUES (%(email)s, %(full_name)s) RETURNING users.id]",
                "https://sqlalche.me/e/20/gkpj",
            ),
            context=integrity,
        ),
        _leak(
            rule, "psycopg3-phone", EVENT, "exception.message",
            "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint \"customers_phone_key\"\n"
            "DETAIL:  Key (phone)=(+1-202-555-0199) already exists.\n"
            "[SQL: INSERT INTO customers (phone, name) VALUES (%(phone)s::VARCHAR, %(name)s::VARCHAR)]\n"
            "[parameters: {'phone': '+1-202-555-0199', 'name': 'Yuki Example'}]",
            ("202-555-0199", "Yuki Example"), keep="INSERT INTO customers (phone, name)", context=integrity,
        ),
        _leak(
            rule, "batch-insert-rows", EVENT, "exception.message", batch,
            ("Ava Example", "ava@example.org", "Ben Example", "ben.b@example.org", "Cleo Example", "cleo.c@example.org"),
            keep=("UNIQUE constraint failed: customers.email", "[SQL: INSERT INTO customers (name, email) VALUES (?, ?)]"),
            context={"exception.type": "sqlalchemy.exc.IntegrityError", **SQLITE},
        ),
        _leak(
            rule, "batch-insert-truncated", EVENT, "exception.message",
            "(psycopg2.errors.ForeignKeyViolation) insert or update on table \"order_items\" violates foreign key "
            "constraint \"order_items_order_id_fkey\"\n"
            "DETAIL:  Key (order_id)=(99120) is not present in table \"orders\".\n"
            "[SQL: INSERT INTO order_items (order_id, sku, gift_note) VALUES (%(order_id)s, %(sku)s, %(gift_note)s)]\n"
            "[parameters: ({'order_id': 99120, 'sku': 'SKU-2231', 'gift_note': 'Happy birthday Marta Example'}, "
            "{'order_id': 99120, 'sku': 'SKU-2232', 'gift_note': 'For Piotr Example'} "
            "... displaying 10 of 500 total bound parameter sets ... "
            "{'order_id': 99121, 'sku': 'SKU-9', 'gift_note': 'Love, Ines Example'})]",
            ("Marta Example", "Piotr Example", "Ines Example", "99120"),
            keep="violates foreign key constraint", context=integrity,
        ),
        _leak(
            rule, "asyncpg-detail", EVENT, "exception.message",
            "(sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class 'asyncpg.exceptions.UniqueViolationError'>: "
            "duplicate key value violates unique constraint \"users_email_key\"\n"
            "DETAIL:  Key (email)=(gus.example@example.com) already exists.\n"
            "[SQL: INSERT INTO users (email) VALUES ($1::VARCHAR) RETURNING users.id]\n"
            "[parameters: ('gus.example@example.com',)]",
            "gus.example@example.com", keep="[SQL: INSERT INTO users (email) VALUES ($1::VARCHAR) RETURNING users.id]",
            context=integrity,
        ),
        _leak(
            rule, "failing-row-not-null", EVENT, "exception.message",
            "(psycopg2.errors.NotNullViolation) null value in column \"email\" of relation \"users\" violates not-null "
            "constraint\nDETAIL:  Failing row contains (8812, Hana Example, null, 2024-05-01 10:15:30.123+00).",
            ("Hana Example", "8812,"), keep="violates not-null constraint", context=integrity,
        ),
        _leak(
            rule, "failing-row-check", EVENT, "exception.message",
            "(psycopg2.errors.CheckViolation) new row for relation \"payouts\" violates check constraint "
            f"\"payouts_amount_check\"\nDETAIL:  Failing row contains (4411, {IBAN_BE}, -20.00, Olga Example).",
            (IBAN_BE, "Olga Example"), keep="violates check constraint", context=integrity,
        ),
        _leak(
            rule, "mysql-duplicate-entry", EVENT, "exception.message",
            "(pymysql.err.IntegrityError) (1062, \"Duplicate entry 'ivy.m@example.net' for key 'users.email'\")\n"
            "[SQL: INSERT INTO users (email, display_name) VALUES (%(email)s, %(display_name)s)]\n"
            "[parameters: {'email': 'ivy.m@example.net', 'display_name': 'Ivy Example'}]",
            ("ivy.m@example.net", "Ivy Example"), keep="[SQL: INSERT INTO users (email, display_name)",
            context={"exception.type": "sqlalchemy.exc.IntegrityError", **MYSQL},
        ),
        _leak(
            rule, "data-error-dict", EVENT, "exception.message",
            "(psycopg2.errors.StringDataRightTruncation) value too long for type character varying(20)\n"
            "[SQL: UPDATE customers SET nickname=%(nickname)s WHERE customers.id = %(id_1)s]\n"
            "[parameters: {'nickname': 'Mx. Verylongnickname Example', 'id_1': 88120}]",
            ("Verylongnickname Example", "88120"), keep="value too long for type character varying(20)",
            context={"exception.type": "sqlalchemy.exc.DataError", **PG},
        ),
        _leak(
            rule, "tuple-parameters", EVENT, "exception.message",
            "(psycopg2.errors.InvalidDatetimeFormat) invalid input syntax for type date: \"1990-02-30\"\n"
            "[SQL: INSERT INTO members (name, email, born) VALUES (%s, %s, %s)]\n"
            "[parameters: ('Olek Example', 'olek@example.com', '1990-02-30')]",
            ("Olek Example", "olek@example.com"), keep="[SQL: INSERT INTO members (name, email, born) VALUES (%s, %s, %s)]",
            context={"exception.type": "sqlalchemy.exc.DataError", **PG},
        ),
        _leak(
            rule, "composite-key", EVENT, "exception.message",
            "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint \"invoices_ref_key\"\n"
            "DETAIL:  Key (tenant_id, external_ref)=(42, INV-2024-00981-Example) already exists.",
            "INV-2024-00981-Example", keep="duplicate key value violates unique constraint", context=integrity,
        ),
        _leak(
            rule, "batch-insert-in-stacktrace", EVENT, "exception.stacktrace",
            python_traceback(
                "sqlalchemy.exc.IntegrityError: " + batch.replace("'Ava Example', 'ava@example.org'", "'Dora Example', 'dora@example.org'"),
                ("/srv/shop/importer.py", 77, "import_customers", "session.execute(insert(Customer), rows)"),
            ),
            ("Dora Example", "dora@example.org", "Ben Example", "ben.b@example.org"),
            keep="[SQL: INSERT INTO customers (name, email) VALUES (?, ?)]",
            context={"exception.type": "sqlalchemy.exc.IntegrityError", **SQLITE},
        ),
        _leak(
            rule, "sentry-exception-value", SENTRY, "exception.value",
            "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint \"users_email_key\"\n"
            "DETAIL:  Key (email)=(sentry.row@example.org) already exists.\n"
            "[SQL: INSERT INTO users (email, full_name) VALUES (%(email)s, %(full_name)s)]\n"
            "[parameters: {'email': 'sentry.row@example.org', 'full_name': 'Rowan Example'}]",
            ("sentry.row@example.org", "Rowan Example"), keep="duplicate key value violates unique constraint",
            context={"exception.type": "sqlalchemy.exc.IntegrityError"},
        ),
    ]


def _db_command_args_leaks() -> list[Leak]:
    rule = "db-command-args"
    return [
        _leak(rule, "redis-auth", ATTRIBUTE, "db.statement", "AUTH Rds-Cmd-Pw-77aa21", "Rds-Cmd-Pw-77aa21", keep="AUTH", context=REDIS),
        _leak(
            rule, "redis-auth-acl-user", ATTRIBUTE, "db.statement", "AUTH default Rds-Acl-Pw-3391", "Rds-Acl-Pw-3391",
            keep="AUTH", context=REDIS,
        ),
        _leak(
            rule, "redis-hello-auth", ATTRIBUTE, "db.statement", "HELLO 3 AUTH app-user Hello-Cmd-Pw-5521 SETNAME shop-api",
            "Hello-Cmd-Pw-5521", keep="HELLO", context=REDIS,
        ),
        _leak(
            rule, "redis-config-set-requirepass", ATTRIBUTE, "db.statement", "CONFIG SET requirepass Cfg-Cmd-Pw-8830",
            "Cfg-Cmd-Pw-8830", keep="CONFIG", context=REDIS,
        ),
        _leak(
            rule, "redis-auth-query-text", ATTRIBUTE, "db.query.text", "AUTH Rds-New-Cmd-Pw-1204", "Rds-New-Cmd-Pw-1204",
            keep="AUTH", context={"db.system.name": "redis"},
        ),
        _leak(
            rule, "redis-auth-lower-case", ATTRIBUTE, "db.statement", "auth lower-cmd-pw-6677", "lower-cmd-pw-6677",
            keep="auth", context=REDIS,
        ),
        _leak(
            rule, "redis-hello-auth-default-user", ATTRIBUTE, "db.statement", "HELLO 3 AUTH default Hello-Def-Pw-4480",
            "Hello-Def-Pw-4480", keep="HELLO", context=REDIS,
        ),
    ]


def leaks() -> list[Leak]:
    """Every case that must be scrubbed, grouped by the rule expected to fire."""
    return [
        *_secret_key_leaks(),
        *_cookie_leaks(),
        *_email_leaks(),
        *_credit_card_leaks(),
        *_iban_leaks(),
        *_us_ssn_leaks(),
        *_jwt_leaks(),
        *_bearer_leaks(),
        *_private_key_leaks(),
        *_url_userinfo_leaks(),
        *_aws_access_key_leaks(),
        *_vendor_token_leaks(),
        *_secret_assignment_leaks(),
        *_ip_address_leaks(),
        *_sql_literal_leaks(),
        *_sql_parameters_leaks(),
        *_db_command_args_leaks(),
    ]


# ---------------------------------------------------------------------------------------------
# Must-keep values
# ---------------------------------------------------------------------------------------------

UUIDS = (
    "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
    "9b2e4c1a-7d3f-4e8b-a6c5-1f0e2d3c4b5a",
    "c0a8e7f2-5b1d-4c3e-9f6a-8d7b2e1c0f4a",
    "6e1f3a9c-2b4d-4f8e-b7a1-c3d5e7f9a1b3",
    "d4c3b2a1-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
    "a7c9e1f3-5b2d-4e6f-8a0b-1c3d5e7f9b2d",
    "f1e2d3c4-b5a6-4978-8a9b-cadbecfd0e1f",
)


def _attribute_keeps() -> list[Keep]:
    a = ATTRIBUTE
    keeps = [
        *(_keep(f"method-{method.lower()}", a, "http.request.method", method, SERVER)
          for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")),
        _keep("legacy-method", a, "http.method", "OPTIONS", SERVER),
        *(_keep(f"status-{code}", a, "http.response.status_code", code, SERVER) for code in (200, 201, 204, 302, 404, 503)),
        _keep("legacy-status", a, "http.status_code", 500, SERVER),
        _keep("route-order", a, "http.route", "/api/orders/{order_id}"),
        _keep("route-session", a, "http.route", "/users/{user_id}/sessions/{session_id}"),
        _keep("route-token-template", a, "http.route", "/api/v1/tokens/{token_id}"),
        _keep("route-login", a, "http.route", "/auth/login"),
        _keep("route-password-reset", a, "http.route", "/password-reset/{uid}/{token}"),
        _keep("route-card", a, "http.route", "/api/cards/{card_id}"),
        _keep("route-root", a, "http.route", "/"),
        _keep("url-path-numbers", a, "url.path", "/api/orders/8841/items", SERVER),
        _keep("url-path-hashed-asset", a, "url.path", "/static/js/main.3f9a06c2.js", SERVER),
        _keep("url-path-health", a, "url.path", "/healthz", SERVER),
        _keep("url-scheme", a, "url.scheme", "https", SERVER),
        _keep("url-query-paging", a, "url.query", "page=2&per_page=50&sort=-created_at", SERVER),
        _keep("url-query-search", a, "url.query", "q=running+shoes&size=42", SERVER),
        _keep("url-query-tokens-word", a, "url.query", "metric=input_tokens&window=1h", SERVER),
        _keep("url-full-paging", a, "url.full", "https://api.example.com/v1/products?page=2&limit=50"),
        _keep("url-full-order", a, "url.full", "https://shop.example.com/api/orders/8841"),
        _keep("url-full-image", a, "url.full", "https://cdn.example.net/img/8841/front.webp?w=640&h=480"),
        _keep("url-full-key-parameter", a, "url.full", "https://files.example.com/download?key=invoices%2F8841.pdf"),
        _keep("http-target-percent-encoded", a, "http.target", "/search?q=blue%20jacket&page=3", SERVER),
        _keep("http-target-author", a, "http.target", "/api/orders?status=shipped&author=docs-team", SERVER),
        _keep("server-address-ipv4", a, "server.address", "10.0.3.17", PG),
        _keep("server-address-host", a, "server.address", "db.internal.example.net", PG),
        _keep("server-address-ipv6", a, "server.address", "2001:db8::5"),
        _keep("server-port", a, "server.port", 5432, PG),
        _keep("server-socket-address", a, "server.socket.address", "192.0.2.10"),
        _keep("network-local-address", a, "network.local.address", "10.0.0.4", SERVER),
        _keep("network-peer-port", a, "network.peer.port", 54012, SERVER),
        _keep("network-protocol-name", a, "network.protocol.name", "http", SERVER),
        _keep("network-protocol-version", a, "network.protocol.version", "1.1", SERVER),
        _keep("network-transport", a, "network.transport", "tcp", SERVER),
        _keep("user-agent-chrome", a, "user_agent.original", CHROME_USER_AGENT, SERVER),
        _keep(
            "user-agent-iphone", a, "user_agent.original",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Mobile/15E148 Safari/604.1",
            SERVER,
        ),
        _keep(
            "user-agent-firefox", a, "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", SERVER,
        ),
        _keep(
            "user-agent-edge", a, "user_agent.original",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
            "Safari/537.36 Edg/120.0.2210.91",
            SERVER,
        ),
        _keep("user-agent-curl", a, "user_agent.original", "curl/8.5.0", SERVER),
        _keep("user-agent-httpx", a, "user_agent.original", "python-httpx/0.27.0", SERVER),
        _keep("header-user-agent", a, "http.request.header.user_agent", (CHROME_USER_AGENT,)),
        _keep("header-accept", a, "http.request.header.accept", ("application/json",)),
        _keep("header-accept-language", a, "http.request.header.accept_language", ("en-US,en;q=0.9,de;q=0.8",)),
        _keep("header-content-type", a, "http.request.header.content_type", ("application/json; charset=utf-8",)),
        _keep("header-host", a, "http.request.header.host", ("shop.example.com",)),
        _keep("header-referer", a, "http.request.header.referer", ("https://shop.example.com/cart?step=2",)),
        _keep(
            "header-traceparent", a, "http.request.header.traceparent", (f"00-{TRACE_ID_HEX}-{SPAN_ID_HEX}-01",),
        ),
        _keep("header-sentry-trace", a, "http.request.header.sentry_trace", (f"{TRACE_ID_HEX}-{SPAN_ID_HEX}-1",)),
        _keep("header-request-id", a, "http.request.header.x_request_id", (UUIDS[0],)),
        _keep("header-idempotency-key", a, "http.request.header.idempotency_key", (UUIDS[1],)),
        _keep("response-content-type", a, "http.response.header.content_type", ("application/json",)),
        _keep("response-content-length", a, "http.response.header.content_length", ("2048",)),
        _keep("response-cache-control", a, "http.response.header.cache_control", ("private, max-age=0, no-cache",)),
        _keep("response-date", a, "http.response.header.date", ("Wed, 01 May 2024 10:15:30 GMT",)),
        _keep("response-etag", a, "http.response.header.etag", ('W/"5e3f9a06c21b"',)),
        _keep("response-rate-limit", a, "http.response.header.x_ratelimit_remaining", ("57",)),
        _keep("response-location", a, "http.response.header.location", ("/api/orders/8841",)),
        _keep("response-vary", a, "http.response.header.vary", ("Accept-Encoding, Authorization",)),
        _keep(
            "response-allow-headers", a, "http.response.header.access_control_allow_headers",
            ("Authorization, Content-Type, X-Api-Key",),
        ),
        _keep("session-id-uuid", a, "session.id", UUIDS[5]),
        _keep("session-id-hex", a, "session.id", "5f0c2a9e8b7d4c3a"),
        _keep("enduser-id", a, "enduser.id", "usr_8f3k2m9q"),
        _keep("user-id-uuid", a, "user.id", UUIDS[2]),
        _keep("enduser-role", a, "enduser.role", "admin"),
        _keep("db-system-postgresql", a, "db.system", "postgresql"),
        _keep("db-system-mysql", a, "db.system", "mysql"),
        _keep("db-system-sqlite", a, "db.system", "sqlite"),
        _keep("db-system-redis", a, "db.system", "redis"),
        _keep("db-system-name", a, "db.system.name", "postgresql"),
        _keep("db-namespace", a, "db.namespace", "shop", PG),
        _keep("db-collection", a, "db.collection.name", "orders", PG),
        _keep("db-operation", a, "db.operation.name", "SELECT", PG),
        _keep(
            "sql-named-parameters", a, "db.statement",
            "SELECT users.id, users.email, users.password_hash FROM users WHERE users.email = %(email_1)s", PG,
        ),
        _keep(
            "sql-password-hash-parameter", a, "db.statement",
            "UPDATE users SET password_hash=%(password_hash)s, updated_at=now() WHERE users.id = %(users_id)s", PG,
        ),
        _keep(
            "sql-numbered-parameters", a, "db.statement",
            "INSERT INTO orders (customer_id, total_cents, currency) VALUES ($1, $2, $3) RETURNING orders.id", PG,
        ),
        _keep(
            "sql-named-in-list", a, "db.statement",
            "SELECT * FROM order_items WHERE order_id = %(order_id_1)s AND sku IN (%(sku_1_1)s, %(sku_1_2)s)", PG,
        ),
        _keep(
            "sql-token-hash-parameter", a, "db.statement",
            "SELECT sessions.id FROM sessions WHERE sessions.token_hash = :token_hash AND sessions.expires_at > :now",
            SQLITE,
        ),
        _keep("sql-format-parameter", a, "db.statement", "DELETE FROM carts WHERE carts.updated_at < %s", MYSQL),
        _keep(
            "sql-digits-in-names", a, "db.statement",
            "SELECT count(*) AS count_1 FROM orders WHERE orders.status = %(status_1)s", PG,
        ),
        _keep(
            "sql-quoted-identifiers", a, "db.statement",
            'SELECT "order".id FROM "order" WHERE "order".customer_id = :customer_id_1', SQLITE,
        ),
        _keep(
            "sql-sqlcommenter", a, "db.statement",
            f"SELECT * FROM orders WHERE id = %s /*traceparent='00-{TRACE_ID_HEX}-{SPAN_ID_HEX}-01'*/", PG,
        ),
        _keep("query-text-parameter", a, "db.query.text", "SELECT id FROM products WHERE slug = $1", {"db.system.name": "postgresql"}),
        _keep("query-text-question-mark", a, "db.query.text", "SELECT * FROM carts WHERE id = ?", {"db.system.name": "sqlite"}),
        _keep("redis-ping", a, "db.statement", "PING", REDIS),
        _keep("code-function-verify-password", a, "code.function", "verify_password"),
        _keep("code-function-refresh-token", a, "code.function", "refresh_access_token"),
        _keep("code-function-rotate-key", a, "code.function", "rotate_api_key"),
        _keep("code-namespace", a, "code.namespace", "shop.auth.tokens"),
        _keep("code-filepath", a, "code.filepath", "/srv/shop/auth/tokens.py"),
        _keep("code-lineno", a, "code.lineno", 88),
        _keep("thread-id", a, "thread.id", 140234),
        _keep("thread-name", a, "thread.name", "MainThread"),
        _keep("request-body-size", a, "http.request.body.size", 512, SERVER),
        _keep("response-body-size", a, "http.response.body.size", 20480, SERVER),
        _keep("returned-rows", a, "db.response.returned_rows", 25, PG),
        _keep("batch-message-count", a, "messaging.batch.message_count", 10),
        _keep("cart-items", a, "app.cart.items", 3),
        _keep("order-total-float", a, "app.order.total", 129.99),
        _keep("retry-attempt", a, "app.retry.attempt", 2),
        _keep("gen-ai-input-tokens", a, "gen_ai.usage.input_tokens", 1532),
        _keep("gen-ai-output-tokens", a, "gen_ai.usage.output_tokens", 287),
        _keep("gen-ai-max-tokens", a, "gen_ai.request.max_tokens", 1024),
        _keep("gen-ai-temperature", a, "gen_ai.request.temperature", 0.2),
        _keep("gen-ai-model", a, "gen_ai.request.model", "gpt-4o-mini"),
        _keep("gen-ai-system", a, "gen_ai.system", "openai"),
        _keep("gen-ai-finish-reasons", a, "gen_ai.response.finish_reasons", ("stop",)),
        _keep("gen-ai-response-id", a, "gen_ai.response.id", "chatcmpl-9f8e7d6c5b4a"),
        _keep("snowflake-id-int", a, "app.snowflake_id", 1785432609812344832),
        _keep("message-id-digits", a, "messaging.message.id", "1785432609812344832"),
        _keep("cache-hit-bool", a, "app.cache.hit", True),
        _keep("feature-flags", a, "app.feature_flags", ("new-checkout", "dark-mode")),
        _keep("shard-ids", a, "app.shard_ids", (1, 2, 3)),
        _keep("weights", a, "app.weights", (0.25, 0.75)),
        _keep("duration-ms", a, "app.duration_ms", 12.5),
        _keep("timeout-text", a, "app.timeout", "30s"),
        _keep("retry-after-iso-duration", a, "app.retry_after", "PT30S"),
        _keep("latency-text", a, "app.latency", "125ms"),
        _keep("request-duration-seconds", a, "http.server.request.duration", 0.0123, SERVER),
        _keep("created-at-iso", a, "app.created_at", "2024-05-01T10:15:30.123456+00:00"),
        _keep("expires-at-iso", a, "app.expires_at", "2024-05-01T11:15:30Z"),
        _keep("enqueued-at-epoch", a, "app.enqueued_at", 1714558530),
        _keep("enqueued-at-epoch-float", a, "app.enqueued_at_float", 1714558530.123),
        _keep("enqueued-at-epoch-ms-text", a, "app.enqueued_at_ms", "1714558530123"),
        _keep("enqueued-at-epoch-ns", a, "app.enqueued_at_ns", 1714558530123456789),
        _keep("http-date", a, "app.last_modified", "Wed, 01 May 2024 10:15:30 GMT"),
        _keep("date-only", a, "app.ship_date", "2024-05-01"),
        _keep("time-only", a, "app.cutoff_time", "10:15:30"),
        _keep("order-uuid", a, "app.order_id", UUIDS[3]),
        _keep("request-uuid", a, "app.request_id", UUIDS[4]),
        _keep("tenant-uuid", a, "app.tenant_id", UUIDS[6]),
        _keep("conversation-uuid", a, "messaging.message.conversation_id", UUIDS[0]),
        _keep("origin-trace-id", a, "app.origin_trace_id", TRACE_ID_HEX),
        _keep("origin-span-id", a, "app.origin_span_id", SPAN_ID_HEX),
        _keep("vcs-revision", a, "vcs.ref.head.revision", "9f3a06c21be84d7e5fa1c2b4d6e8f0a1b2c3d4ea"),
        _keep("content-sha256", a, "app.content_sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        _keep("client-version", a, "app.client_version", "2.14.0-rc.1+build.5"),
        _keep("schema-version", a, "app.schema_version", "3"),
        _keep("api-version-date", a, "app.api_version", "2024-04-10"),
        _keep("author", a, "app.author", "docs-team"),
        _keep("author-id", a, "app.post.author_id", "usr_19ab"),
        _keep("passenger-count", a, "app.passenger_count", 3),
        _keep("tokenizer", a, "app.tokenizer", "cl100k_base"),
        _keep("oauth-provider", a, "app.oauth_provider", "github"),
        _keep("kafka-message-key", a, "messaging.kafka.message.key", "order-8841"),
        _keep("cache-key", a, "app.cache_key", "product:8841:v2"),
        _keep("idempotency-key", a, "app.idempotency_key", UUIDS[1]),
        _keep("sort-key", a, "app.sort_key", "created_at"),
        _keep("primary-key-column", a, "app.primary_key_column", "id"),
        _keep("design-system", a, "app.design_system", "material"),
        _keep("signup-source", a, "app.signup_source", "newsletter"),
        _keep("keyboard-layout", a, "app.keyboard_layout", "de-DE"),
        _keep("pinned-items", a, "app.pinned_items", 4),
        _keep("note-shipping", a, "app.note", "Order 8841 shipped via DHL Express, 2 parcels"),
        _keep("status-message", a, "app.status_message", "Payment authorized, capture pending"),
        _keep("signature-expired-message", a, "app.message", "Signature has expired"),
        _keep("order-number", a, "app.order_number", "ORD-2024-000123"),
        _keep("luhn-invalid-reference", a, "app.payment.reference", "4111111111111112"),
        _keep("long-digit-run", a, "shipment.tracking_number", "9400111899223197428490"),
        _keep("invalid-iban-checksum", a, "app.invoice.reference", "DE00100200300123456789"),
        _keep("vat-id", a, "app.invoice.seller_vat_id", "DE123456789"),
        _keep("part-number-9xx", a, "app.product.part_number", "987-65-4321"),
        _keep("sku", a, "app.product.sku", "SKU-2231"),
        _keep("messaging-system", a, "messaging.system", "kafka"),
        _keep("messaging-destination", a, "messaging.destination.name", "orders"),
        _keep("messaging-operation", a, "messaging.operation.type", "process"),
        _keep("rpc-system", a, "rpc.system", "grpc"),
        _keep("rpc-service", a, "rpc.service", "shop.v1.AuthService"),
        _keep("rpc-method", a, "rpc.method", "GetToken"),
        _keep("rpc-status-code", a, "rpc.grpc.status_code", 0),
        _keep("error-type", a, "error.type", "TimeoutError"),
        _keep("container-image-digest", a, "app.image", "registry.example.com/shop/api@sha256:e3b0c44298fc1c149afbf4c8996fb924"),
    ]
    return keeps


def _span_name_keeps() -> list[Keep]:
    names = (
        ("route-order", "GET /api/orders/{order_id}"),
        ("route-checkout", "POST /api/checkout"),
        ("db-select", "SELECT shop.orders"),
        ("db-insert", "INSERT shop.order_items"),
        ("method-only", "GET"),
        ("http-client", "HTTP POST"),
        ("consumer", "orders process"),
        ("auth-token-route", "POST /auth/token"),
        ("verify-password-function", "verify_password"),
        ("celery-task", "shop.tasks.send_invoice"),
        ("sessions-route", "GET /users/{user_id}/sessions"),
        ("grpc-method", "/shop.v1.OrderService/GetOrder"),
        ("gen-ai-chat", "chat gpt-4o-mini"),
        ("token-route", "PUT /api/v1/tokens/{token_id}"),
        ("asset", "GET /static/js/main.3f9a06c2.js"),
        ("password-reset-route", "POST /password-reset/{uid}/{token}"),
    )
    return [_keep(name, SPAN_NAME, "name", value) for name, value in names]


def _event_keeps() -> list[Keep]:
    e = EVENT
    verify_token_trace = python_traceback(
        "shop.errors.SessionExpired: Signature has expired",
        ("/srv/shop/auth/tokens.py", 42, "verify_token", 'payload = jwt.decode(token, key, algorithms=["HS256"])'),
        ("/usr/local/lib/python3.11/site-packages/jwt/api_jwt.py", 211, "decode", "decoded = self.decode_complete("),
    )
    key_error_trace = python_traceback(
        "KeyError: 'currency'",
        ("/srv/shop/checkout.py", 88, "place_order", "gateway = self.gateways[order['currency']]"),
    )
    timeout_trace = python_traceback(
        "httpx.ReadTimeout: timed out after 30.0 seconds",
        ("/srv/shop/billing/client.py", 61, "fetch_invoice", 'response = await self.http.get(f"/v1/orders/{order_id}")'),
    )
    return [
        _keep("type-integrity", e, "exception.type", "sqlalchemy.exc.IntegrityError"),
        _keep("type-connect-timeout", e, "exception.type", "httpx.ConnectTimeout"),
        _keep("type-key-error", e, "exception.type", "KeyError"),
        _keep("type-cancelled", e, "exception.type", "asyncio.exceptions.CancelledError"),
        _keep("type-deadlock", e, "exception.type", "asyncpg.exceptions.DeadlockDetectedError"),
        _keep("message-division", e, "exception.message", "division by zero", {"exception.type": "ZeroDivisionError"}),
        _keep(
            "message-attribute-error", e, "exception.message", "'NoneType' object has no attribute 'id'",
            {"exception.type": "AttributeError"},
        ),
        _keep("message-not-found", e, "exception.message", "Order 8841 not found", {"exception.type": "shop.errors.NotFound"}),
        _keep("message-timeout", e, "exception.message", "timed out after 30.0 seconds", {"exception.type": "httpx.ReadTimeout"}),
        _keep(
            "message-connection-refused", e, "exception.message", "[Errno 111] Connection refused",
            {"exception.type": "ConnectionRefusedError"},
        ),
        _keep(
            "message-int-parse", e, "exception.message", "invalid literal for int() with base 10: 'abc'",
            {"exception.type": "ValueError"},
        ),
        _keep(
            "message-signature-expired", e, "exception.message", "Signature has expired",
            {"exception.type": "shop.errors.SessionExpired"},
        ),
        _keep(
            "message-postgres-password-failed", e, "exception.message",
            'connection to server at "db.internal.example.net", port 5432 failed: FATAL:  password authentication '
            'failed for user "shop"',
            {"exception.type": "sqlalchemy.exc.OperationalError"},
        ),
        _keep(
            "message-validation", e, "exception.message",
            "1 validation error for OrderIn\nquantity\n  Input should be greater than 0 "
            "[type=greater_than, input_value=0, input_type=int]",
            {"exception.type": "pydantic_core.ValidationError"},
        ),
        _keep(
            "message-json-decode", e, "exception.message", "Expecting value: line 1 column 1 (char 0)",
            {"exception.type": "json.decoder.JSONDecodeError"},
        ),
        _keep(
            "message-http-404", e, "exception.message", "404 Client Error: Not Found for url: https://api.example.net/v1/orders/8841",
            {"exception.type": "requests.exceptions.HTTPError"},
        ),
        _keep(
            "message-rate-limit", e, "exception.message", "Rate limit exceeded, retry after 30 seconds",
            {"exception.type": "shop.errors.RateLimited"},
        ),
        _keep("stacktrace-verify-token", e, "exception.stacktrace", verify_token_trace, {"exception.type": "shop.errors.SessionExpired"}),
        _keep("stacktrace-key-error", e, "exception.stacktrace", key_error_trace, {"exception.type": "KeyError"}),
        _keep("stacktrace-timeout", e, "exception.stacktrace", timeout_trace, {"exception.type": "httpx.ReadTimeout"}),
        _keep("escaped", e, "exception.escaped", "False"),
        _keep("log-cache-miss", e, "message", "cache miss for product:8841, fetching from db", {"event.name": "log"}),
        _keep("log-retry", e, "message", "retrying in 2.5 s (attempt 2 of 5)", {"event.name": "log"}),
        _keep(
            "gen-ai-prompt", e, "gen_ai.prompt", "Summarize order 8841 for the customer in two sentences.", PROMPT_EVENT,
        ),
        _keep(
            "gen-ai-completion", e, "gen_ai.completion", "Your order has shipped and should arrive on Friday.",
            {"event.name": "gen_ai.content.completion"},
        ),
        _keep("grpc-message-type", e, "message.type", "SENT", {"event.name": "message"}),
        _keep("grpc-message-size", e, "message.uncompressed_size", 512, {"event.name": "message"}),
        _keep("cache-key", e, "cache.key", "product:8841:v2", {"event.name": "cache.miss"}),
    ]


def _link_keeps() -> list[Keep]:
    k = LINK
    return [
        _keep("message-id", k, "messaging.message.id", UUIDS[3]),
        _keep("destination", k, "messaging.destination.name", "orders"),
        _keep("origin-trace-id", k, "app.origin_trace_id", TRACE_ID_HEX),
        _keep("origin-span-id", k, "app.origin_span_id", SPAN_ID_HEX),
        _keep("reason", k, "link.reason", "retry"),
        _keep("operation", k, "messaging.operation.type", "publish"),
        _keep("batch-index", k, "app.batch.index", 3),
        _keep("kafka-offset", k, "messaging.kafka.message.offset", 1048576),
        _keep("origin-route", k, "app.origin_route", "/api/orders/{order_id}"),
        _keep("server-address", k, "server.address", "10.0.3.17"),
        _keep("enqueued-at", k, "app.enqueued_at", "2024-05-01T10:15:30Z"),
    ]


def _resource_keeps() -> list[Keep]:
    r = RESOURCE
    return [
        _keep("service-name", r, "service.name", "shop-api"),
        _keep("service-version", r, "service.version", "2024.05.1"),
        _keep("service-namespace", r, "service.namespace", "shop"),
        _keep("service-instance-id", r, "service.instance.id", UUIDS[4]),
        _keep("environment", r, "deployment.environment.name", "production"),
        _keep("host-name", r, "host.name", "ip-10-0-3-17.eu-central-1.compute.internal"),
        _keep("host-ip", r, "host.ip", ("10.0.3.17", "fe80::a00:27ff:fe4e:66a1")),
        _keep("host-arch", r, "host.arch", "amd64"),
        _keep("os-type", r, "os.type", "linux"),
        _keep("os-description", r, "os.description", "Debian GNU/Linux 12 (bookworm)"),
        _keep("process-pid", r, "process.pid", 2817),
        _keep("process-executable", r, "process.executable.path", "/usr/local/bin/python3.11"),
        _keep(
            "process-command-line", r, "process.command_line",
            "/usr/local/bin/python3.11 -m uvicorn shop.app:app --port 8000 --workers 4",
        ),
        _keep("process-command-args", r, "process.command_args", ("uvicorn", "shop.app:app", "--workers", "4")),
        _keep("runtime-name", r, "process.runtime.name", "cpython"),
        _keep("runtime-version", r, "process.runtime.version", "3.11.9"),
        _keep("runtime-description", r, "process.runtime.description", "3.11.9 (main, Apr  2 2024, 08:25:04) [GCC 12.2.0]"),
        _keep("container-id", r, "container.id", "3f9a06c2e1b84d7ea5c0f1b2d3e4a5b6c7d8e9fa0b1c2d3e4f5a6b7c8d9e0fab"),
        _keep("container-image", r, "container.image.name", "registry.example.com/shop/api"),
        _keep("container-image-tags", r, "container.image.tags", ("2024.05.1", "latest")),
        _keep("k8s-namespace", r, "k8s.namespace.name", "shop"),
        _keep("k8s-pod-name", r, "k8s.pod.name", "shop-api-7c9d8f6b5-x2x4q"),
        _keep("k8s-pod-uid", r, "k8s.pod.uid", UUIDS[6]),
        _keep("k8s-deployment", r, "k8s.deployment.name", "shop-api"),
        _keep("cloud-provider", r, "cloud.provider", "aws"),
        _keep("cloud-region", r, "cloud.region", "eu-central-1"),
        _keep("cloud-zone", r, "cloud.availability_zone", "eu-central-1a"),
        _keep("cloud-account", r, "cloud.account.id", "123456789012"),
        _keep("sdk-version", r, "telemetry.sdk.version", "1.45.2"),
        _keep("distro-name", r, "telemetry.distro.name", "raptorflow-otel"),
        _keep("distro-version", r, "telemetry.distro.version", "0.1.0"),
    ]


def _sentry_keeps() -> list[Keep]:
    s = SENTRY
    return [
        _keep("frame-order-id", s, "frame_vars.order_id", "8841"),
        _keep("frame-retries", s, "frame_vars.retries", 2),
        _keep("frame-elapsed", s, "frame_vars.elapsed", 0.25),
        _keep("frame-tokens-used", s, "frame_vars.tokens_used", 1532),
        _keep("frame-author", s, "frame_vars.author", "docs-team"),
        _keep("frame-user-agent", s, "frame_vars.user_agent", CHROME_USER_AGENT),
        _keep("frame-created-at", s, "frame_vars.created_at", "2024-05-01T10:15:30Z"),
        _keep("frame-order-uuid", s, "frame_vars.order_uuid", UUIDS[3]),
        _keep("header-user-agent", s, "request.headers.User-Agent", CHROME_USER_AGENT),
        _keep("header-accept", s, "request.headers.Accept", "application/json"),
        _keep("header-content-type", s, "request.headers.Content-Type", "application/json"),
        _keep("header-host", s, "request.headers.Host", "shop.example.com"),
        _keep("header-traceparent", s, "request.headers.Traceparent", f"00-{TRACE_ID_HEX}-{SPAN_ID_HEX}-01"),
        _keep("request-url", s, "request.url", "https://shop.example.com/api/checkout?step=payment"),
        _keep("request-method", s, "request.method", "POST"),
        _keep("query-string", s, "request.query_string", "step=payment&page=2"),
        _keep("data-quantity", s, "request.data.quantity", 2),
        _keep("data-currency", s, "request.data.currency", "EUR"),
        _keep("data-sku", s, "request.data.sku", "SKU-2231"),
        _keep("data-author", s, "request.data.author", "docs-team"),
        _keep("extra-argv", s, "extra.sys.argv", ["/usr/local/bin/uvicorn", "shop.app:app"]),
        _keep("extra-order-id", s, "extra.order_id", "8841"),
        _keep("extra-duration", s, "extra.duration_ms", 12.5),
        _keep("breadcrumb-message", s, "breadcrumb.message", "charging order 8841"),
        _keep("breadcrumb-status", s, "breadcrumb.data.status_code", 402),
        _keep("breadcrumb-url", s, "breadcrumb.data.url", "https://payments.example.net/v1/charges"),
        _keep("release", s, "release", "shop-api@2024.05.1"),
        _keep("exception-value", s, "exception.value", "Payment declined by issuer (code 51)"),
        _keep("logentry-message", s, "logentry.message", "checkout failed for order %s"),
        _keep("message", s, "message", "Order 8841 could not be charged"),
    ]


def keeps() -> list[Keep]:
    """Every value that must come back unchanged, grouped by location."""
    return [
        *_attribute_keeps(),
        *_span_name_keeps(),
        *_event_keeps(),
        *_link_keeps(),
        *_resource_keeps(),
        *_sentry_keeps(),
    ]
