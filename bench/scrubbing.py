"""Compare our privacy scrubber with Sentry's server-side scrubber and with logfire's scrubber.

Usage: ``python bench/scrubbing.py [--rounds N] [--quick]``

The corpus is ``tests/scrub_corpus.py``: leak cases (a value with secrets that must not survive)
and must-keep cases (a value that must come out unchanged). Each case is converted once into the
input each tool works on. Then every tool scrubs the whole corpus ``--rounds`` times (default 5,
``--quick`` runs 1) and the median round gives items per second, for the whole corpus and for
span cases and Sentry event cases apart. Only the scrubbing calls are timed: building inputs,
copying them for the next round, parsing outputs and checking results are not. The result checks
run on one more, untimed pass.

Tools:

* ``ours``: ``Scrubber(ScrubOptions())`` from ``raptorflow_otel.processors.scrubbing``, a new
  one for every round, on the ReadableSpan of ``scrub_harness.build_span`` (``scrub_span``) or the
  event dict of ``scrub_harness.build_sentry_event`` (``scrub_sentry_event``, given a fresh deep
  copy every round).
* ``sentry``: ``sentry_relay.pii_strip_event`` (the ``sentry-relay`` package) with the config
  that ``sentry_relay.convert_datascrubbing_config`` makes from Sentry's defaults for a project
  whose organization and project set no data-scrubbing option. Sentry's ``get_datascrubbing_settings``
  (``src/sentry/datascrubbing.py`` in getsentry/sentry) gives ``scrubData`` true,
  ``scrubDefaults`` true, ``scrubIpAddresses`` false (the "Prevent Storing of IP Addresses"
  option is off unless someone turns it on), and no sensitive or safe fields. Config and events
  are passed as JSON text and the output is returned as JSON text, so the timed call is the
  library call alone. NOTE: that call parses and compiles the config on every event, which
  Relay in production does once per project, so these items/s understate Sentry's real
  throughput. On the 2-core development machine, 2,000 calls on a one-line event took about
  0.2 ms each with the default config and 0.01 ms each with an empty one.
* ``logfire``: ``logfire._internal.scrubbing.Scrubber(patterns=None)`` (logfire's default
  patterns) with ``scrub_span`` on the span dict of ``logfire._internal.utils.span_to_dict``.
  ``scrub_span`` changes that dict in place, so every round gets shallow copies.

Where each case goes in Sentry's event. Span cases follow the OpenTelemetry span processor of
sentry-sdk 2.76 (``sentry_sdk/integrations/opentelemetry/span_processor.py``), because that is
how Sentry receives OpenTelemetry spans. The case's span becomes a child span of a transaction.
A root span would put its attributes in ``contexts.otel.attributes``, which Relay does not scrub,
so the child span is the placement that is fair to Relay.

* Span attribute, any key: ``spans[0].data[key]``, because sentry-sdk calls ``set_data`` for
  every attribute. Relay scrubs span data.
* ``db.statement`` or ``db.query.text``: also ``spans[0].description`` with op ``db``, where
  sentry-sdk and its database integrations put the query.
* HTTP spans (with ``http.method`` or ``http.request.method``): also ``spans[0].description``.
  It is the method and then ``http.target`` (or ``url.path?url.query``), else the method and
  ``http.url`` or ``url.full`` without query and fragment.
* Span name: ``spans[0].description``, unless the query or the HTTP summary took its place.
  Then Sentry never receives the name, and the case is left out of Sentry's numbers.
* Resource attribute: ``contexts.otel.resource[key]`` of the transaction.
* Link attribute: ``spans[0].links[0].attributes[key]``. sentry-sdk 2.76 sends no links, but
  Relay's event protocol has this field.
* ``exception`` span event: a separate error event. ``exception.stacktrace`` becomes
  ``exception.values`` (type, value, frames with source lines) through
  ``raptorflow_otel.exporters.sentry_frames``, the parser our Sentry exporter uses. Without a
  stacktrace, ``exception.message`` becomes ``exception.values[0].value``. The event's other
  attributes go to ``extra``.
* Any other span event: its attributes join ``spans[0].data``. sentry-sdk drops span events,
  and span data is the field Relay scrubs most: besides the key rules, Relay 0.10 applies its
  e-mail, card, IBAN, SSN and bearer rules to prompt keys such as ``gen_ai.prompt`` there.
* Sentry event case (a dotted path such as ``request.headers.Authorization``): the event of
  ``build_sentry_event`` as it is.

Every Sentry event first goes through ``sentry_relay.StoreNormalizer``, untimed, because Sentry
normalizes an event before it scrubs it. Normalizing moves a URL's query into ``query_string``
and a ``Cookie`` header into ``cookies``, where Relay scrubs by key. It also drops a URL's query
when the event has a ``query_string`` already, a ``Cookie`` header when the event has
``cookies``, and ``message`` when the event has ``logentry``. Sentry never stores such a value,
so those cases are not measured for Sentry (see below).

For logfire, span cases are the span itself. Sentry event cases become a span whose attributes
are the event's top-level fields, with nested values as JSON text: that is how logfire stores a
structured argument, and its scrubber parses such JSON and scrubs inside it.

Results:

* recall: the share of leak cases where ``scrub_harness.leaked`` finds none of the case's secrets
  in the tool's output. For ours the output text is ``scrub_harness.serialize``. For the others
  it is every string, number and key in the output, one per line, with JSON text also parsed,
  so JSON escaping cannot hide a secret.
* false positives: must-keep cases whose value changed. For ours, ``scrub_harness.extract``
  reads the value back from the output and compares it with the value it reads from the input.
  For the others, the case is also built with a different value of the same type. The strings
  and numbers of the input that differ between the two builds are where the input carries the
  value, and each of them must be the same at the same place in the output.
* A case whose secret or must-keep value is missing from a tool's input even before scrubbing
  (the mapping above drops it) cannot be measured for that tool. It is left out of that tool's
  numbers and listed.

The last line of the output is for scripts: ``recall_ours=<x> recall_sentry=<x>
recall_logfire=<x> false_positives_ours=<n> throughput_ratio_vs_logfire=<x>``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import scrub_corpus  # noqa: E402
import scrub_harness  # noqa: E402
import sentry_relay  # noqa: E402
from logfire._internal.scrubbing import Scrubber as LogfireScrubber  # noqa: E402
from logfire._internal.utils import span_to_dict  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from raptorflow_otel.exporters.sentry_frames import parse_exception_chain  # noqa: E402
from raptorflow_otel.processors.scrubbing import Scrubber, ScrubOptions  # noqa: E402

DEFAULT_ROUNDS = 5

# Sentry's data-scrubbing settings for a project and organization that set none of them.
SENTRY_DEFAULT_DATASCRUBBING = {
    "scrubData": True,
    "scrubDefaults": True,
    "scrubIpAddresses": False,
    "sensitiveFields": [],
    "excludeFields": [],
}

SQL_KEYS = ("db.statement", "db.query.text")
DB_SYSTEM_KEYS = ("db.system", "db.system.name")
HTTP_METHOD_KEYS = ("http.method", "http.request.method")
EXCEPTION_KEYS = ("exception.type", "exception.message", "exception.stacktrace")
# Relay's normalizer stamps each event with its receive time; the corpus's spans and events are
# from 2024-05-01 10:15:30 UTC.
RECEIVED_AT = "2024-05-01T10:15:31Z"
TRACE_ID = "5b8efff798038103d269b633813fc60c"
ROOT_SPAN_ID = "eee19b7ec3c1b174"
CHILD_SPAN_ID = "eee19b7ec3c1b175"
JSON_MARK = "<json>"
SPAN_CASES = "span"
EVENT_CASES = "sentry_event"
_MISSING = object()


# ---------------------------------------------------------------------------------------------
# Corpus


@dataclass
class Corpus:
    leaks: list[Any]
    keeps: list[Any]

    @property
    def cases(self) -> list[Any]:
        return [*self.leaks, *self.keeps]


def load_corpus() -> Corpus:
    return Corpus(leaks=list(scrub_corpus.leaks()), keeps=list(scrub_corpus.keeps()))


def is_leak(case: Any) -> bool:
    return isinstance(case, scrub_corpus.Leak)


# ---------------------------------------------------------------------------------------------
# Plain data: every string, number and key of an output, with paths


def iter_leaves(
    value: Any, path: tuple[Any, ...] = (), *, with_json_text: bool = True
) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Yield ``(path, leaf)`` for every scalar in nested dicts and lists.

    A string that contains a JSON object or array is also parsed, with its leaves under
    ``path + ("<json>", ...)``, so a value inside JSON text is found unescaped. The string itself
    is yielded too unless ``with_json_text`` is false. Comparisons of must-keep values use that,
    so a change elsewhere in the same JSON text does not count as a change of the value.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_leaves(item, (*path, key), with_json_text=with_json_text)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from iter_leaves(item, (*path, index), with_json_text=with_json_text)
    elif isinstance(value, str):
        parsed = _parse_json_container(value)
        if parsed is None or with_json_text:
            yield path, value
        if parsed is not None:
            yield from iter_leaves(parsed, (*path, JSON_MARK), with_json_text=with_json_text)
    else:
        yield path, value


def _parse_json_container(text: str) -> dict[str, Any] | list[Any] | None:
    if text[:1] not in ("{", "["):
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, (dict, list)) else None


def leaf_text(value: Any) -> str:
    """Join every leaf and every key of ``value`` into one text, one item per line."""
    lines = []
    for path, leaf in iter_leaves(value):
        lines.extend(str(part) for part in path if isinstance(part, str))
        lines.append(str(leaf))
    return "\n".join(lines)


def marked_value(value: Any) -> Any:
    """Return a value of the same type as ``value`` that differs from it in every item."""
    if isinstance(value, str):
        return value + "~"
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, (list, tuple)):
        return type(value)(marked_value(item) for item in value) if value else type(value)(["~"])
    if isinstance(value, Mapping):
        return {key: marked_value(item) for key, item in value.items()} if value else {"~": "~"}
    return "~"


def value_paths(plain: Any, plain_marked: Any) -> dict[tuple[Any, ...], Any]:
    """Return the leaves of ``plain`` that differ in ``plain_marked``, by path.

    ``plain_marked`` is the same case built with ``marked_value``, so these leaves are the places
    where the tool's input carries the case's value.
    """
    marked = dict(iter_leaves(plain_marked, with_json_text=False))
    return {
        path: leaf
        for path, leaf in iter_leaves(plain, with_json_text=False)
        if marked.get(path, _MISSING) != leaf
    }


# ---------------------------------------------------------------------------------------------
# Tools


@dataclass
class Prepared:
    """One case in a tool's own input, plus what is needed to judge the output."""

    case: Any
    native: Any
    input_text: str
    # Ours: the value that `scrub_harness.extract` reads from the input.
    expected: Any = None
    # Sentry and logfire: the input's leaves that carry the value (see `value_paths`).
    value_leaves: dict[tuple[Any, ...], Any] = field(default_factory=dict)


