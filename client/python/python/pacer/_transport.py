"""HTTP transports that pace Messages requests, for httpx2 (the anthropic SDK's) and httpx.

Each Messages request (``POST /v1/messages``, however its path is spelled) takes a permit
first: the model and ``max_tokens`` from its body, the input estimate from the body's size by
the gateway's calibration, the priority from ``x-pacer-priority`` (taken off the request). The
answer's usage and rate-limit headers are reported when its body ends (streamed answers too). A
429 pauses every peer and the request is held and sent again when the pause ends, for up to
``max_hold`` seconds, so the caller sees no avoidable rate-limit error; a 529 is retried up to
three times; a spend-cap 429 is passed on at once. Everything else passes through untouched.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import zlib
from types import ModuleType
from typing import Any, Optional

from . import _native
from ._permits import Client, Permit, default_client

#: How long a request may be held waiting for the budget (the gateway's default ``max_hold``).
DEFAULT_MAX_HOLD = 240.0


def _decoded(raw: bytes, encoding: Optional[str]) -> bytes:
    """An error body, undone of its content encoding where zlib can (for reading it only)."""
    try:
        if encoding == "gzip":
            return zlib.decompress(raw, 31)
        if encoding == "deflate":
            try:
                return zlib.decompress(raw)
            except zlib.error:
                return zlib.decompress(raw, -15)
    except zlib.error:
        return raw
    return raw


def _own_429(message: str, wait: Optional[float]) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps(
        {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    ).encode()
    headers = [("content-type", "application/json")]
    if wait is not None:
        headers.append(("retry-after", str(max(1, math.ceil(wait)))))
    return 429, headers, body


class _Cycle:
    """One gated request's decisions, shared by the sync and async transports: what to ask for,
    and what each answer means (go round again, or pass it on)."""

    def __init__(self, client: Client, priority: str, api_key: Optional[str], max_hold: float,
                 headers: Any, body: bytes) -> None:
        self.client = client
        self.priority = headers.get(_native.PRIORITY_HEADER) or priority
        self.key = _key_of(headers) or api_key or ""
        self.model, self.max_tokens = _native.request_fields(body)
        self.body_bytes = len(body)
        self.max_hold = max_hold
        self.started = time.monotonic()
        self.overloads = 0
        # The last 429 or 529 (status, headers, raw body), passed on if the hold runs out.
        self.held: Optional[tuple[int, list[tuple[str, str]], bytes]] = None
        self.input_tokens = 0

    def hold_left(self) -> float:
        return max(0.0, self.max_hold - (time.monotonic() - self.started))

    def acquire(self) -> Permit:
        return self.client.acquire(
            self.model,
            api_key=self.key,
            priority=self.priority,
            input_tokens=self.input_tokens,
            max_tokens=self.max_tokens,
            timeout=self.hold_left(),
        )

    def give_up(self, wait: Optional[float], message: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer when no permit comes in time: the last upstream error if there was one
        (its ``retry-after`` telling the real wait), else a 429 of pacer's own."""
        if self.held is None:
            return _own_429(message, wait)
        status, headers, raw = self.held
        if wait is not None:
            headers = [(n, v) for n, v in headers if n.lower() != "retry-after"]
            headers.append(("retry-after", str(max(1, math.ceil(wait)))))
        return status, headers, raw

    def refused(self, error: Exception) -> tuple[int, list[tuple[str, str]], bytes]:
        if isinstance(error, _native.PermitTimeout):
            wait = getattr(error, "retry_after", None)
            message = (
                f"pacer: no permit for {self.model} within the hold ({self.max_hold:.0f}s); "
                f"the wait would be about {math.ceil(wait or 0)}s more"
            )
            return self.give_up(wait, message)
        until = getattr(error, "until", None)
        wait = None if until is None else max(0.0, until - time.time())
        return self.give_up(wait, f"pacer: {error}")

    def answer(self, permit: Permit, status: int, headers: list[tuple[str, str]],
               raw: bytes) -> bool:
        """Settles the permit for an error answer read whole; True when the request should go
        round again, False when the answer is passed on."""
        encoding = _header(headers, "content-encoding")
        body = _decoded(raw, encoding)
        if status == 429:
            if _native.is_spend_cap(body):
                permit._native.fail()
                return False
            permit.report(status, headers, body=body)
            self.held = (status, headers, raw)
            return True
        if status == 529:
            permit.report(status, headers, body=body)
            self.overloads += 1
            if self.overloads > _native.MAX_OVERLOAD_RETRIES:
                return False
            self.held = (status, headers, raw)
            return True
        permit.report(status, headers, body=body)
        return False

    def settled(self, counted: Optional[int]) -> None:
        """After a success's body ended: teach the calibration what the body really counted."""
        if counted is not None and self.body_bytes:
            try:
                self.client.calibrate(self.body_bytes, counted)
            except _native.PacerError:
                pass


def _header(headers: list[tuple[str, str]], name: str) -> Optional[str]:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _key_of(headers: Any) -> Optional[str]:
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def _gated(request: Any) -> bool:
    return _native.endpoint(request.method, request.url.raw_path.decode("ascii", "replace").split("?")[0]) == "messages"


def _strip_priority(request: Any) -> None:
    if _native.PRIORITY_HEADER in request.headers:
        del request.headers[_native.PRIORITY_HEADER]


