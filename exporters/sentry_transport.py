"""sentry-sdk's HTTP transport with a lighter request path, for sending from the export thread.

sentry-sdk sends each envelope from a background worker through urllib3. The exporter already
runs on the batch processor's worker thread, so `SentryExporter` sends a batch's envelopes there
directly, through `DirectHttpTransport.send_envelopes`. Compared with sentry-sdk's path:

- requests go over one `KeepAliveConnection`, pipelined in groups;
- envelopes under 32 KiB go uncompressed, and larger ones are gzipped in one call, where
  sentry-sdk streams every envelope through ``GzipFile`` in several writes;
- no debug log record is built per envelope while debug is off.

Every system call and every zlib call releases the GIL, and while requests run, each release hands
the GIL to the app's threads and back. Fewer of them is what made this path cheaper. In the
overhead benchmark's in-process run, sending an envelope took about 420 µs of the worker's CPU
through sentry-sdk's steps with ``http.client``, and about 60 µs in pipelined groups
(`SentryExporter` sends groups of 16 through `send_envelopes`).

Everything else is sentry-sdk's: DSN authentication headers, envelope serialization, rate limits
(``Retry-After`` and ``X-Sentry-Rate-Limits``), client reports and the accounting of lost events.
With a proxy configured, the request goes through sentry-sdk's own urllib3 proxy pool.
"""

from __future__ import annotations

import gzip
import io
import logging
import ssl
import threading
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import urllib3
from sentry_sdk.consts import EndpointType
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import HttpTransport

from raptorflow_otel.exporters.http_keepalive import KeepAliveConnection, ResponseHeaders

_logger = logging.getLogger(__name__)

# Seconds to connect, send and read one response. sentry-sdk's worker allows 30 s, but the export
# thread sends synchronously, so a stalled server must give up sooner.
# NOTE: not capped by OTEL_BSP_EXPORT_TIMEOUT. With both receivers stalled and default timeouts, a
# SIGTERM took about 40 s to exit (tests/test_shutdown.py measures the bounded case).
REQUEST_TIMEOUT_SECONDS = 10.0

# Envelopes smaller than this are sent uncompressed. Sentry's own Node.js SDK uses the same
# threshold (GZIP_THRESHOLD in @sentry/node's HTTP transport). A typical transaction is 2 KB, and
# compressing it cost about 75 µs of the export thread's CPU in the overhead benchmark, mostly for
# handing over the GIL that zlib releases.
COMPRESS_MIN_BYTES = 32 * 1024


