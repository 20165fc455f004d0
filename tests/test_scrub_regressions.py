"""Leak shapes found by trying new cases against the scrubber, kept so they stay fixed.

Each row is one value under one key; the secret must not survive, in any encoding.
"""

from __future__ import annotations

from urllib.parse import quote, quote_plus

import pytest

from raptorflow_otel.processors.scrubbing import Scrubber

PASSWORD = "hunter2Xq9"
TOKEN = "TLqi58G5tLSJe44PPxqcALK3"

LEAKS = [
    # SQL dialects
    ("mysql-double-quoted", "db.statement", 'SELECT * FROM users WHERE name = "Alice-s3cr3t"', "Alice-s3cr3t", {"db.system": "mysql"}),
    ("postgres-backslash-end", "db.statement", "INSERT INTO files (path, owner) VALUES ('C:\\Users\\', 'owner-s3cr3t')", "owner-s3cr3t", {"db.system": "postgresql"}),
    ("postgres-e-string", "db.statement", "SELECT * FROM users WHERE note = E'it\\'s a s3cr3t-note'", "s3cr3t-note", {"db.system": "postgresql"}),
    ("sql-comment-assignment", "db.statement", f"SELECT 1 /* password={PASSWORD} */", PASSWORD, {"db.system": "postgresql"}),
    # Redis
    ("redis-config-no-system", "db.statement", f"CONFIG SET requirepass {PASSWORD}", PASSWORD, {}),
    ("redis-acl-no-system", "db.statement", f"ACL SETUSER alice on >{PASSWORD}", PASSWORD, {}),
    ("redis-migrate-no-system", "db.statement", f"MIGRATE 127.0.0.1 6379 key 0 5000 AUTH {PASSWORD}", PASSWORD, {}),
    ("redis-pipeline-error", "exception.message", f"Command # 1 (AUTH default {PASSWORD}) of pipeline caused error", PASSWORD, {}),
    # database error messages
    ("pg-expression-key", "exception.message", "DETAIL:  Key (lower(username::text))=(name-one-77) already exists.", "name-one-77", {}),
    ("pg-exclusion", "exception.message", "DETAIL:  Key (room, during)=(101, [\"x\",\"y\")) conflicts with existing key (room, during)=(102, [\"secret-slot\",\"z\")).", "secret-slot", {}),
    ("pg-invalid-input", "exception.message", 'invalid input syntax for type integer: "Name-One-secret"', "Name-One-secret", {}),
    ("pg-error-line", "exception.message", "LINE 1: ...VALUES ('Name-One-secret', 'abc')\n      ^", "Name-One-secret", {}),
    ("mysql-incorrect-value", "exception.message", "(1366, \"Incorrect integer value: 'Name-One-secret' for column 'age' at row 1\")", "Name-One-secret", {}),
    ("mysql-near", "exception.message", f"(1064, \"syntax error near 'Name-One', '{PASSWORD}')' at line 1\")", PASSWORD, {}),
    ("sqlalchemy-chained", "exception.stacktrace", "[parameters: ('Name-One-secret',)]\n\nThe above exception was the direct cause", "Name-One-secret", {}),
    ("sqlalchemy-echo", "log.message", f"[generated in 0.00015s] ('Name-One', '{PASSWORD}')", PASSWORD, {}),
    # Authorization and assignments in text
    ("digest-header", "message", 'Authorization: Digest username="alice", nonce="dcd98b7102dd2f0e", response="6629fae49393a053"', "6629fae49393a053", {}),
    ("aws-v2-header", "message", "Authorization: AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", "frJIUN8DYpKDtOLCwo", {}),
    ("rails-token-header", "message", 'Authorization: Token token="hDAEYqL62pBum9BIy2ewA5s0"', "hDAEYqL62pBum9BIy2ewA5s0", {}),
    ("bare-digest", "message", 'Digest username="bob", realm="shop", response="6629fae49393a053"', "6629fae49393a053", {}),
    ("ip-after-server", "message", "server 203.0.113.5 down", "203.0.113.5", {}),
    ("cookie-line", "message", "Cookie: theme=dark; remember_me=abc123def456", "abc123def456", {}),
    ("cli-flag-space", "message", f"mysqldump --password {PASSWORD} shop", PASSWORD, {}),
    ("mysql-p-flag", "message", f"mysql -uapp -p{PASSWORD} shop", PASSWORD, {}),
    ("curl-user", "message", f"curl -u alice:{PASSWORD} https://api.example.com", PASSWORD, {}),
    ("xml-element", "message", f"<Password>{PASSWORD}</Password>", PASSWORD, {}),
    ("hash-rocket", "message", f"password => '{PASSWORD}'", PASSWORD, {}),
    ("escaped-json", "message", f'{{\\"password\\": \\"{PASSWORD}\\"}}', PASSWORD, {}),
    ("bytes-repr", "message", f"{{'password': b'{PASSWORD}'}}", PASSWORD, {}),
    ("json-unicode-escapes", "message", f'"t": "\\u0022password\\u0022: \\u0022{PASSWORD}\\u0022"', PASSWORD, {}),
    ("argv-attribute", "process.command_args", ("manage.py", "--password", PASSWORD), PASSWORD, {}),
    ("azure-account-key", "message", f"DefaultEndpointsProtocol=https;AccountName=shop;AccountKey={TOKEN}==;", TOKEN, {}),
    # encodings
    ("encoded-param-name", "url.full", f"https://example.com/?access%5Ftoken={TOKEN}", TOKEN, {}),
    ("double-encoded", "url.full", f"https://example.com/login?next=%252Fcb%253Ftoken%253D{TOKEN}", TOKEN, {}),
    ("encoded-free-text", "message", f"redirect target was %2Fcb%3Ftoken%3D{TOKEN}", TOKEN, {}),
    ("encoded-ssn", "message", "tin%3D123-45-6789", "123-45-6789", {}),
    ("double-encoded-email", "message", "owner alice.smith%2540example.com", "alice.smith", {}),
    # tokens, keys, cards, IBANs
    ("jwe-five-parts", "message", "eyJhbGciOiJSU0EtT0FFUCJ9.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji.XFBoMYUZodetZdvTiFvSkQ", "XFBoMYUZodetZdvTiFvSkQ", {}),
    ("jwt-spaced-header", "message", "eyAiYWxnIjogIkhTMjU2IiB9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r", "dBjftJeZ4CVPmB92K27uhbUJU1p1r", {}),
    ("slash-in-password", "db.connection_string", "postgres://app:pass/w0rd-Xq9@db.example.com/app", "w0rd-Xq9", {}),
    ("gitlab-runner-token", "message", "registered with glrt-" + "a1B2c3D4e5F6g7H8i9J0", "a1B2c3D4e5F6g7H8i9J0", {}),
    ("google-oauth-access", "message", "ya29." + "a0AfH6SMBx3kR9pQ2wE7tY8uI1oP", "a0AfH6SMBx3kR9pQ2wE7tY8uI1oP", {}),
    ("troy-card", "message", "charge failed for card 9792123723374214", "9792123723374214", {}),
    ("drf-token-scheme", "message", "retrying with Token hDAEYqL62pBum9BIy2ewA5s02KGvdiP4", "hDAEYqL62pBum9BIy2ewA5s02KGvdiP4", {}),
    ("maestro-card", "message", "paid with 6759649826438453", "6759649826438453", {}),
    ("mir-card", "message", "paid with 2200000000000004", "2200000000000004", {}),
    ("dotted-card", "message", "card 4111.1111.1111.1111 declined", "4111.1111.1111.1111", {}),
    ("dashed-iban", "message", "payout to DE89-3704-0044-0532-0130-00 failed", "DE89-3704-0044-0532-0130-00", {}),
    ("html-entity-email", "message", "mail alice.smith&#64;example.com", "alice.smith", {}),
    ("quoted-local-part", "message", 'mail "alice smith"@example.com now', "alice smith", {}),
    # value types the SDK accepts
    ("bytes-value", "http.request.body", f'{{"password": "{PASSWORD}"}}'.encode(), PASSWORD, {}),
    ("bytes-in-tuple", "app.list", (b"alice.smith@example.com",), "alice.smith", {}),
    ("header-name-key", "http.request.header.x-rapidapi-key", (TOKEN,), TOKEN, {}),
]

