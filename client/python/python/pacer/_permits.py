"""Permits around any unit of work: ``with pacer.permit(model) as p: ...; p.report(...)``."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

from . import _native

HeadersLike = Union[Mapping[str, str], Iterable[tuple[str, str]], None]

_default: Optional["Client"] = None
_default_lock = threading.Lock()


class Client:
    """A connection to pacerd, shared by every permit and transport that names it.

    ``socket``: the daemon's socket (default: ``PACER_SOCKET``, else the per-user default).
    ``autostart``: start ``pacerd`` (next to the Python executable, else from ``PATH``) when none
    answers. ``fail_closed``: raise :class:`DaemonUnavailable` when the daemon cannot be
    reached, instead of letting calls go unpaced with a warning. ``client_id``: the identity
    this process's requests are queued under (clients of one priority take turns).
    """

    def __init__(
        self,
        socket: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        autostart: bool = False,
        fail_closed: bool = False,
        client_id: Optional[str] = None,
    ) -> None:
        self._native = _native.Client(
            os.fspath(socket) if socket is not None else None,
            autostart=autostart,
            fail_closed=fail_closed,
            client_id=client_id,
        )
        self._warned = False
        if self._native.start_error is not None:
            warnings.warn(
                f"pacer: {self._native.start_error}; calls go unpaced until a pacerd answers "
                f"at {self._native.socket}",
                RuntimeWarning,
                stacklevel=2,
            )
            self._warned = True

    @property
    def socket(self) -> str:
        return os.fspath(self._native.socket)

    @property
    def client_id(self) -> str:
        return self._native.client_id

    @property
    def started_pid(self) -> Optional[int]:
        """The process id of the pacerd this client started, if it started one."""
        return self._native.started_pid

    def acquire(
        self,
        model: str,
        *,
        api_key: Optional[str] = None,
        priority: str = "normal",
        input_tokens: Optional[int] = None,
        max_tokens: Optional[int] = None,
        timeout: Optional[float] = None,
        max_share: Optional[float] = None,
    ) -> "Permit":
        """Waits for a permit (blocking); prefer :func:`permit`, which settles it for you."""
        native = self._native.acquire(
            _api_key(api_key),
            model,
            priority=priority,
            input_tokens=input_tokens,
            max_tokens=max_tokens,
            timeout=timeout,
            max_share=max_share,
        )
        self._note(native.brokered)
        return Permit(native)

    def estimate_input(self, body_bytes: int) -> int:
        """The input tokens to reserve for a Messages body of ``body_bytes``, as the gateway would."""
        return self._native.estimate_input(body_bytes)

    def calibrate(self, body_bytes: int, counted_input: int) -> None:
        """Tells pacerd how many input tokens a body of ``body_bytes`` really counted."""
        self._native.calibrate(body_bytes, counted_input)

    def _note(self, brokered: bool) -> None:
        """Warns once per outage when permits come unbrokered (the daemon is away)."""
        if brokered:
            self._warned = False
        elif not self._warned:
            self._warned = True
            warnings.warn(
                f"pacer: no pacerd answers at {self.socket}; calls go unpaced until it is back",
                RuntimeWarning,
                stacklevel=3,
            )


def configure(
    socket: Optional[Union[str, os.PathLike[str]]] = None,
    *,
    autostart: bool = False,
    fail_closed: bool = False,
    client_id: Optional[str] = None,
) -> Client:
    """Sets the client that :func:`permit` and the transports use when given none."""
    global _default
    client = Client(socket, autostart=autostart, fail_closed=fail_closed, client_id=client_id)
    with _default_lock:
        _default = client
    return client


def default_client() -> Client:
    """The client used when none is given: made on first use (see :func:`configure`)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def _api_key(api_key: Optional[str]) -> str:
    if api_key is not None:
        return api_key
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        value = os.environ.get(name)
        if value:
            return value
    raise ValueError(
        "pacer.permit needs the API key the call will use (only its fingerprint reaches "
        "pacerd): pass api_key=..., or set ANTHROPIC_API_KEY"
    )


def _headers(headers: HeadersLike) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    out = []
    for name, value in items:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.append((str(name), str(value)))
    return out


def _usage_json(usage: Any) -> Optional[str]:
    """A usage mapping, or the SDK's ``Usage`` object, as JSON."""
    if usage is None:
        return None
    if hasattr(usage, "model_dump"):
        usage = usage.model_dump()
    elif not isinstance(usage, Mapping) and hasattr(usage, "__dict__"):
        usage = vars(usage)
    if not isinstance(usage, Mapping):
        raise TypeError(f"usage must be a mapping or the SDK's Usage, not {type(usage).__name__}")
    return json.dumps({k: v for k, v in usage.items() if v is not None})


