"""The privacy scrubber's options and guarantees: settings, pseudonyms, bounded time, fail closed.

The labelled corpus (test_scrub_corpus.py) checks what the default rules catch and keep. This
file checks everything a user can configure, and the promises that hold whatever the input.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind

from raptorflow_otel.distro.settings import load_settings
from raptorflow_otel.processors import guard
from raptorflow_otel.processors.scrub_keys import COOKIE, SECRET_KEY, KeyRules, key_words
from raptorflow_otel.processors.scrub_values import ValueRules
from raptorflow_otel.processors.scrubbing import (
    SUMMARY_COUNT,
    SUMMARY_RULES,
    Scrubber,
    ScrubOptions,
)

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
HASH_KEY = "test-hash-key-0123456789"


def make_span(attributes=None, *, name="GET /orders/{order_id}", kind=SpanKind.SERVER, events=(), links=()):
    return ReadableSpan(
        name=name,
        context=SpanContext(TRACE_ID, 0x00F067AA0BA902B7, False),
        attributes=attributes or {},
        events=list(events),
        links=list(links),
        kind=kind,
        resource=Resource({"service.name": "shop"}),
    )


def scrub(value, key="note", **options):
    fired: list[str] = []
    return Scrubber(ScrubOptions(**options)).scrub_value(key, value, fired), fired


def from_env(**environ):
    return Scrubber(ScrubOptions.from_settings(load_settings(environ)))


# -- key rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("X-Api-Key", ["x", "api", "key"]),
        ("userPassword", ["user", "password"]),
        ("APIKey", ["api", "key"]),
        ("db.connection_string", ["db", "connection", "string"]),
        ("PGPASSWORD", ["pgpassword"]),
    ],
)
def test_key_words_split(name, words):
    assert key_words(name) == words


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("db.password", SECRET_KEY),
        ("PGPASSWORD", SECRET_KEY),
        ("http.request.header.authorization", SECRET_KEY),
        ("http.request.header.x-api-key", SECRET_KEY),
        ("http.request.header.x-honeycomb-team", SECRET_KEY),
        ("http.response.header.set-cookie", COOKIE),
        ("sessionid", COOKIE),
        ("client_secret", SECRET_KEY),
        ("csrfmiddlewaretoken", SECRET_KEY),
        ("card_number", SECRET_KEY),
        ("key", None),
        ("app.sessionid", COOKIE),
        ("jwt.exceptions.DecodeError", None),
        ("gen_ai.usage.input_tokens", None),
        ("token_count", None),
        ("token_type", None),
        ("password_length", None),
        ("author", None),
        ("session.id", None),
        ("messaging.kafka.message.key", None),
        ("http.request.header.www-authenticate", None),
    ],
)
def test_key_rule_by_words(name, rule):
    assert KeyRules().rule_for(name) == rule


# -- settings ----------------------------------------------------------------------------------


def test_disabled_rule_keeps_its_findings():
    text = "retry from 203.0.113.7 for ops@example.com"
    assert from_env().scrub_value("note", text, []) == "retry from [Filtered:ip-address] for [Filtered:email]"
    scrubber = from_env(RAPTORFLOW_SCRUB_DISABLED_RULES="email")
    assert scrubber.scrub_value("note", text, []) == "retry from [Filtered:ip-address] for ops@example.com"


def test_ip_switch_keeps_addresses():
    scrubber = from_env(RAPTORFLOW_SCRUB_IP_ADDRESSES="false")
    assert scrubber.scrub_value("client.address", "203.0.113.7", []) == "203.0.113.7"
    assert scrubber.scrub_value("note", "from 2001:db8::7", []) == "from 2001:db8::7"


def test_extra_keys_filter_whole_value():
    scrubber = from_env(RAPTORFLOW_SCRUB_EXTRA_KEYS="dob, maiden_name")
    fired: list[str] = []
    assert scrubber.scrub_value("customer.dob", "1990-01-01", fired) == "[Filtered:secret-key]"
    assert scrubber.scrub_value("mothers_maiden_name", "Smith", fired) == "[Filtered:secret-key]"
    assert scrubber.scrub_value("customer.name", "Smith", fired) == "Smith"
    assert fired == ["secret-key", "secret-key"]


def test_extra_patterns_named_in_order():
    scrubber = from_env(RAPTORFLOW_SCRUB_EXTRA_PATTERNS=r"ORD-\d{8} cust_[a-z]{6}")
    fired: list[str] = []
    result = scrubber.scrub_value("note", "order ORD-12345678 of cust_abcdef", fired)
    assert result == "order [Filtered:custom-1] of [Filtered:custom-2]"
    assert fired == ["custom-1", "custom-2"]


def test_extra_patterns_match_non_ascii_text():
    scrubber = from_env(RAPTORFLOW_SCRUB_EXTRA_PATTERNS=r"ORD-\d{4}")
    assert scrubber.scrub_value("note", "Bestellung für ORD-1234 ok", []) == "Bestellung für [Filtered:custom-1] ok"


def test_safe_keys_exact_and_prefix():
    scrubber = from_env(RAPTORFLOW_SCRUB_SAFE_KEYS="audit.actor_email,internal.*")
    assert scrubber.scrub_value("audit.actor_email", "ops@example.com", []) == "ops@example.com"
    assert scrubber.scrub_value("internal.password", "kept-on-purpose", []) == "kept-on-purpose"
    assert scrubber.scrub_value("audit.other", "ops@example.com", []) == "[Filtered:email]"


def test_disabled_scrubbing_warns(caplog):
    from raptorflow_otel.distro.providers import SCRUBBING_OFF_MESSAGE, build_scrubber

    caplog.set_level(logging.WARNING, logger="raptorflow_otel")
    assert build_scrubber(load_settings({"RAPTORFLOW_SCRUB_ENABLED": "false"})) is None
    assert [record.getMessage() for record in caplog.records] == [SCRUBBING_OFF_MESSAGE]
    assert build_scrubber(load_settings({})) is not None


# -- bounded time ------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_catastrophic_user_pattern_runs_linear():
    # With Python's backtracking engine this pattern takes exponential time on such input
    # (2**50 steps); RE2 finishes in one pass, so the pytest-timeout above is never reached.
    scrubber = from_env(RAPTORFLOW_SCRUB_EXTRA_PATTERNS=r"(a+)+$")
    text = "a" * 50 + "!"
    assert scrubber.scrub_value("note", text, []) == text
    long_text = "a" * 30000 + "b"
    assert scrubber.scrub_value("note", long_text, []) == long_text


def test_backtracking_only_pattern_is_rejected(caplog):
    caplog.set_level(logging.WARNING, logger="raptorflow_otel")
    settings = load_settings({"RAPTORFLOW_SCRUB_EXTRA_PATTERNS": r"(\w+)\1"})
    assert settings["RAPTORFLOW_SCRUB_EXTRA_PATTERNS"] == ()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "RAPTORFLOW_SCRUB_EXTRA_PATTERNS" in messages[0]
    assert "is not valid" in messages[0]


@pytest.mark.timeout(20)
def test_builtin_rules_on_hostile_inputs():
    # Long runs of the characters each built-in pattern repeats; every rule must stay linear.
    hostile = [
        "a" * 20000 + "@",
        "1" * 20000,
        "1-" * 10000,
        "A" * 20000,
        "password=" * 3000,
        "-----BEGIN PRIVATE KEY-----" + "x" * 20000,
        "eyJ" + "a" * 20000,
        ":" * 20000,
        "1." * 10000,
        "https://" + "u" * 20000,
        "[parameters: " * 2000,
        "Key (" * 4000,
        "://a:b" * 5000,
        "near '" * 4000,
        "Duplicate entry '" * 2000,
        "[generated in 1s] " * 2000,
        "(AUTH " * 4000,
        "Failing row contains (" * 1500,
        "-----BEGIN+PRIVATE+KEY-----" * 1000,
        "%25" * 10000 + "=",
        "\\u0022" * 5000,
        "token=" + "%2B" * 10000,
        "Authorization: " * 2000,
    ]
    scrubber = Scrubber()
    for text in hostile:
        scrubber.scrub_value("note", text, [])


def test_long_value_cut_before_scrubbing():
    result, _ = scrub("x" * 100 + " ops@example.com", max_value_chars=50)
    assert result == "x" * 50 + "...[truncated]"


# -- keyed pseudonyms --------------------------------------------------------------------------


def test_pseudonym_stable_across_scrubbers():
    first, _ = scrub("Ops@Example.com failed", hash_key=HASH_KEY)
    second, _ = scrub("contact ops@example.com", hash_key=HASH_KEY)
    pseudonym = first.split()[0]
    assert pseudonym.startswith("[email:")
    assert len(pseudonym) == len("[email:]") + 16
    assert second == f"contact {pseudonym}"
    other, _ = scrub("ops@example.com", hash_key="another-hash-key-98765")
    assert other != pseudonym


def test_pseudonym_for_user_ids_and_clients():
    scrubber = Scrubber(ScrubOptions(hash_key=HASH_KEY))
    span = make_span({"user.id": "42", "client.address": "203.0.113.7", "network.peer.address": "203.0.113.7"})
    attributes = scrubber.scrub_span(span).attributes
    assert attributes["user.id"].startswith("[user-id:")
    assert attributes["client.address"].startswith("[ip-address:")
    assert attributes["client.address"] == attributes["network.peer.address"]
    assert "203.0.113.7" not in str(dict(attributes))


def test_disabled_ip_rule_keeps_client_address():
    scrubber = Scrubber(ScrubOptions(hash_key=HASH_KEY, disabled_rules=frozenset({"ip-address"})))
    assert scrubber.scrub_value("client.address", "203.0.113.7", [], server=True) == "203.0.113.7"


def test_user_id_kept_without_hash_key():
    assert scrub("42", key="user.id") == ("42", [])


# -- spans -------------------------------------------------------------------------------------


def test_clean_span_returned_as_is():
    span = make_span({"http.route": "/orders/{order_id}", "http.response.status_code": 200})
    assert Scrubber().scrub_span(span) is span


def test_summary_counts_and_names_rules():
    span = make_span(
        {"enduser.email": "ops@example.com", "db.password": "hunter2", "client.address": "203.0.113.7"},
        events=[Event("exception", {"exception.message": "mail ops@example.com and ops2@example.com"})],
    )
    scrubbed = Scrubber().scrub_span(span)
    assert scrubbed.attributes[SUMMARY_COUNT] == 5
    assert scrubbed.attributes[SUMMARY_RULES] == ("email", "ip-address", "secret-key")
    assert scrubbed.events[0].attributes["exception.message"] == "mail [Filtered:email] and [Filtered:email]"


def test_span_name_and_links_scrubbed():
    link = Link(SpanContext(TRACE_ID, 0x1, False), {"origin": "ops@example.com"})
    span = make_span({}, name="GET /users/ops@example.com", links=[link])
    scrubbed = Scrubber().scrub_span(span)
    assert scrubbed.name == "GET /users/[Filtered:email]"
    assert scrubbed.links[0].attributes["origin"] == "[Filtered:email]"
    assert scrubbed.links[0].context == link.context


def test_status_description_scrubbed():
    from opentelemetry.trace.status import Status, StatusCode

    span = ReadableSpan(
        name="POST /login",
        context=SpanContext(TRACE_ID, 0x2, False),
        status=Status(StatusCode.ERROR, "ValueError: no account for ops@example.com"),
    )
    scrubbed = Scrubber().scrub_span(span)
    assert scrubbed.status.status_code is StatusCode.ERROR
    assert scrubbed.status.description == "ValueError: no account for [Filtered:email]"
    assert scrubbed.attributes[SUMMARY_RULES] == ("email",)


def test_resource_scrubbed_once():
    resource = Resource({"service.name": "shop", "process.command_args": ("app", "--password=hunter2")})
    scrubber = Scrubber()
    scrubbed = scrubber.scrub_resource(resource)
    assert scrubbed.attributes["process.command_args"] == ("app", "--password=[Filtered:secret-assignment]")
    assert scrubber.scrub_resource(resource) is scrubbed


def test_header_values_keep_their_shape():
    result, fired = scrub(("Bearer abc.def", "Bearer ghi.jkl"), key="http.request.header.authorization")
    assert result == ("[Filtered:secret-key]", "[Filtered:secret-key]")
    assert fired == ["secret-key"]


def test_numbers_kept_unless_key_secret():
    assert scrub(4111111111111111, key="order.total") == (4111111111111111, [])
    assert scrub(1234, key="card.pin") == ("[Filtered:secret-key]", ["secret-key"])


def test_redis_auth_arguments_dropped():
    scrubber = Scrubber()
    attributes = {"db.system": "redis", "db.statement": "AUTH default s3cret-Pass"}
    assert scrubber.scrub_value("db.statement", attributes["db.statement"], [], attributes=attributes) == "AUTH ? ?"
    config = {"db.system.name": "redis", "db.query.text": "CONFIG SET requirepass s3cret-Pass"}
    assert scrubber.scrub_value("db.query.text", config["db.query.text"], [], attributes=config) == "CONFIG SET ? ?"


def test_cached_clean_value_still_scrubbed_elsewhere():
    # The clean-text cache must not let a value through under a key where it is secret.
    scrubber = Scrubber()
    assert scrubber.scrub_value("note", "hunter2", []) == "hunter2"
    assert scrubber.scrub_value("db.password", "hunter2", []) == "[Filtered:secret-key]"
    assert scrubber.scrub_value("server.address", "203.0.113.7", []) == "203.0.113.7"
    assert scrubber.scrub_value("note", "203.0.113.7", []) == "[Filtered:ip-address]"


# -- fail closed -------------------------------------------------------------------------------


def test_failing_rule_fails_closed(monkeypatch, caplog):
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)

    def broken(self, text, fired, *, allow_ip=True):
        raise RuntimeError("detector bug")

    monkeypatch.setattr(ValueRules, "scrub_text", broken)
    scrubber = Scrubber()
    span = make_span({"note": "ops@example.com", "other": "also raw"}, name="raw name")
    scrubbed = scrubber.scrub_span(span)
    # Keys go through the value rules too, so both keys and values become the marker.
    attributes = dict(scrubbed.attributes)
    assert attributes.pop("[Filtered:scrub-error]") == "[Filtered:scrub-error]"
    assert attributes[SUMMARY_RULES] == ("scrub-error",)
    assert scrubbed.name == "[Filtered:scrub-error]"
    assert "ops@example.com" not in str(attributes)
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "privacy scrubbing failed" in errors[0].getMessage()


# -- log records and the app's own sentry-sdk events ---------------------------------------------


def test_log_records_scrubbed_before_export():
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    from raptorflow_otel.processors.scrub_logs import ScrubbingLogProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(ScrubbingLogProcessor(Scrubber()))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("shop")
    logger.emit(body="login failed for ops@example.com", attributes={"db.password": "hunter2", "n": 3})
    provider.force_flush()
    record = exporter.get_finished_logs()[0].log_record
    assert record.body == "login failed for [Filtered:email]"
    assert dict(record.attributes) == {"db.password": "[Filtered:secret-key]", "n": 3}


def test_sentry_sdk_event_scrubbed():
    event = {
        "event_id": "a" * 32,
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": "card 4111 1111 1111 1111 declined",
                    "stacktrace": {
                        "frames": [
                            {
                                "filename": "shop/payments.py",
                                "lineno": 12,
                                "vars": {"password": "'hunter2'", "email": "'ops@example.com'", "count": "3"},
                            }
                        ]
                    },
                }
            ]
        },
        "request": {
            "url": "http://shop.example.com/pay",
            "headers": {"Authorization": "Bearer abc.def", "Accept": "application/json"},
            "cookies": {"sessionid": "s3cret"},
            "data": {"card_number": "4111111111111111", "note": "call 203.0.113.7"},
        },
        "user": {"ip_address": "203.0.113.7", "email": "ops@example.com"},
        "breadcrumbs": {"values": [{"message": "password=hunter2 sent"}]},
    }
    scrubbed = Scrubber().scrub_sentry_event(event)
    text = str(scrubbed)
    for secret in ("hunter2", "ops@example.com", "4111", "abc.def", "s3cret", "203.0.113.7"):
        assert secret not in text
    frame = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert frame["vars"]["count"] == "3"
    assert frame["lineno"] == 12
    assert scrubbed["request"]["headers"]["Accept"] == "application/json"
    assert "ip_address" not in scrubbed["user"]
    assert event["request"]["cookies"] == {"sessionid": "s3cret"}  # the input is not changed


def test_user_address_becomes_pseudonym_id():
    scrubbed = Scrubber(ScrubOptions(hash_key=HASH_KEY)).scrub_sentry_event({"user": {"ip_address": "203.0.113.7"}})
    assert scrubbed["user"]["id"].startswith("[ip-address:")


def test_app_sentry_client_events_scrubbed(monkeypatch):
    import sentry_sdk
    from sentry_sdk.transport import Transport

    from raptorflow_otel.exporters import sentry_coexistence

    captured = []

    class CapturingTransport(Transport):
        def capture_envelope(self, envelope):
            captured.extend(item.payload.json for item in envelope.items if item.payload.json)

    monkeypatch.setattr(sentry_coexistence, "_scrubber", None)
    sentry_coexistence.install_scrubber(Scrubber())
    sentry_sdk.init(
        dsn="https://public@127.0.0.1:9/1",
        transport=CapturingTransport,
        default_integrations=False,
        include_local_variables=True,
    )
    try:
        # Frame variables for sentry-sdk to record. sentry-sdk's own scrubber filters only exact
        # names from its deny list (``password``, ``token``, ...), so it keeps both of these.
        stripe_secret_key = "hunter2-local"  # noqa: F841
        contact = "ops@example.com"  # noqa: F841
        try:
            raise ValueError("login failed for ops@example.com")
        except ValueError:
            sentry_sdk.capture_exception()
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        monkeypatch.setattr(sentry_coexistence, "_scrubber", None)
    assert len(captured) == 1
    text = str(captured[0])
    assert "hunter2-local" not in text
    assert "ops@example.com" not in text
    frame = captured[0]["exception"]["values"][0]["stacktrace"]["frames"][-1]
    assert frame["vars"]["stripe_secret_key"] == "[Filtered:secret-key]"
    assert frame["vars"]["contact"] == "'[Filtered:email]'"


# -- the raptorflow-otel command -----------------------------------------------------------------


def test_scrub_command_prints_result(monkeypatch, capsys):
    from raptorflow_otel.distro.cli import main

    monkeypatch.delenv("RAPTORFLOW_SCRUB_DISABLED_RULES", raising=False)
    assert main(["scrub", "--key", "exception.message", "login failed for ops@example.com"]) == 0
    output = capsys.readouterr()
    assert output.out == "login failed for [Filtered:email]\n"
    assert output.err == "rules: email\n"


def test_scrub_command_follows_settings(monkeypatch, capsys):
    from raptorflow_otel.distro.cli import main

    monkeypatch.setenv("RAPTORFLOW_SCRUB_EXTRA_PATTERNS", r"ORD-\d{4}")
    assert main(["scrub", "order ORD-1234"]) == 0
    assert capsys.readouterr().out == "order [Filtered:custom-1]\n"
    assert main(["scrub", "--key", "db.statement", "--db-system", "redis", "AUTH default s3cret"]) == 0
    assert capsys.readouterr().out == "AUTH ? ?\n"


def test_scrub_command_warns_when_off(monkeypatch, capsys):
    from raptorflow_otel.distro.cli import main

    monkeypatch.setenv("RAPTORFLOW_SCRUB_ENABLED", "false")
    assert main(["scrub", "mail ops@example.com"]) == 0
    output = capsys.readouterr()
    assert output.out == "mail [Filtered:email]\n"
    assert output.err.startswith("note: RAPTORFLOW_SCRUB_ENABLED=false, so the app exports this value raw")


def test_check_command_reports_scrubbing(monkeypatch, capsys):
    from raptorflow_otel.distro.cli import main

    monkeypatch.setenv("RAPTORFLOW_SCRUB_DISABLED_RULES", "email")
    monkeypatch.setenv("RAPTORFLOW_SCRUB_IP_ADDRESSES", "false")
    main(["check"])
    assert "Privacy scrubbing: on, rules off: email, ip-address, no pseudonyms" in capsys.readouterr().out
    monkeypatch.setenv("RAPTORFLOW_SCRUB_ENABLED", "false")
    main(["check"])
    assert "Privacy scrubbing: OFF" in capsys.readouterr().out


def test_url_with_port_keeps_host_and_path():
    url = "http://127.0.0.1:36313/support/tickets/1?mail=ops@example.com"
    assert Scrubber().scrub_value("http.url", url, []) == "http://127.0.0.1:36313/support/tickets/1?mail=[Filtered:email]"
