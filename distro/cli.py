"""The `raptorflow-otel` command."""

from __future__ import annotations

import argparse
import logging
import sys

from raptorflow_otel.distro.providers import package_version
from raptorflow_otel.distro.settings import SETTINGS, Settings, load_settings, markdown_table, mask
from raptorflow_otel.exporters import otlp


def _settings_command(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    for row in SETTINGS:
        default = "" if row.default in (None, ()) else f" (default: {row.default})"
        print(f"{row.name}{default}\n    {row.doc}")
    return 0


def _check_command(args: argparse.Namespace) -> int:
    """Print what the current environment configures, after the same validation the app runs."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    settings = load_settings()
    for name in sorted(settings.explicit):
        row = next(row for row in SETTINGS if row.name == name)
        value = settings[name]
        shown = mask(str(value)) if row.secret else value
        print(f"{name} = {shown}")
    sentry = bool(settings["SENTRY_DSN"])
    spotlight = settings["SENTRY_SPOTLIGHT"]
    print(f"Sentry export: {'on' if sentry else 'off'}" + (f", Spotlight at {spotlight}" if spotlight else ""))
    for signal in ("TRACES", "METRICS"):
        endpoint = otlp.signal_endpoint(settings, signal)
        print(f"OTLP {signal.lower()}: {endpoint or 'off'} ({otlp.protocol(settings, signal)})")
    print(_scrubbing_summary(settings))
    return 0


def _scrubbing_summary(settings: Settings) -> str:
    if not settings["RAPTORFLOW_SCRUB_ENABLED"]:
        return "Privacy scrubbing: OFF (RAPTORFLOW_SCRUB_ENABLED=false), raw data is exported"
    parts = ["on"]
    disabled = list(settings["RAPTORFLOW_SCRUB_DISABLED_RULES"])
    if not settings["RAPTORFLOW_SCRUB_IP_ADDRESSES"]:
        disabled.append("ip-address")
    if disabled:
        parts.append("rules off: " + ", ".join(sorted(set(disabled))))
    patterns = len(settings["RAPTORFLOW_SCRUB_EXTRA_PATTERNS"])
    if patterns:
        parts.append(f"{patterns} extra pattern(s)")
    parts.append("keyed pseudonyms" if settings["RAPTORFLOW_SCRUB_HASH_KEY"] else "no pseudonyms")
    return "Privacy scrubbing: " + ", ".join(parts)


def _scrub_command(args: argparse.Namespace) -> int:
    """Print what the scrubber, configured by the current environment, makes of one value."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from raptorflow_otel.processors.scrubbing import Scrubber, ScrubOptions

    settings = load_settings()
    if not settings["RAPTORFLOW_SCRUB_ENABLED"]:
        print(
            "note: RAPTORFLOW_SCRUB_ENABLED=false, so the app exports this value raw; "
            "below is what the rules would make of it.",
            file=sys.stderr,
        )
    scrubber = Scrubber(ScrubOptions.from_settings(settings))
    fired: list[str] = []
    attributes = {"db.system": args.db_system} if args.db_system else None
    print(scrubber.scrub_value(args.key, args.value, fired, attributes=attributes))
    print("rules: " + (", ".join(fired) if fired else "none"), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raptorflow-otel",
        description="OpenTelemetry distribution for Python web backends. Run your app with "
        "`opentelemetry-instrument uvicorn app:app`; this command inspects the configuration.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    settings = commands.add_parser("settings", help="list every environment variable the distro reads")
    settings.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    settings.set_defaults(run=_settings_command)
    check = commands.add_parser("check", help="validate the current environment and show where telemetry goes")
    check.set_defaults(run=_check_command)
    scrub = commands.add_parser(
        "scrub",
        help="print what privacy scrubbing makes of a value (to try RAPTORFLOW_SCRUB_* settings)",
    )
    scrub.add_argument("value", help="the attribute value, e.g. 'login failed for ops@example.com'")
    scrub.add_argument("--key", default="message", help="the attribute key it is recorded under (default: message)")
    scrub.add_argument("--db-system", help="the span's db.system, for db.statement values (e.g. redis)")
    scrub.set_defaults(run=_scrub_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
