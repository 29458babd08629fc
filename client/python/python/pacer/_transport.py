"""HTTP transports that pace Messages requests, for httpx2 (the anthropic SDK's) and httpx.

Each Messages request (``POST /v1/messages``, however its path is spelled) takes a permit
first: the model and ``max_tokens`` from its body, the input estimate from the body's size by
the gateway's calibration, the priority from ``x-pacer-priority`` (taken off the request). The
answer's usage and rate-limit headers are reported when its body ends (streamed answers too).

What each answer means — go round again after a rate limit, hold a request the API throttled
alone and send it again later, retry an overload, pass a spend cap on, give up when the hold
runs out — is decided by ``_native.GatedCall``, the state machine pacerd's gateway drives too;
the transports below only send, read, stream and wait as it says.
"""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any, Optional

from . import _native
from ._permits import Client, Permit, default_client

#: How long a request may be held waiting for the budget (the gateway's default ``max_hold``).
DEFAULT_MAX_HOLD = 240.0

Headers = list[tuple[str, str]]


def _gated(request: Any) -> bool:
    return _native.endpoint(request.method, request.url.raw_path.decode("ascii", "replace").split("?")[0]) == "messages"


def _strip_priority(request: Any) -> None:
    """Takes pacer's own headers (priority, cap) off before the request goes out."""
    for name in (_native.PRIORITY_HEADER, _native.MAX_SHARE_HEADER):
        if name in request.headers:
            del request.headers[name]


def _header_list(headers: Any) -> Headers:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]


def _new_call(request: Any, body: bytes, priority: str, api_key: Optional[str],
              max_hold: float, max_share: Optional[float] = None) -> Any:
    call = _native.GatedCall(body, _header_list(request.headers), priority=priority,
                             api_key=api_key, max_hold=max_hold, max_share=max_share)
    _strip_priority(request)
    return call


class _Pacerd:
    """The pacerd side of one gated call's steps (blocking; the async transport runs each in a
    worker thread): the permit it holds, and what the call asks of pacerd."""

    def __init__(self, call: Any, client: Client) -> None:
        self.call = call
        self.client = client
        self.permit: Optional[Permit] = None

    def step(self, action: str) -> None:
        if action == "acquire":
            native = self.call.acquire(self.client._native)
            if native is not None:
                self.client._note(native.brokered)
                self.permit = Permit(native)
        elif action == "report":
            self.call.report(self.permit._native)
        elif action == "release":
            self.permit.release()
        elif action == "calibrate":
            try:
                self.call.calibrate(self.client._native)
            except _native.PacerError:
                pass

    def settle(self, reader: Any, headers: Headers, complete: bool) -> None:
        """After a streamed answer's body: report it (and calibrate) as the call says."""
        try:
            self.call.ended(reader, headers, complete)
            while (action := self.call.next()) != "done":
                self.step(action)
        except _native.PacerError:
            pass


_PACERD_STEPS = frozenset({"acquire", "report", "release", "calibrate"})