class Permit:
    """A permit for one call. Report how the call went, release it unused, or leave it
    unsettled: it is then settled as "outcome unknown" (its reservation stands)."""

    def __init__(self, native: "_native.Permit") -> None:
        self._native = native

    @property
    def lease(self) -> Optional[int]:
        return self._native.lease

    @property
    def brokered(self) -> bool:
        """False when pacerd could not be reached and the call goes unpaced."""
        return self._native.brokered

    @property
    def waited(self) -> float:
        """Seconds spent waiting in pacerd's queue."""
        return self._native.waited

    @property
    def settled(self) -> bool:
        return not self._native.open

    def report(
        self,
        status: int = 200,
        headers: HeadersLike = None,
        usage: Any = None,
        body: Union[bytes, str, Mapping[str, Any], None] = None,
    ) -> Optional[str]:
        """Reports the call's HTTP ``status`` and response ``headers`` (rate-limit headers,
        ``retry-after``: a rate limit's pauses every peer), and its ``usage`` (a mapping or the SDK's
        ``message.usage``) or its JSON ``body``. For a rate-limit answer, returns the kind pacerd
        took it for: ``"per-minute"`` (every peer pauses), ``"window"`` (a spent subscription
        window), ``"spend-cap"``, or ``"bare"`` (the API throttled this request alone: nobody
        else pauses; send it again in tens of seconds); else ``None``."""
        if isinstance(body, Mapping):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        return self._native.report(int(status), _headers(headers), body, _usage_json(usage))

    def release(self) -> None:
        """Gives the permit back unused: the call was never made, so nothing is spent."""
        self._native.release()

    def close(self) -> None:
        """Settles the permit as "outcome unknown" if it is not settled yet."""
        self._native.unknown()


class _PermitContext:
    def __init__(self, client: Optional[Client], model: str, kwargs: dict[str, Any]) -> None:
        self._client = client
        self._model = model
        self._kwargs = kwargs
        self._permit: Optional[Permit] = None

    def _acquire(self) -> Permit:
        client = self._client or default_client()
        self._permit = client.acquire(self._model, **self._kwargs)
        return self._permit

    def __enter__(self) -> Permit:
        return self._acquire()

    def __exit__(self, *exc: object) -> None:
        if self._permit is not None:
            self._permit.close()

    async def __aenter__(self) -> Permit:
        return await asyncio.to_thread(self._acquire)

    async def __aexit__(self, *exc: object) -> None:
        if self._permit is not None:
            await asyncio.to_thread(self._permit.close)


def permit(
    model: str,
    *,
    api_key: Optional[str] = None,
    priority: str = "normal",
    input_tokens: Optional[int] = None,
    max_tokens: Optional[int] = None,
    timeout: Optional[float] = None,
    client: Optional[Client] = None,
    max_share: Optional[float] = None,
) -> _PermitContext:
    """A permit for one call to ``model``, as a context manager::

        with pacer.permit("claude-sonnet-4-5") as p:
            message = anthropic_client.messages.create(...)
            p.report(200, usage=message.usage)

    Waits in pacerd's queue (up to ``timeout`` seconds, then :class:`PermitTimeout`).
    ``api_key`` (default ``ANTHROPIC_API_KEY``) is fingerprinted here, never sent. Leaving the
    block unreported settles the permit as "outcome unknown"; ``p.release()`` refunds it.
    ``max_share`` (0.1: 10 %) caps this client's use of each subscription window, per window:
    past it, permits wait (and time out) until the window resets.
    """
    kwargs = dict(
        api_key=api_key,
        priority=priority,
        input_tokens=input_tokens,
        max_tokens=max_tokens,
        timeout=timeout,
        max_share=max_share,
    )
    return _PermitContext(client, model, kwargs)


def permit_async(
    model: str,
    *,
    api_key: Optional[str] = None,
    priority: str = "normal",
    input_tokens: Optional[int] = None,
    max_tokens: Optional[int] = None,
    timeout: Optional[float] = None,
    client: Optional[Client] = None,
    max_share: Optional[float] = None,
) -> _PermitContext:
    """Like :func:`permit`, for ``async with``: the wait runs in a worker thread."""
    return permit(
        model,
        api_key=api_key,
        priority=priority,
        input_tokens=input_tokens,
        max_tokens=max_tokens,
        timeout=timeout,
        client=client,
        max_share=max_share,
    )
