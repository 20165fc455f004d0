"""raptorflow-otel's distro: settings, provider set-up and instrumentation choices.

Users need nothing from here in their code: ``opentelemetry-instrument`` loads the distro through
its entry points. `get_health_status` is for an app that wants to expose the agent's health.
"""

from raptorflow_otel.distro.health import get_health_status

__all__ = ["get_health_status"]
