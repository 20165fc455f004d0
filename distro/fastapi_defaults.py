"""Default telemetry options for apps that use FastAPI's native telemetry.

FastAPI 0.16x creates, besides the server span of each request, an internal span for dependency
resolution, one for the endpoint function and one for response serialization
(``operation_spans``). They triple a request's spans, and with them the cost of recording,
scrubbing and exporting it, while the server span already times the request and database and
HTTP client spans still show what the endpoint did. So the distro turns them off unless
``RAPTORFLOW_FASTAPI_OPERATION_SPANS=true``.

FastAPI has no environment variable for this: the option lives in ``FastAPI(telemetry={...})``.
We wrap ``FastAPI.__init__`` before the app is imported and set the default on the instance's
telemetry options afterwards, so an app that passes ``operation_spans`` itself keeps its choice.
The options dict is read on every request, so the change applies from the first one.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

_logger = logging.getLogger(__name__)

_WRAPPED = "_raptorflow_operation_spans_default"


def set_operation_spans_default(enabled: bool) -> None:
    """Make ``enabled`` the default of FastAPI's ``operation_spans`` option for apps created later."""
    if enabled:
        return  # FastAPI's own default
    from fastapi.applications import FastAPI

    original = FastAPI.__init__
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _apply_default(self, kwargs.get("telemetry"))

    setattr(__init__, _WRAPPED, True)
    FastAPI.__init__ = __init__


def _apply_default(app: Any, requested: Any) -> None:
    if isinstance(requested, dict) and "operation_spans" in requested:
        return
    options = getattr(app, "_telemetry", None)
    if isinstance(options, dict) and "operation_spans" in options:
        options["operation_spans"] = False
    else:
        # NOTE: a FastAPI release that renames its options keeps its own default (spans on).
        _logger.debug("FastAPI has no operation_spans option here; its internal spans stay on.")