class _Response:
    """The parts of a urllib3 response that sentry-sdk's response handling reads."""

    def __init__(self, status: int, headers: ResponseHeaders, data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def close(self) -> None:
        pass


class DirectHttpTransport(HttpTransport):
    """sentry-sdk's HttpTransport sending over one keep-alive connection, compressing large envelopes only."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._connection_lock = threading.Lock()
        self._connection: KeepAliveConnection | None = None
        self._direct = not isinstance(self._pool, urllib3.ProxyManager)

    def _prepare_envelope(self, envelope: Envelope) -> tuple[Envelope, io.BytesIO, dict[str, str]] | None:
        """sentry-sdk's steps, without the debug log record it creates for every envelope.

        sentry-sdk keeps its logger at DEBUG and filters records afterwards, so each envelope
        built a log record and walked the stack for it even with debug off: about a fifth of the
        send path's CPU in the overhead benchmark. With ``SENTRY_DEBUG`` on, sentry-sdk's own
        method runs, log line included.
        """
        if self.options.get("debug"):
            return super()._prepare_envelope(envelope)

        items = []
        for item in envelope.items:
            if self._check_disabled(item.data_category):
                if item.data_category in ("transaction", "error", "default", "statsd"):
                    self.on_dropped_event("self_rate_limits")
                self.record_lost_event("ratelimit_backoff", item=item)
            else:
                items.append(item)
        if not items:
            return None

        # A copy, as in sentry-sdk, so that other references to the original envelope see no change.
        envelope = Envelope(headers=envelope.headers, items=items)
        client_report = self._fetch_pending_client_report(interval=30)
        if client_report is not None:
            envelope.items.append(client_report)

        encoding, body = self._serialize_envelope(envelope)
        headers = {"Content-Type": "application/x-sentry-envelope"}
        if encoding:
            headers["Content-Encoding"] = encoding
        return envelope, body, headers

    def _serialize_envelope(self, envelope: Any) -> tuple[str | None, io.BytesIO]:
        body = envelope.serialize()
        if len(body) < COMPRESS_MIN_BYTES or not self._compression_level or self._compression_algo is None:
            return None, io.BytesIO(body)
        if self._compression_algo != "gzip":
            return super()._serialize_envelope(envelope)
        # mtime=0 keeps the output reproducible. Python 3.11 compresses this in one zlib call.
        return "gzip", io.BytesIO(gzip.compress(body, self._compression_level, mtime=0))

    def send_envelopes(self, envelopes: Sequence[Envelope]) -> Exception | None:
        """Send envelopes now, pipelined on the keep-alive connection, and return the network error.

        The error is returned only when the server looks unreachable: a new connection failed
        before any response, or the server stopped responding (timeout). Rate limits, client reports and lost-event
        accounting are sentry-sdk's, as for one envelope: each response goes through its response
        handling, and each envelope left without a response is recorded as lost to the network.
        """
        if not self._direct:
            for index, envelope in enumerate(envelopes):
                try:
                    self._send_envelope(envelope)  # sentry-sdk records the loss before it raises
                except Exception as error:  # noqa: BLE001 - urllib3's errors are not all OSErrors
                    for unsent in envelopes[index + 1 :]:
                        self._handle_request_error(envelope=unsent, loss_reason="network")
                    return error
            return None

        prepared = [ready for ready in map(self._prepare_envelope, envelopes) if ready is not None]
        if not prepared:
            return None
        requests = []
        for _, body, headers in prepared:
            self._update_headers(headers)
            requests.append((headers, body.getvalue()))

        url = urlsplit(self._auth.get_api_url(EndpointType.ENVELOPE))
        with self._connection_lock:
            connection = self._connection or self._open(url.scheme, url.hostname or "", url.port)
            responses, error = connection.post_many(url.path, requests)
            # Read under the lock: sentry-sdk's worker thread may use the connection next.
            broke_after_response = connection.broke_after_response

        for (envelope, _, _), response in zip(prepared, responses):
            self._handle_response(_Response(*response), envelope)
        for envelope, _, _ in prepared[len(responses) :]:
            self._handle_request_error(envelope=envelope, loss_reason="network")

        # A server that responded on this connection and then closed or reset it is reachable: the
        # next group goes on a new connection. A new connection that fails, or a stall, is not.
        if error is None or (broke_after_response and not isinstance(error, TimeoutError)):
            return None
        return error

    def _request(self, method: str, endpoint_type: Any, body: Any, headers: Mapping[str, str]) -> Any:
        if not self._direct or method != "POST":
            return super()._request(method, endpoint_type, body, headers)
        url = urlsplit(self._auth.get_api_url(endpoint_type))
        path = f"{url.path}?{url.query}" if url.query else url.path
        with self._connection_lock:
            connection = self._connection or self._open(url.scheme, url.hostname or "", url.port)
            return _Response(*connection.post(path, headers, body))

    def _open(self, scheme: str, host: str, port: int | None) -> KeepAliveConnection:
        self._connection = self._connect(scheme, host, port)
        return self._connection

    def _connect(self, scheme: str, host: str, port: int | None) -> KeepAliveConnection:
        if scheme == "https":
            return KeepAliveConnection(host, port or 443, timeout=REQUEST_TIMEOUT_SECONDS, tls=self._tls_context())
        return KeepAliveConnection(host, port or 80, timeout=REQUEST_TIMEOUT_SECONDS)

    def _tls_context(self) -> ssl.SSLContext:
        """Verify the server with the CA bundle sentry-sdk would use, and the client certificate if any."""
        pool = self._get_pool_options()
        context = ssl.create_default_context(cafile=pool.get("ca_certs"))
        if pool.get("cert_file"):
            context.load_cert_chain(pool["cert_file"], pool.get("key_file"))
        return context

    def kill(self) -> None:
        super().kill()
        with self._connection_lock:
            if self._connection is not None:
                self._connection.close()
