"""pacer for Python: pace Anthropic API calls across every process on the machine.

Two ways in, both through the local ``pacerd`` (the Rust client crate does the talking; the API
key is fingerprinted in this process and never sent):

- A permit around any unit of work::

      with pacer.permit("claude-sonnet-4-5", priority="batch") as p:
          message = client.messages.create(...)
          p.report(200, usage=message.usage)

  (``async with pacer.permit_async(...)`` in async code.)

- An HTTP client for the anthropic SDK, which paces every Messages request itself (no gateway,
  no base URL)::

      client = anthropic.Anthropic(http_client=pacer.http_client())

  ``pacer.Transport`` / ``pacer.AsyncTransport`` are the transports themselves (httpx2, the SDK's
  HTTP library); ``pacer.HttpxTransport`` / ``pacer.AsyncHttpxTransport`` the same for httpx.

The daemon is found as the ``pacer`` command finds it (``PACER_SOCKET``, then the per-user
default); :func:`configure` names another, asks to start ``pacerd`` when none answers
(``autostart=True``), or to fail closed. By default a missing daemon means calls go unpaced,
with one warning.
"""

from __future__ import annotations

from typing import Any, Optional

from . import _native
from ._native import (
    DaemonUnavailable,
    PacerError,
    PermitRejected,
    PermitTimeout,
    default_socket,
    key_id,
)
from ._permits import Client, Permit, configure, default_client, permit, permit_async

__version__ = _native.VERSION

__all__ = [
    "AsyncHttpxTransport",
    "AsyncTransport",
    "Client",
    "DaemonUnavailable",
    "HttpxTransport",
    "PacerError",
    "Permit",
    "PermitRejected",
    "PermitTimeout",
    "Transport",
    "async_http_client",
    "configure",
    "default_client",
    "default_socket",
    "http_client",
    "key_id",
    "permit",
    "permit_async",
]

_transports: dict[str, tuple[type, type]] = {}


def _transports_for(module_name: str) -> tuple[type, type]:
    if module_name not in _transports:
        import importlib

        from ._transport import make_transports

        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ImportError(
                f"pacer's {module_name} transport needs {module_name}: pip install {module_name}"
            ) from e
        _transports[module_name] = make_transports(module)
    return _transports[module_name]


def __getattr__(name: str) -> Any:
    if name == "Transport":
        return _transports_for("httpx2")[0]
    if name == "AsyncTransport":
        return _transports_for("httpx2")[1]
    if name == "HttpxTransport":
        return _transports_for("httpx")[0]
    if name == "AsyncHttpxTransport":
        return _transports_for("httpx")[1]
    raise AttributeError(f"module 'pacer' has no attribute {name!r}")


def http_client(
    *,
    client: Optional[Client] = None,
    priority: str = "normal",
    max_hold: float = 240.0,
    max_share: Optional[float] = None,
    **kwargs: Any,
) -> Any:
    """An ``httpx2.Client`` whose Messages requests are paced by pacerd: pass it to
    ``anthropic.Anthropic(http_client=...)``. ``priority`` applies to requests without an
    ``x-pacer-priority`` header; ``max_hold`` is how long a request may wait for the budget
    before the API's rate-limit answer is passed on; ``max_share`` (0.1: 10 %) caps this
    client's use of each subscription window, per window (an ``x-pacer-max-share`` header
    wins). Other keyword arguments go to ``httpx2.Client``."""
    import httpx2

    transport = _transports_for("httpx2")[0](
        kwargs.pop("transport", None), client=client, priority=priority, max_hold=max_hold,
        max_share=max_share,
    )
    kwargs.setdefault("timeout", httpx2.Timeout(600.0, connect=5.0))
    return httpx2.Client(transport=transport, **kwargs)


def async_http_client(
    *,
    client: Optional[Client] = None,
    priority: str = "normal",
    max_hold: float = 240.0,
    max_share: Optional[float] = None,
    **kwargs: Any,
) -> Any:
    """Like :func:`http_client`, an ``httpx2.AsyncClient`` for ``anthropic.AsyncAnthropic``."""
    import httpx2

    transport = _transports_for("httpx2")[1](
        kwargs.pop("transport", None), client=client, priority=priority, max_hold=max_hold,
        max_share=max_share,
    )
    kwargs.setdefault("timeout", httpx2.Timeout(600.0, connect=5.0))
    return httpx2.AsyncClient(transport=transport, **kwargs)