class Tool:
    """A scrubber under test: converts cases, scrubs them, and reads its own output."""

    name = ""
    label = ""

    def prepare(self, case: Any) -> Prepared:
        raise NotImplementedError

    def round_work(self, prepared: Sequence[Prepared]) -> list[tuple[Callable[[Any], Any], Any]]:
        """Return fresh ``(scrub, argument)`` pairs for one timed round."""
        raise NotImplementedError

    def run(self, item: Prepared) -> Any:
        """Scrub one case outside the timed rounds and return the output to check."""
        raise NotImplementedError

    def output_text(self, output: Any) -> str:
        raise NotImplementedError

    def keep_changed(self, item: Prepared, output: Any) -> bool | None:
        """Tell whether a must-keep value changed; None when the input never carried it."""
        raise NotImplementedError


class OurTool(Tool):
    name = "ours"

    def __init__(self) -> None:
        self.label = f"raptorflow-otel {version('raptorflow-otel')}"

    def prepare(self, case: Any) -> Prepared:
        native = scrub_harness.build_input(case)
        return Prepared(
            case,
            native,
            scrub_harness.serialize(native),
            expected=scrub_harness.extract(case, native),
        )

    def round_work(self, prepared: Sequence[Prepared]) -> list[tuple[Callable[[Any], Any], Any]]:
        scrubber = Scrubber(ScrubOptions())
        work: list[tuple[Callable[[Any], Any], Any]] = []
        for item in prepared:
            if item.case.location == "sentry_event":
                work.append((scrubber.scrub_sentry_event, copy.deepcopy(item.native)))
            else:
                work.append((scrubber.scrub_span, item.native))
        return work

    def run(self, item: Prepared) -> Any:
        [(scrub, argument)] = self.round_work([item])
        return scrub(argument)

    def output_text(self, output: Any) -> str:
        return scrub_harness.serialize(output)

    def keep_changed(self, item: Prepared, output: Any) -> bool | None:
        # A dropped span (None) loses the value, so it counts as changed.
        return output is None or scrub_harness.extract(item.case, output) != item.expected


