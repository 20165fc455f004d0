"""The `raptorflow-otel` command."""

from __future__ import annotations

import argparse
import logging
import sys

from raptorflow_otel.distro.providers import package_version
from raptorflow_otel.distro.settings import SETTINGS, load_settings, markdown_table, mask
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
