"""The privacy corpus against the default scrubber: every leak is scrubbed, every must-keep value survives.

The cases live in scrub_corpus.py and become spans and Sentry events in scrub_harness.py. The rules
and their replacements are those of docs/privacy.md.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest

from scrub_corpus import LOCATIONS, Leak, iban_is_valid, keeps, leaks, luhn_is_valid
from scrub_harness import (
    SUMMARY_COUNT_KEY,
    as_text,
    build_input,
    extract,
    leaked,
    run_ours,
    scrub_rules,
    serialize,
)

LEAKS = leaks()
KEEPS = keeps()
LEAK_IDS = [case.id for case in LEAKS]
KEEP_IDS = [case.id for case in KEEPS]
SPAN_LEAKS = [case for case in LEAKS if case.location != "sentry_event"]
SPAN_KEEPS = [case for case in KEEPS if case.location != "sentry_event"]
LEAKS_WITH_KEEP = [case for case in LEAKS if case.keep]

PRIVACY_DOC = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"

# A marker names the rule only ("[Filtered:email]"). Anything else in brackets after "Filtered:"
# would carry matched text.
MARKER = re.compile(r"\[Filtered:[^\]]*\]")
WELL_FORMED_MARKER = re.compile(r"\[Filtered:[a-z0-9-]+\]")

# What each rule leaves in place of a secret (docs/privacy.md, table "Rules").
REPLACEMENTS = {
    "sql-literal": "?",
    "db-command-args": "?",
    "url-userinfo": "REDACTED:REDACTED@",
}


def documented_rules() -> set[str]:
    """Read the rule names of the "Rules" table of docs/privacy.md, without the numbered custom rules."""
    names = re.findall(r"^\| `([a-z0-9-]+)`", PRIVACY_DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {name for name in names if not name.startswith("custom-")}


def blank_value(value: object) -> object:
    """Return an empty value of the same type, so the rest of the built input can be checked for secrets."""
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return 0
    if isinstance(value, tuple):
        return ()
    if isinstance(value, list):
        return []
    return {}


@pytest.fixture(scope="module")
def scrubber():
    from raptorflow_otel.processors.scrubbing import Scrubber, ScrubOptions

    return Scrubber(ScrubOptions())


@pytest.fixture(scope="module")
def scrubbed(scrubber):
    """Scrub each case once per module. Tests look the output up by case id."""
    outputs: dict[str, object] = {}

    def get(case):
        if case.id not in outputs:
            outputs[case.id] = run_ours(scrubber, case)
        return outputs[case.id]

    return get


# ---------------------------------------------------------------------------------------------
# The corpus itself
# ---------------------------------------------------------------------------------------------


def test_corpus_sizes():
    assert len(LEAKS) >= 300
    assert len(KEEPS) >= 200


def test_case_ids_unique():
    duplicates = [case_id for case_id, count in Counter(LEAK_IDS + KEEP_IDS).items() if count > 1]
    assert duplicates == []


def test_detectors_match_documented_rules():
    assert {case.detector for case in LEAKS} == documented_rules()


def test_every_location_has_leaks():
    assert {case.location for case in LEAKS} == set(LOCATIONS)


def test_every_location_has_keeps():
    assert {case.location for case in KEEPS} == set(LOCATIONS)


def test_card_numbers_pass_luhn():
    for case in LEAKS:
        if case.detector == "credit-card":
            for secret in case.secrets:
                assert luhn_is_valid(secret), case.id


def test_luhn_invalid_keep_fails_luhn():
    (case,) = [case for case in KEEPS if case.id == "keep/attribute/luhn-invalid-reference"]
    assert not luhn_is_valid(str(case.value))


def test_ibans_pass_checksum():
    for case in LEAKS:
        if case.detector == "iban":
            for secret in case.secrets:
                assert iban_is_valid(secret), case.id


def test_invalid_iban_keep_fails_checksum():
    (case,) = [case for case in KEEPS if case.id == "keep/attribute/invalid-iban-checksum"]
    assert not iban_is_valid(str(case.value))


@pytest.mark.parametrize("case", LEAKS, ids=LEAK_IDS)
def test_input_contains_secrets(case: Leak):
    assert leaked(case, serialize(build_input(case))) == list(case.secrets)


@pytest.mark.parametrize("case", LEAKS, ids=LEAK_IDS)
def test_secrets_only_in_value(case: Leak):
    """A secret found after scrubbing must come from the case's value, not from the harness's defaults."""
    without_value = dataclasses.replace(case, value=blank_value(case.value))
    assert leaked(case, serialize(build_input(without_value))) == []


@pytest.mark.parametrize("case", LEAKS_WITH_KEEP, ids=[case.id for case in LEAKS_WITH_KEEP])
def test_keep_parts_in_input_value(case: Leak):
    value = as_text(extract(case, build_input(case)))
    for part in case.keep:
        assert part in value


# ---------------------------------------------------------------------------------------------
# The default scrubber on the corpus
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", LEAKS, ids=LEAK_IDS)
def test_leak_scrubbed(case: Leak, scrubbed):
    output = scrubbed(case)
    assert output is not None, "the scrubber dropped the span, which it does only when scrubbing fails"
    assert leaked(case, serialize(output)) == []


@pytest.mark.parametrize("case", LEAKS_WITH_KEEP, ids=[case.id for case in LEAKS_WITH_KEEP])
def test_leak_keeps_surrounding_text(case: Leak, scrubbed):
    value = as_text(extract(case, scrubbed(case)))
    missing = [part for part in case.keep if part not in value]
    assert missing == [], f"scrubbed value: {value!r}"


@pytest.mark.parametrize("case", LEAKS, ids=LEAK_IDS)
def test_markers_carry_no_secret(case: Leak, scrubbed):
    text = serialize(scrubbed(case))
    for marker in MARKER.findall(text):
        assert WELL_FORMED_MARKER.fullmatch(marker), marker
        assert leaked(case, marker) == [], marker
    assert "[Filtered:scrub-error]" not in text


@pytest.mark.parametrize("case", LEAKS, ids=LEAK_IDS)
def test_leak_replaced_by_detector_marker(case: Leak, scrubbed):
    """The documented replacement of the expected rule is in the output (raw or percent-encoded).

    When a key rule replaced a whole parent (a Sentry event's ``request.cookies``), the location is
    gone, and the replacement is looked for in the whole output.
    """
    replacement = REPLACEMENTS.get(case.detector, f"[Filtered:{case.detector}]")
    output = scrubbed(case)
    value = extract(case, output)
    text = serialize(output) if value is None else as_text(value)
    assert replacement in text or quote(replacement, safe="") in text, f"scrubbed value: {value!r}"


@pytest.mark.parametrize("case", SPAN_LEAKS, ids=[case.id for case in SPAN_LEAKS])
def test_summary_names_detector(case: Leak, scrubbed):
    span = scrubbed(case)
    rules = scrub_rules(span)
    assert rules is not None, "span has no raptorflow.scrub.rules attribute"
    assert case.detector in rules
    assert set(rules) <= documented_rules()
    assert rules == sorted(rules)
    count = span.attributes[SUMMARY_COUNT_KEY]
    assert isinstance(count, int)
    assert count >= 1


@pytest.mark.parametrize("case", KEEPS, ids=KEEP_IDS)
def test_keep_unchanged(case, scrubbed):
    output = scrubbed(case)
    assert output is not None, "the scrubber dropped the span, which it does only when scrubbing fails"
    assert extract(case, output) == extract(case, build_input(case))


@pytest.mark.parametrize("case", SPAN_KEEPS, ids=[case.id for case in SPAN_KEEPS])
def test_keep_span_has_no_summary(case, scrubbed):
    """Nothing on a must-keep span is secret, so no rule may fire anywhere on it."""
    span = scrubbed(case)
    assert scrub_rules(span) is None
    assert SUMMARY_COUNT_KEY not in span.attributes


@pytest.mark.parametrize("case", SPAN_KEEPS, ids=[case.id for case in SPAN_KEEPS])
def test_keep_span_ids_unchanged(case, scrubbed):
    original = build_input(case)
    span = scrubbed(case)
    assert span.context == original.context
    assert span.parent == original.parent
    assert [link.context for link in span.links] == [link.context for link in original.links]