class PlainDataTool(Tool):
    """A tool whose input and output are compared as plain dicts and lists."""

    def build(self, case: Any) -> tuple[Any, Any]:
        """Return the tool's input for ``case`` and the same input as plain data."""
        raise NotImplementedError

    def prepare(self, case: Any) -> Prepared:
        native, plain = self.build(case)
        prepared = Prepared(case, native, leaf_text(plain))
        if not is_leak(case):
            _, plain_marked = self.build(dataclasses.replace(case, value=marked_value(case.value)))
            prepared.value_leaves = value_paths(plain, plain_marked)
        return prepared

    def output_text(self, output: Any) -> str:
        return leaf_text(output)

    def keep_changed(self, item: Prepared, output: Any) -> bool | None:
        if not item.value_leaves:
            return None
        after = dict(iter_leaves(output, with_json_text=False))
        return any(after.get(path, _MISSING) != leaf for path, leaf in item.value_leaves.items())


class SentryRelayTool(PlainDataTool):
    name = "sentry"

    def __init__(self) -> None:
        self.label = f"sentry-relay {version('sentry-relay')}"
        config = sentry_relay.convert_datascrubbing_config(SENTRY_DEFAULT_DATASCRUBBING)
        self.config_json = json.dumps(config)
        # A fixed receive time keeps the normalized events the same from one build to the next.
        self.normalizer = sentry_relay.StoreNormalizer(received_at=RECEIVED_AT)

    def build(self, case: Any) -> tuple[Any, Any]:
        if case.location == "sentry_event":
            events = [scrub_harness.build_sentry_event(case)]
        else:
            events = sentry_events_for_span(scrub_harness.build_span(case))
        normalized = [self.normalizer.normalize_event(event) for event in events]
        for event in normalized:
            event.pop("_meta", None)
        return [json.dumps(event) for event in normalized], normalized

    def strip_events(self, events: list[str]) -> list[str]:
        return [
            sentry_relay.pii_strip_event(
                self.config_json, event, json_dumps=_unchanged, json_loads=_unchanged
            )
            for event in events
        ]

    def round_work(self, prepared: Sequence[Prepared]) -> list[tuple[Callable[[Any], Any], Any]]:
        return [(self.strip_events, item.native) for item in prepared]

    def run(self, item: Prepared) -> Any:
        outputs = [json.loads(text) for text in self.strip_events(item.native)]
        for event in outputs:
            # `_meta` records what was removed (rule names and lengths), not the removed text.
            event.pop("_meta", None)
        return outputs