def make_transports(httpx: ModuleType) -> tuple[type, type]:
    """The sync and async pacing transports for ``httpx`` (the httpx2 or the httpx module)."""

    class _MeteredStream(httpx.SyncByteStream):
        def __init__(self, inner: Any, reader: Any, settle: Any) -> None:
            self._inner = inner
            self._reader = reader
            self._settle = settle

        def __iter__(self) -> Any:
            for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                settle, self._settle = self._settle, None
                if settle is not None:
                    settle()

    class _AsyncMeteredStream(httpx.AsyncByteStream):
        def __init__(self, inner: Any, reader: Any, settle: Any) -> None:
            self._inner = inner
            self._reader = reader
            self._settle = settle

        async def __aiter__(self) -> Any:
            async for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                settle, self._settle = self._settle, None
                if settle is not None:
                    await asyncio.to_thread(settle)

    def response(answer: tuple[int, list[tuple[str, str]], bytes], request: Any) -> Any:
        status, headers, raw = answer
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(raw),
                              request=request)

    def settle_with(cycle: _Cycle, permit: Permit, reader: Any, headers: list[tuple[str, str]]) -> Any:
        def settle() -> None:
            try:
                counted = permit._native.report_read(reader, headers)
            except _native.PacerError:
                return
            cycle.settled(counted)
        return settle

    class Transport(httpx.BaseTransport):
        """Paces Messages requests through pacerd; everything else goes to ``transport``
        (default: a new ``HTTPTransport(**kwargs)``) as it came."""

        def __init__(self, transport: Any = None, *, client: Optional[Client] = None,
                     priority: str = "normal", max_hold: float = DEFAULT_MAX_HOLD,
                     api_key: Optional[str] = None, **kwargs: Any) -> None:
            self._inner = transport if transport is not None else httpx.HTTPTransport(**kwargs)
            self._client = client
            self._priority = priority
            self._max_hold = max_hold
            self._api_key = api_key

        def handle_request(self, request: Any) -> Any:
            if not _gated(request):
                _strip_priority(request)
                return self._inner.handle_request(request)
            body = request.read()
            client = self._client or default_client()
            cycle = _Cycle(client, self._priority, self._api_key, self._max_hold,
                           request.headers, body)
            _strip_priority(request)
            cycle.input_tokens = client.estimate_input(len(body))
            while True:
                try:
                    permit = cycle.acquire()
                except (_native.PermitTimeout, _native.PermitRejected) as e:
                    return response(cycle.refused(e), request)
                try:
                    upstream = self._inner.handle_request(request)
                except httpx.ConnectError:
                    permit.release()
                    raise
                except BaseException:
                    permit.close()
                    raise
                headers = [(k.decode("latin-1"), v.decode("latin-1"))
                           for k, v in upstream.headers.raw]
                if 200 <= upstream.status_code < 300:
                    reader = _native.UsageReader(upstream.headers.get("content-type"),
                                                 upstream.headers.get("content-encoding"))
                    stream = _MeteredStream(upstream.stream, reader,
                                            settle_with(cycle, permit, reader, headers))
                    return httpx.Response(upstream.status_code, headers=upstream.headers,
                                          stream=stream, request=request,
                                          extensions=upstream.extensions)
                try:
                    raw = b"".join(upstream.stream)
                finally:
                    upstream.stream.close()
                if not cycle.answer(permit, upstream.status_code, headers, raw):
                    return response((upstream.status_code, headers, raw), request)

        def close(self) -> None:
            self._inner.close()

    class AsyncTransport(httpx.AsyncBaseTransport):
        """Like :class:`Transport`, for async clients; waits run in worker threads."""

        def __init__(self, transport: Any = None, *, client: Optional[Client] = None,
                     priority: str = "normal", max_hold: float = DEFAULT_MAX_HOLD,
                     api_key: Optional[str] = None, **kwargs: Any) -> None:
            self._inner = (transport if transport is not None
                           else httpx.AsyncHTTPTransport(**kwargs))
            self._client = client
            self._priority = priority
            self._max_hold = max_hold
            self._api_key = api_key

        async def handle_async_request(self, request: Any) -> Any:
            if not _gated(request):
                _strip_priority(request)
                return await self._inner.handle_async_request(request)
            body = await request.aread()
            client = self._client or default_client()
            cycle = _Cycle(client, self._priority, self._api_key, self._max_hold,
                           request.headers, body)
            _strip_priority(request)
            cycle.input_tokens = await asyncio.to_thread(client.estimate_input, len(body))
            while True:
                try:
                    permit = await asyncio.to_thread(cycle.acquire)
                except (_native.PermitTimeout, _native.PermitRejected) as e:
                    return response(cycle.refused(e), request)
                try:
                    upstream = await self._inner.handle_async_request(request)
                except httpx.ConnectError:
                    await asyncio.to_thread(permit.release)
                    raise
                except BaseException:
                    await asyncio.to_thread(permit.close)
                    raise
                headers = [(k.decode("latin-1"), v.decode("latin-1"))
                           for k, v in upstream.headers.raw]
                if 200 <= upstream.status_code < 300:
                    reader = _native.UsageReader(upstream.headers.get("content-type"),
                                                 upstream.headers.get("content-encoding"))
                    stream = _AsyncMeteredStream(upstream.stream, reader,
                                                 settle_with(cycle, permit, reader, headers))
                    return httpx.Response(upstream.status_code, headers=upstream.headers,
                                          stream=stream, request=request,
                                          extensions=upstream.extensions)
                try:
                    raw = b"".join([chunk async for chunk in upstream.stream])
                finally:
                    await upstream.stream.aclose()
                go_round = await asyncio.to_thread(
                    cycle.answer, permit, upstream.status_code, headers, raw)
                if not go_round:
                    return response((upstream.status_code, headers, raw), request)

        async def aclose(self) -> None:
            await self._inner.aclose()

    Transport.__qualname__ = Transport.__name__ = "Transport"
    AsyncTransport.__qualname__ = AsyncTransport.__name__ = "AsyncTransport"
    Transport.__module__ = AsyncTransport.__module__ = "pacer"
    return Transport, AsyncTransport
