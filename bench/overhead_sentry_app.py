"""The benchmark app with sentry-sdk's own integrations: what a team writes when it uses sentry-sdk.

sentry-sdk has no launcher, so the app initializes it before creating the FastAPI app. Tracing is
on for every request (``traces_sample_rate=1.0``), and the FastAPI, Starlette and SQLAlchemy
integrations enable themselves. The DSN, release and environment come from the ``SENTRY_*``
variables, as sentry-sdk reads them itself.
"""

import sentry_sdk

sentry_sdk.init(traces_sample_rate=1.0)

from overhead_app import app  # noqa: E402,F401 - must come after init, as sentry-sdk's docs require