def make_transports(httpx: ModuleType) -> tuple[type, type]:
    """The sync and async pacing transports for ``httpx`` (the httpx2 or the httpx module)."""

    class _MeteredStream(httpx.SyncByteStream):
        def __init__(self, inner: Any, reader: Any, settle: Any) -> None:
            self._inner = inner
            self._reader = reader
            self._settle = settle
            self._complete = False

        def __iter__(self) -> Any:
            for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk
            self._complete = True

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                settle, self._settle = self._settle, None
                if settle is not None:
                    settle(self._complete)

    class _AsyncMeteredStream(httpx.AsyncByteStream):
        def __init__(self, inner: Any, reader: Any, settle: Any) -> None:
            self._inner = inner
            self._reader = reader
            self._settle = settle
            self._complete = False

        async def __aiter__(self) -> Any:
            async for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk
            self._complete = True

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                settle, self._settle = self._settle, None
                if settle is not None:
                    await asyncio.to_thread(settle, self._complete)

    def answer(call: Any, request: Any) -> Any:
        status, headers, body = call.answer()
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body),
                              request=request)

    def metered(pacerd: _Pacerd, upstream: Any, request: Any, stream_class: type) -> Any:
        headers = _header_list(upstream.headers)
        reader = _native.UsageReader(upstream.headers.get("content-type"),
                                     upstream.headers.get("content-encoding"))

        def settle(complete: bool) -> None:
            pacerd.settle(reader, headers, complete)

        return httpx.Response(upstream.status_code, headers=upstream.headers,
                              stream=stream_class(upstream.stream, reader, settle),
                              request=request, extensions=upstream.extensions)

    def read_whole(chunks: Any, limit: int) -> tuple[bytes, bool]:
        body = bytearray()
        for chunk in chunks:
            if len(body) + len(chunk) > limit:
                return bytes(body), True
            body += chunk
        return bytes(body), False

    async def aread_whole(chunks: Any, limit: int) -> tuple[bytes, bool]:
        body = bytearray()
        async for chunk in chunks:
            if len(body) + len(chunk) > limit:
                return bytes(body), True
            body += chunk
        return bytes(body), False

    class Transport(httpx.BaseTransport):
        """Paces Messages requests through pacerd; everything else goes to ``transport``
        (default: a new ``HTTPTransport(**kwargs)``) as it came."""

        def __init__(self, transport: Any = None, *, client: Optional[Client] = None,
                     priority: str = "normal", max_hold: float = DEFAULT_MAX_HOLD,
                     api_key: Optional[str] = None, max_share: Optional[float] = None,
                     **kwargs: Any) -> None:
            self._inner = transport if transport is not None else httpx.HTTPTransport(**kwargs)
            self._client = client
            self._priority = priority
            self._max_share = max_share
            self._max_hold = max_hold
            self._api_key = api_key

        def handle_request(self, request: Any) -> Any:
            if not _gated(request):
                _strip_priority(request)
                return self._inner.handle_request(request)
            call = _new_call(request, request.read(), self._priority, self._api_key,
                             self._max_hold, self._max_share)
            pacerd = _Pacerd(call, self._client or default_client())
            upstream = failure = None
            while True:
                action = call.next()
                if action in _PACERD_STEPS:
                    pacerd.step(action)
                elif action == "wait":
                    time.sleep(call.wait_seconds)
                elif action == "send":
                    try:
                        upstream = self._inner.handle_request(request)
                    except BaseException as error:
                        failure = error
                        call.send_failed(not isinstance(error, httpx.ConnectError))
                        continue
                    call.answered(upstream.status_code, _header_list(upstream.headers))
                elif action == "read":
                    try:
                        body, cut = read_whole(upstream.stream, call.read_limit)
                    finally:
                        upstream.stream.close()
                    call.read(body, cut)
                elif action == "stream":
                    return metered(pacerd, upstream, request, _MeteredStream)
                elif action == "pass":
                    return upstream
                elif action == "answer":
                    return answer(call, request)
                else:  # "fail": what the send raised
                    raise failure

        def close(self) -> None:
            self._inner.close()

    class AsyncTransport(httpx.AsyncBaseTransport):
        """Like :class:`Transport`, for async clients; waits run in worker threads."""

        def __init__(self, transport: Any = None, *, client: Optional[Client] = None,
                     priority: str = "normal", max_hold: float = DEFAULT_MAX_HOLD,
                     api_key: Optional[str] = None, max_share: Optional[float] = None,
                     **kwargs: Any) -> None:
            self._inner = (transport if transport is not None
                           else httpx.AsyncHTTPTransport(**kwargs))
            self._client = client
            self._priority = priority
            self._max_share = max_share
            self._max_hold = max_hold
            self._api_key = api_key

        async def handle_async_request(self, request: Any) -> Any:
            if not _gated(request):
                _strip_priority(request)
                return await self._inner.handle_async_request(request)
            call = _new_call(request, await request.aread(), self._priority, self._api_key,
                             self._max_hold, self._max_share)
            pacerd = _Pacerd(call, self._client or default_client())
            upstream = failure = None
            while True:
                action = call.next()
                if action in _PACERD_STEPS:
                    await asyncio.to_thread(pacerd.step, action)
                elif action == "wait":
                    await asyncio.sleep(call.wait_seconds)
                elif action == "send":
                    try:
                        upstream = await self._inner.handle_async_request(request)
                    except BaseException as error:
                        failure = error
                        call.send_failed(not isinstance(error, httpx.ConnectError))
                        continue
                    call.answered(upstream.status_code, _header_list(upstream.headers))
                elif action == "read":
                    try:
                        body, cut = await aread_whole(upstream.stream, call.read_limit)
                    finally:
                        await upstream.stream.aclose()
                    call.read(body, cut)
                elif action == "stream":
                    return metered(pacerd, upstream, request, _AsyncMeteredStream)
                elif action == "pass":
                    return upstream
                elif action == "answer":
                    return answer(call, request)
                else:  # "fail": what the send raised
                    raise failure

        async def aclose(self) -> None:
            await self._inner.aclose()

    Transport.__qualname__ = Transport.__name__ = "Transport"
    AsyncTransport.__qualname__ = AsyncTransport.__name__ = "AsyncTransport"
    Transport.__module__ = AsyncTransport.__module__ = "pacer"
    return Transport, AsyncTransport