class LogfireTool(PlainDataTool):
    name = "logfire"

    def __init__(self) -> None:
        self.label = f"logfire {version('logfire')}"
        self.scrubber = LogfireScrubber(patterns=None)

    def build(self, case: Any) -> tuple[Any, Any]:
        if case.location == "sentry_event":
            span = span_for_sentry_event(scrub_harness.build_sentry_event(case))
        else:
            span = scrub_harness.build_span(case)
        native = span_to_dict(span)
        return native, plain_logfire_span(native)

    def round_work(self, prepared: Sequence[Prepared]) -> list[tuple[Callable[[Any], Any], Any]]:
        # A shallow copy is enough: scrub_span replaces the attributes, events and links of the
        # dict and never changes the objects it read them from.
        return [(self.scrubber.scrub_span, dict(item.native)) for item in prepared]

    def run(self, item: Prepared) -> Any:
        span = dict(item.native)
        self.scrubber.scrub_span(span)
        return plain_logfire_span(span)


def _unchanged(value: str) -> str:
    return value


# ---------------------------------------------------------------------------------------------
# Span to Sentry events (see the module docstring for the mapping)


def _seconds(nanoseconds: int | None) -> float:
    return (nanoseconds or 0) / 1e9


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _first(attributes: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return value
    return None


def child_span_op_and_description(span: ReadableSpan) -> tuple[str, str]:
    """Return the Sentry ``op`` and ``description`` of a child span, by sentry-sdk 2.76's OTel rules.

    sentry-sdk 2.76 reads only the old semantic-convention names (``db.statement``,
    ``http.method``, ``http.target``, ``http.url``). The current names are read too, because
    sentry-sdk's own database and HTTP integrations put the query and the URL there anyway.
    """
    attributes = span.attributes or {}
    statement = _first(attributes, SQL_KEYS)
    if statement is not None:
        return "db", str(statement)
    if _first(attributes, DB_SYSTEM_KEYS) is not None:
        return "db", span.name
    method = _first(attributes, HTTP_METHOD_KEYS)
    if method is None:
        return span.name, span.name
    op = {SpanKind.SERVER: "http.server", SpanKind.CLIENT: "http.client"}.get(span.kind, "http")
    target = attributes.get("http.target")
    if not target and attributes.get("url.path"):
        query = attributes.get("url.query")
        target = f"{attributes['url.path']}?{query}" if query else attributes["url.path"]
    if target:
        return op, f"{method} {target}"
    url = _first(attributes, ("http.url", "url.full"))
    if url is not None:
        parts = urlsplit(str(url))
        return op, f"{method} {parts.scheme}://{parts.netloc}{parts.path}"
    return op, str(method)


def sentry_events_for_span(span: ReadableSpan) -> list[dict[str, Any]]:
    """Build the transaction, and one error event per ``exception`` span event, for one span."""
    start = _seconds(span.start_time)
    end = max(_seconds(span.end_time), start)
    op, description = child_span_op_and_description(span)
    child: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "span_id": CHILD_SPAN_ID,
        "parent_span_id": ROOT_SPAN_ID,
        "op": op,
        "description": description,
        "start_timestamp": start,
        "timestamp": end,
        "data": {key: _json_value(value) for key, value in (span.attributes or {}).items()},
    }
    links = [
        {
            "trace_id": format(link.context.trace_id, "032x"),
            "span_id": format(link.context.span_id, "016x"),
            "attributes": {key: _json_value(value) for key, value in (link.attributes or {}).items()},
        }
        for link in span.links
    ]
    if links:
        child["links"] = links
    transaction: dict[str, Any] = {
        "type": "transaction",
        "event_id": "0" * 31 + "1",
        "platform": "python",
        "transaction": "bench",
        "transaction_info": {"source": "custom"},
        "start_timestamp": start,
        "timestamp": end,
        "contexts": {
            "trace": {"trace_id": TRACE_ID, "span_id": ROOT_SPAN_ID, "op": "function"},
            "otel": {"resource": _resource_attributes(span)},
        },
        "spans": [child],
    }
    for event in span.events:
        if not _is_exception_event(event):
            child["data"].update(
                (key, _json_value(value)) for key, value in (event.attributes or {}).items()
            )
    errors = [
        _error_event(event.attributes or {}, index, _seconds(event.timestamp) or end)
        for index, event in enumerate(span.events)
        if _is_exception_event(event)
    ]
    return [transaction, *errors]


