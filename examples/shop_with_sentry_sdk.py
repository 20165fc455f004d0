"""The example shop as many teams already run it: calling ``sentry_sdk.init`` at import.

Run it like the plain shop (``opentelemetry-instrument uvicorn shop_with_sentry_sdk:app
--app-dir examples``). The distro keeps exporting through its own client, and the app's own
sentry-sdk integrations do not report the same requests and errors a second time.
"""

import os

import sentry_sdk

sentry_sdk.init(
    dsn=os.environ.get("SENTRY_DSN"),
    traces_sample_rate=1.0,
    environment=os.environ.get("SENTRY_ENVIRONMENT", "production"),
)

from shop_app import app, inventory_app  # noqa: E402 - sentry-sdk must patch FastAPI first

__all__ = ["app", "inventory_app"]
