"""The example shop plus a route that reports the distro's health, for the exporter fault tests.

``GET /telemetry-health`` returns ``raptorflow_otel.distro.health.get_health_status()`` and the
process's resident memory, as an app's own health endpoint would.
"""

import psutil
from shop_app import app  # noqa: F401 - the app uvicorn serves

from raptorflow_otel.distro.health import get_health_status


@app.get("/telemetry-health")
def telemetry_health() -> dict:
    return {"status": get_health_status(), "rss_mb": psutil.Process().memory_info().rss / 2**20}