def _resource_attributes(span: ReadableSpan) -> dict[str, Any]:
    if span.resource is None:
        return {}
    return {key: _json_value(value) for key, value in span.resource.attributes.items()}


def _is_exception_event(event: Any) -> bool:
    attributes = event.attributes or {}
    return event.name == "exception" or any(key in attributes for key in EXCEPTION_KEYS)


def _error_event(attributes: Mapping[str, Any], index: int, timestamp: float) -> dict[str, Any]:
    stacktrace = attributes.get("exception.stacktrace")
    values: list[dict[str, Any]] = []
    if stacktrace:
        values = parse_exception_chain(str(stacktrace))
    if not values:
        full_type = str(attributes.get("exception.type") or "Error")
        values = [
            {
                "type": full_type.rpartition(".")[2],
                "value": str(attributes.get("exception.message", "")),
            }
        ]
    event: dict[str, Any] = {
        "event_id": format(index + 2, "032x"),
        "level": "error",
        "platform": "python",
        "timestamp": timestamp,
        "exception": {"values": values},
        "contexts": {"trace": {"trace_id": TRACE_ID, "span_id": CHILD_SPAN_ID, "op": "function"}},
    }
    extra = {
        key: _json_value(value) for key, value in attributes.items() if key not in EXCEPTION_KEYS
    }
    if extra:
        event["extra"] = extra
    return event