KEPT = [
    ("idempotency-header", "http.request.header.idempotency-key", ("3f1c2a9e-7b4d-4c1a-9e2f-8a6b5c4d3e2f",)),
    ("token-count", "llm.token_count.prompt", 1523),
    ("token-expires-in", "token.expires_in", 3600),
    ("signature-algorithm", "signature.algorithm", "RS256"),
    ("jwt-issuer", "jwt.issuer", "https://auth.example.com/"),
    ("auth-result", "auth.result", "success"),
    ("auth-user-header", "http.request.header.x-auth-request-user", ("alice",)),
    ("type-annotation", "exception.stacktrace", "def verify_password(password: str, hashed: str) -> bool:"),
    ("status-word", "message", "token: refreshed"),
    ("token-english-word", "message", "Token expired for user 42"),
    ("exception-name", "message", "PasswordResetRequested: user_id=42 channel=email"),
    ("version-number", "message", "upgraded app to version 4.1.0.2"),
    ("build-number", "message", "build 10.0.0.1 deployed"),
    ("ipv6-looking-name", "message", "cache key cafe::babe missing"),
    ("parameterized-in-list", "db.statement", "SELECT * FROM t1 WHERE t1.v2 IN (?, ?)"),
    ("bind-parameter", "db.statement", "UPDATE users SET password_hash=%(password_hash)s WHERE users.id = %(users_id)s"),
]


def encodings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret, safe="")}


@pytest.mark.parametrize(("name", "key", "value", "secret", "attributes"), LEAKS, ids=[row[0] for row in LEAKS])
def test_leak_shape_scrubbed(name, key, value, secret, attributes):
    fired: list[str] = []
    result = Scrubber().scrub_value(key, value, fired, attributes={**attributes, key: value})
    text = str(result)
    for form in encodings(secret):
        assert form not in text, f"{name}: {result!r}"
    assert fired


@pytest.mark.parametrize(("name", "key", "value"), KEPT, ids=[row[0] for row in KEPT])
def test_benign_value_kept(name, key, value):
    fired: list[str] = []
    assert Scrubber().scrub_value(key, value, fired) == value
    assert fired == []
