"""Process-wide state of the distro: the settings read at start-up and what was built from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raptorflow_otel.distro.providers import Telemetry
    from raptorflow_otel.distro.settings import Settings

# Set by RaptorflowDistro.configure; None when another distro runs `opentelemetry-instrument`.
settings: "Settings | None" = None
# Set by RaptorflowConfigurator; None when telemetry is off or not exported.
telemetry: "Telemetry | None" = None
# Instrumentations the distro installed, by entry-point name, with the mode used.
instrumented: dict[str, str] = {}