# ---------------------------------------------------------------------------------------------
# Sentry events and logfire spans


def span_for_sentry_event(event: Mapping[str, Any]) -> ReadableSpan:
    """Build a span whose attributes are the event's top-level fields, nested ones as JSON."""
    attributes: dict[str, Any] = {}
    for key, value in event.items():
        if isinstance(value, (dict, list)):
            attributes[key] = json.dumps(value)
        elif value is not None:
            attributes[key] = value
    return ReadableSpan(name="sentry event", attributes=attributes, resource=Resource.get_empty())


def plain_logfire_span(span: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the scrubbed parts of a logfire span dict into plain dicts and lists."""
    resource = span.get("resource")
    return {
        "name": span["name"],
        "attributes": dict(span["attributes"] or {}),
        "events": [
            {"name": event.name, "attributes": dict(event.attributes or {})}
            for event in span["events"]
        ],
        "links": [{"attributes": dict(link.attributes or {})} for link in span["links"]],
        "resource": dict(resource.attributes) if resource is not None else {},
    }


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class ToolResult:
    tool: Tool
    leaks_total: int = 0
    missed: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)
    keeps_total: int = 0
    unmeasured: list[str] = field(default_factory=list)
    by_detector: dict[str, list[int]] = field(default_factory=dict)
    by_location: dict[str, list[int]] = field(default_factory=dict)
    # Seconds of each timed round, per case kind (SPAN_CASES, EVENT_CASES).
    round_seconds: dict[str, list[float]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)

    @property
    def caught(self) -> int:
        return self.leaks_total - len(self.missed)

    @property
    def recall(self) -> float:
        return self.caught / self.leaks_total if self.leaks_total else 0.0

    @property
    def items_per_second(self) -> float:
        """Return all cases divided by the median time of a whole round."""
        round_totals = [sum(rounds) for rounds in zip(*self.round_seconds.values())]
        return _rate(sum(self.items.values()), statistics.median(round_totals))

    def kind_items_per_second(self, kind: str) -> float:
        return _rate(self.items[kind], statistics.median(self.round_seconds[kind]))


def _rate(items: int, seconds: float) -> float:
    return items / seconds if seconds > 0 else float("inf")


def _count(table: dict[str, list[int]], name: str, caught: bool) -> None:
    counts = table.setdefault(name, [0, 0])
    counts[0] += int(caught)
    counts[1] += 1


def check_results(tool: Tool, prepared: Sequence[Prepared], result: ToolResult) -> None:
    """Scrub every case once, untimed, and record recall and false positives."""
    for item in prepared:
        case = item.case
        if is_leak(case):
            present = scrub_harness.leaked(case, item.input_text)
            if len(present) < len(case.secrets):
                result.unmeasured.append(case.id)
                continue
            output = tool.run(item)
            caught = not scrub_harness.leaked(case, tool.output_text(output))
            result.leaks_total += 1
            if not caught:
                result.missed.append(case.id)
            _count(result.by_detector, case.detector or "(none)", caught)
            _count(result.by_location, case.location, caught)
        else:
            output = tool.run(item)
            changed = tool.keep_changed(item, output)
            if changed is None:
                result.unmeasured.append(case.id)
                continue
            result.keeps_total += 1
            if changed:
                result.false_positives.append(case.id)


def case_kind(case: Any) -> str:
    return EVENT_CASES if case.location == "sentry_event" else SPAN_CASES


def time_rounds(tool: Tool, prepared: Sequence[Prepared], rounds: int) -> dict[str, list[float]]:
    """Time ``rounds`` passes of the scrubbing calls alone over the whole corpus.

    Span cases and Sentry event cases are timed apart, so the report can show each kind.
    """
    seconds: dict[str, list[float]] = {SPAN_CASES: [], EVENT_CASES: []}
    for _ in range(rounds):
        work = tool.round_work(prepared)
        for kind, kind_seconds in seconds.items():
            group = [pair for item, pair in zip(prepared, work) if case_kind(item.case) == kind]
            start = time.perf_counter()
            for scrub, argument in group:
                scrub(argument)
            kind_seconds.append(time.perf_counter() - start)
    return seconds


def measure(tool: Tool, corpus: Corpus, rounds: int) -> ToolResult:
    prepared = [tool.prepare(case) for case in corpus.cases]
    result = ToolResult(tool=tool)
    for kind in (SPAN_CASES, EVENT_CASES):
        result.items[kind] = sum(1 for item in prepared if case_kind(item.case) == kind)
    check_results(tool, prepared, result)
    result.round_seconds = time_rounds(tool, prepared, rounds)
    return result


# ---------------------------------------------------------------------------------------------
# Report


def _percent(caught: int, total: int) -> str:
    return f"{100.0 * caught / total:5.1f}%" if total else "    -"


def print_summary(results: Sequence[ToolResult], corpus: Corpus, rounds: int) -> None:
    print(
        f"Scrubbing benchmark: {len(corpus.leaks)} leak cases, {len(corpus.keeps)} must-keep "
        f"cases, median of {rounds} round(s)"
    )
    for result in results:
        print(f"  {result.tool.name:<8} = {result.tool.label}")
    print()
    print(
        f"{'tool':<8}  {'recall':>7}  {'leaks missed':>12}  {'false positives':>15}  "
        f"{'items/s':>8}  {'span cases/s':>12}  {'event cases/s':>13}"
    )
    for result in results:
        print(
            f"{result.tool.name:<8}  {_percent(result.caught, result.leaks_total):>7}  "
            f"{len(result.missed):>5} of {result.leaks_total:<4}  "
            f"{len(result.false_positives):>6} of {result.keeps_total:<5}  "
            f"{result.items_per_second:>8,.0f}  "
            f"{result.kind_items_per_second(SPAN_CASES):>12,.0f}  "
            f"{result.kind_items_per_second(EVENT_CASES):>13,.0f}"
        )


def print_breakdown(title: str, results: Sequence[ToolResult], attribute: str) -> None:
    names = sorted({name for result in results for name in getattr(result, attribute)})
    print()
    print(title)
    header = f"  {'':<22}{'cases':>6}" + "".join(f"  {result.tool.name:>8}" for result in results)
    print(header)
    for name in names:
        tables = [getattr(result, attribute).get(name, [0, 0]) for result in results]
        total = max(counts[1] for counts in tables)
        cells = "".join(f"  {_percent(caught, count):>8}" for caught, count in tables)
        print(f"  {name:<22}{total:>6}{cells}")


def print_case_lists(results: Sequence[ToolResult]) -> None:
    ours, others = results[0], results[1:]
    print()
    found_any = False
    for other in others:
        caught_by_other = sorted(set(ours.missed) - set(other.missed) - set(other.unmeasured))
        if caught_by_other:
            found_any = True
            print(f"Missed by ours, caught by {other.tool.name}: {', '.join(caught_by_other)}")
    if not found_any:
        print("Missed by ours, caught by another tool: none")
    print(f"Missed by ours: {', '.join(ours.missed) or 'none'}")
    for result in results:
        print(
            f"False positives of {result.tool.name}: "
            f"{', '.join(result.false_positives) or 'none'}"
        )
    for result in results:
        if result.unmeasured:
            print(
                f"Not measured for {result.tool.name} (its input never held the secret or "
                f"the value): {', '.join(result.unmeasured)}"
            )


def _ratio(ours: ToolResult, other: ToolResult, kind: str) -> float:
    return ours.kind_items_per_second(kind) / other.kind_items_per_second(kind)


def print_goals(ours: ToolResult, sentry: ToolResult, logfire: ToolResult) -> float:
    best_other = max(sentry.recall, logfire.recall)
    ratio = ours.items_per_second / logfire.items_per_second
    goals = [
        (
            f"recall >= the better of sentry and logfire ({100 * best_other:.1f}%)",
            ours.recall >= best_other,
            f"{100 * ours.recall:.1f}%",
        ),
        (
            "0 false positives on must-keep values",
            not ours.false_positives,
            str(len(ours.false_positives)),
        ),
        (
            "throughput >= 2x logfire's",
            ratio >= 2.0,
            f"{ratio:.3f}x (span cases {_ratio(ours, logfire, SPAN_CASES):.2f}x, "
            f"Sentry event cases {_ratio(ours, logfire, EVENT_CASES):.2f}x)",
        ),
    ]
    print()
    print("Goals")
    for text, is_met, measured in goals:
        print(f"  {'met' if is_met else 'NOT MET':<8} {text}: {measured}")
    return ratio


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help=f"timed passes over the corpus per tool; the median is reported (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument("--quick", action="store_true", help="one timed round, for a smoke test")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    if rounds < 1:
        parser.error(f"--rounds must be at least 1, got {rounds}")

    corpus = load_corpus()
    ours, sentry, logfire = (
        measure(tool, corpus, rounds) for tool in (OurTool(), SentryRelayTool(), LogfireTool())
    )
    results = [ours, sentry, logfire]

    print_summary(results, corpus, rounds)
    print_breakdown("Recall by detector", results, "by_detector")
    print_breakdown("Recall by location", results, "by_location")
    print_case_lists(results)
    ratio = print_goals(ours, sentry, logfire)
    print(
        f"recall_ours={ours.recall:.4f} recall_sentry={sentry.recall:.4f} "
        f"recall_logfire={logfire.recall:.4f} false_positives_ours={len(ours.false_positives)} "
        f"throughput_ratio_vs_logfire={ratio:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
