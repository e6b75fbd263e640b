"""An OTLP/gRPC span exporter that sends ``streams.otlp_encoding``'s bytes.

Why not the SDK's ``OTLPSpanExporter``: its cost is the encoding (``streams.otlp_encoding`` says
how much), and it offers no public way to hand it another encoder (the hook is a private method,
which the house rules forbid overriding). This exporter implements the SDK's public
``SpanExporter`` interface and sends the request over a plain gRPC channel with the bytes as the
message (grpc's public generic-call API). The http/protobuf exporter would not help: it encodes
with the same code, only the transport differs.

Delivery behaves like the SDK exporter's: one request per batch the ``BatchSpanProcessor`` hands
over, with the deadline ``timeout_s``; the failures gRPC calls transient (UNAVAILABLE, ...) are
retried with full-jitter exponential backoff inside that deadline (tenacity, as
``processors.backoff``), a fresh channel after UNAVAILABLE so a collector that restarted is found
at once rather than after gRPC's reconnect backoff; anything else, or the deadline, drops the
batch with one logged error (spans are never worth blocking the worker for). ``shutdown`` stops a
retry in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlparse

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from streams.otlp_encoding import encode_request

log = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# the codes the SDK's OTLP exporter retries (opentelemetry-exporter-otlp-proto-grpc)
RETRYABLE_CODES = frozenset({
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
})


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` and whether TLS is asked for, from ``http://host:port``, ``https://...`` or ``host:port``."""
    if "://" not in endpoint:
        return endpoint, False
    parsed = urlparse(endpoint)
    return parsed.netloc, parsed.scheme == "https"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in RETRYABLE_CODES  # type: ignore[attr-defined]


class LeanOTLPSpanExporter(SpanExporter):
    """OTLP/gRPC trace export with the lean encoder; plaintext unless ``insecure=False`` (then TLS)."""

    def __init__(
        self,
        endpoint: str,
        *,
        insecure: bool = True,
        timeout_s: float = 10.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 32.0,
    ) -> None:
        self.target, tls = grpc_target(endpoint)
        self._secure = tls and not insecure
        self.timeout_s = timeout_s
        self._backoff = wait_random_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._call = None
        self._connect()

    def _connect(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            if self._channel is not None:
                self._channel.close()
            if self._secure:
                self._channel = grpc.secure_channel(self.target, grpc.ssl_channel_credentials())
            else:
                self._channel = grpc.insecure_channel(self.target)
            # bytes in, bytes out: the request is already encoded, the response (partial success) unread
            self._call = self._channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopping.is_set():
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        request = encode_request(spans)
        deadline = time.monotonic() + self.timeout_s

        def wait(state) -> float:  # type: ignore[no-untyped-def]
            return min(self._backoff(state), max(0.0, deadline - time.monotonic()))

        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            wait=wait,
            stop=stop_after_delay(self.timeout_s),
            sleep=self._sleep,
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            retrying(self._send, request, deadline)
        except grpc.RpcError as exc:
            log.error("span export to %s failed (%d spans dropped): %s %s", self.target, len(spans),
                      exc.code(), exc.details())  # type: ignore[attr-defined]
            return SpanExportResult.FAILURE
        except _Stopped:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _send(self, request: bytes, deadline: float) -> None:
        call = self._call
        if self._stopping.is_set() or call is None:
            raise _Stopped()
        call(request, timeout=max(0.001, deadline - time.monotonic()))

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopped()

    def _before_retry(self, state) -> None:  # type: ignore[no-untyped-def]
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, grpc.RpcError) and exc.code() is grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
            self._connect()  # a restarted collector: reconnect now, not after gRPC's reconnect backoff
        if state.attempt_number == 1:
            log.warning("span export to %s failed (%r), retrying", self.target, exc)

    def shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is held here: the batch processor flushes into ``export``


class _Stopped(Exception):
    """Shutdown interrupted a retry."""
