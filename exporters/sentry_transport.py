"""sentry-sdk's HTTP transport with a lighter request path, for sending from the export thread.

sentry-sdk sends each envelope from a background worker through urllib3. The exporter already
runs on the batch processor's worker thread, so `SentryExporter` calls the transport's
``_send_envelope`` there directly, and this subclass sends the request on one keep-alive
``http.client`` connection. On the development machine a loopback envelope cost about 440 µs of
CPU through sentry-sdk's queue and urllib3, and about 190 µs this way (`bench/overhead.py`).

Everything else is sentry-sdk's: DSN authentication headers, envelope serialization and
compression, rate limits (``Retry-After`` and ``X-Sentry-Rate-Limits``), client reports and the
accounting of lost events. With a proxy configured, the request goes through sentry-sdk's own
urllib3 proxy pool, since ``http.client`` does not read proxy settings.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
from typing import Any, Mapping
from urllib.parse import urlsplit

import urllib3
from sentry_sdk.transport import HttpTransport

_logger = logging.getLogger(__name__)

# Seconds to connect, send and read one response. sentry-sdk's worker allows 30 s, but the export
# thread sends synchronously, so a stalled server must give up sooner.
# NOTE: not capped by OTEL_BSP_EXPORT_TIMEOUT. With both receivers stalled and default timeouts, a
# SIGTERM took about 40 s to exit (tests/test_shutdown.py measures the bounded case).
REQUEST_TIMEOUT_SECONDS = 10.0


class _Response:
    """The parts of a urllib3 response that sentry-sdk's response handling reads."""

    def __init__(self, status: int, headers: Any, data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def close(self) -> None:
        pass


class DirectHttpTransport(HttpTransport):
    """sentry-sdk's HttpTransport sending over one ``http.client`` keep-alive connection."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._connection_lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._direct = not isinstance(self._pool, urllib3.ProxyManager)

    def _request(self, method: str, endpoint_type: Any, body: Any, headers: Mapping[str, str]) -> Any:
        if not self._direct:
            return super()._request(method, endpoint_type, body, headers)
        url = urlsplit(self._auth.get_api_url(endpoint_type))
        with self._connection_lock:
            for attempt in range(2):
                connection = self._connection or self._connect(url.scheme, url.hostname or "", url.port)
                try:
                    connection.request(method, url.path, body=body, headers=dict(headers))
                    response = connection.getresponse()
                    data = response.read()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # The server closed an idle keep-alive connection: send once more on a new one.
                    self._close_connection()
                    if attempt:
                        raise
                    continue
                except BaseException:
                    self._close_connection()
                    raise
                if response.will_close:
                    self._close_connection()
                else:
                    self._connection = connection
                return _Response(response.status, response.headers, data)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connect(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=REQUEST_TIMEOUT_SECONDS, context=self._tls_context())
        return http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_SECONDS)

    def _tls_context(self) -> ssl.SSLContext:
        """Verify the server with the CA bundle sentry-sdk would use, and the client certificate if any."""
        pool = self._get_pool_options()
        context = ssl.create_default_context(cafile=pool.get("ca_certs"))
        if pool.get("cert_file"):
            context.load_cert_chain(pool["cert_file"], pool.get("key_file"))
        return context

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def kill(self) -> None:
        super().kill()
        with self._connection_lock:
            self._close_connection()

