"""The benchmark app with sentry-sdk's own integrations: what a team writes when it uses sentry-sdk.

sentry-sdk has no launcher, so the app initializes it before creating the FastAPI app. Tracing is
on for every request (``traces_sample_rate=1.0``), and the FastAPI, Starlette and SQLAlchemy
integrations enable themselves. The DSN, release and environment come from the ``SENTRY_*``
variables, as sentry-sdk reads them itself.

One setting differs from sentry-sdk's defaults: its send queue has room for 10,000 envelopes
instead of 100. The in-process driver sends requests back to back, faster than sentry-sdk's single sender
thread delivers, and with the default queue sentry-sdk would drop transactions and report less
CPU than it costs when every transaction is sent.
"""

import sentry_sdk

sentry_sdk.init(traces_sample_rate=1.0, transport_queue_size=10_000)

from overhead_app import app  # noqa: E402,F401 - must come after init, as sentry-sdk's docs require
