"""pacer.permit against a real pacerd: permits, reports, releases, pauses seen by a CLI peer,
fail-open and fail-closed, autostart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import warnings

import pytest

import pacer
from conftest import BIN, Daemon, isolated_env

KEY = "sk-ant-python-test"
MODEL = "claude-sonnet-4-5"


def budget(daemon: Daemon) -> dict:
    budgets = daemon.status()["budgets"]
    assert len(budgets) == 1, budgets
    return budgets[0]


def test_a_reported_permit_counts_its_usage(daemon, client):
    with pacer.permit(MODEL, api_key=KEY, client=client, max_tokens=100) as p:
        assert p.brokered and p.lease is not None
        assert not p.settled
        p.report(200, {"anthropic-ratelimit-requests-limit": "50"},
                 usage={"input_tokens": 120, "output_tokens": 30})
        assert p.settled
    b = budget(daemon)
    assert b["granted"] == 1 and b["in_flight"] == 0
    assert (b["input_tokens"], b["output_tokens"]) == (120, 30)
    assert b["limits"]["rpm"] == 50


def test_an_sdk_usage_object_and_a_json_body_are_read(daemon, client):
    class Usage:  # what anthropic's message.usage looks like without pydantic
        def __init__(self):
            self.input_tokens, self.output_tokens = 7, 9
            self.cache_creation_input_tokens = None

    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        p.report(200, usage=Usage())
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        p.report(200, body={"usage": {"input_tokens": 3, "output_tokens": 1}})
    b = budget(daemon)
    assert (b["input_tokens"], b["output_tokens"]) == (10, 10)


def test_leaving_unreported_settles_as_unknown_and_release_refunds(daemon, client):
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        pass
    assert p.settled
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        p.release()
    with pytest.raises(RuntimeError):
        with pacer.permit(MODEL, api_key=KEY, client=client) as p:
            raise RuntimeError("the call blew up")
    assert p.settled
    b = budget(daemon)
    assert b["granted"] == 3 and b["in_flight"] == 0


def test_a_429_reported_from_python_pauses_a_cli_peer(daemon, client):
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        kind = p.report(429, {"retry-after": "60"},
                        body={"type": "error", "error": {"type": "rate_limit_error",
                                                         "message": "50 requests per minute"}})
    assert kind == "per-minute"
    b = budget(daemon)
    assert b["paused_until"] is not None, b
    # `pacer acquire` for the same key and model waits (and gives up after its timeout).
    started = time.monotonic()
    out = daemon.pacer("acquire", "--model", MODEL, "--socket", daemon.socket, "--timeout", "2",
                       "--fail-closed", env={"ANTHROPIC_API_KEY": KEY})
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert time.monotonic() - started >= 1.5
    # So does another Python permit, with its own timeout.
    with pytest.raises(pacer.PermitTimeout) as raised:
        with pacer.permit(MODEL, api_key=KEY, client=client, timeout=0.2):
            pass
    assert 30 < raised.value.retry_after <= 61
    # Another key's budget is not paused.
    with pacer.permit(MODEL, api_key="sk-ant-another", client=client, timeout=1) as p:
        p.release()


def test_a_bare_429_reported_from_python_pauses_nobody_and_a_spend_cap_fails_fast(daemon, client):
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        kind = p.report(429, {"x-should-retry": "true"},
                        body={"type": "error", "error": {"type": "rate_limit_error",
                                                         "message": "Rate limited"}})
    assert kind == "bare"
    b = budget(daemon)
    assert b["paused_until"] is None and b["throttled"]["bare"] == 1, b
    with pacer.permit(MODEL, api_key=KEY, client=client, timeout=0.5) as p:
        assert p.report(200, usage={"input_tokens": 1, "output_tokens": 1}) is None
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        kind = p.report(429, body={"type": "error", "error": {
            "type": "rate_limit_error", "message": "You have reached your specified API usage limits.",
            "details": {"error_code": "enforced_spend_limit_reached"}}})
    assert kind == "spend-cap"
    with pytest.raises(pacer.PermitRejected) as raised:
        with pacer.permit(MODEL, api_key=KEY, client=client, timeout=1):
            pass
    assert "spend cap" in str(raised.value) and raised.value.until is not None


def test_permit_async_waits_without_blocking_the_loop(daemon, client):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        async with pacer.permit_async(MODEL, api_key=KEY, client=client) as p:
            p.report(200, usage={"input_tokens": 1, "output_tokens": 1})
        client._native.pause(KEY, MODEL, 0.5)
        async with pacer.permit_async(MODEL, api_key=KEY, client=client, timeout=5) as p:
            assert p.waited > 0.3
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 20


def test_bad_arguments_name_what_is_wrong(client):
    with pytest.raises(ValueError, match="priority"):
        with pacer.permit(MODEL, api_key=KEY, client=client, priority="urgent"):
            pass
    with pytest.raises(ValueError, match="timeout"):
        with pacer.permit(MODEL, api_key=KEY, client=client, timeout=-1):
            pass
    env = {k: v for k, v in os.environ.items()}
    os.environ.pop("ANTHROPIC_API_KEY", None)
    os.environ.pop("ANTHROPIC_AUTH_TOKEN", None)
    try:
        with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
            with pacer.permit(MODEL, client=client):
                pass
    finally:
        os.environ.clear()
        os.environ.update(env)


def test_without_a_daemon_it_fails_open_with_one_warning_or_closed_with_an_error(home):
    socket = str(home / "nobody.sock")
    open_client = pacer.Client(socket)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            with pacer.permit(MODEL, api_key=KEY, client=open_client) as p:
                assert not p.brokered and p.lease is None
                p.report(200, usage={"input_tokens": 1, "output_tokens": 1})
    messages = [str(w.message) for w in seen]
    assert len(messages) == 1 and socket in messages[0], messages
    with pytest.raises(pacer.DaemonUnavailable, match="no pacerd answers"):
        pacer.Client(socket, fail_closed=True)


def test_autostart_starts_pacerd_from_path(home, monkeypatch):
    socket = home / "auto" / "pacer.sock"
    env = isolated_env(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    for name in list(os.environ):
        if name.startswith("PACER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-must-not-reach-the-daemon")
    client = pacer.Client(socket, autostart=True, fail_closed=True)
    try:
        assert client.started_pid is not None
        with pacer.permit(MODEL, client=client) as p:
            assert p.brokered
            p.release()
        environ = open(f"/proc/{client.started_pid}/environ", "rb").read()
        assert b"sk-must-not-reach-the-daemon" not in environ
        # A second client finds the running one and starts nothing.
        assert pacer.Client(socket, autostart=True).started_pid is None
    finally:
        os.kill(client.started_pid, 9)


def test_autostart_without_pacerd_fails_open_with_a_warning_naming_why(home, monkeypatch):
    monkeypatch.setenv("PATH", str(home))
    with pytest.warns(RuntimeWarning, match="cannot find pacerd"):
        client = pacer.Client(home / "x.sock", autostart=True)
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        assert not p.brokered
    with pytest.raises(pacer.DaemonUnavailable, match="cannot find pacerd"):
        pacer.Client(home / "x.sock", autostart=True, fail_closed=True)


def test_the_api_key_is_fingerprinted_as_the_cli_does(daemon):
    out = daemon.pacer("acquire", "--model", MODEL, "--socket", daemon.socket,
                       env={"ANTHROPIC_API_KEY": KEY})
    assert out.returncode == 0, out.stderr
    assert budget(daemon)["key"] == pacer.key_id(KEY)
    subprocess.run([str(BIN / "pacer"), "release", out.stdout.split()[0], "--socket",
                    daemon.socket], env=isolated_env(daemon.home), capture_output=True)


def test_the_readmes_permit_example_reports_the_sdks_raw_headers(daemon, client, mock_factory):
    """The README's example: the headers come from ``with_raw_response``."""
    import anthropic

    mock = mock_factory("--rpm", "37")
    sdk = anthropic.Anthropic(base_url=mock.url, api_key=KEY, max_retries=0)
    with pacer.permit(MODEL, api_key=KEY, client=client, max_tokens=64) as p:
        raw = sdk.messages.with_raw_response.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        message = raw.parse()
        p.report(raw.status_code, headers=raw.headers, usage=message.usage)
    b = daemon.status()["budgets"]
    assert len(b) == 1, b
    # The limit came from the answer's headers, the tokens from its usage.
    assert b[0]["limits"]["rpm"] == 37, b[0]
    assert b[0]["input_tokens"] == message.usage.input_tokens > 0


def test_a_429_with_a_huge_body_and_headers_still_pauses_and_leaves_nothing_in_flight(daemon, client):
    """An answer far larger than one frame: its report is bounded, never dropped."""
    headers = {f"x-junk-{i}": "y" * 3000 for i in range(7000)}  # 21 MB
    headers["retry-after"] = "20"
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "m" * 1_200_000}}
    with pacer.permit(MODEL, api_key=KEY, client=client) as p:
        assert p.report(429, headers, body=body) == "per-minute"
    b = budget(daemon)
    assert b["in_flight"] == 0, b
    assert b["rate_limited"] == 1 and b["paused_until"] is not None, b


def test_a_capped_client_is_held_past_its_share_of_a_window_and_told_why(daemon, client):
    # Two calls, each a tenth of the subscription's 5-hour window, as their headers say.
    token, reset = "sk-ant-oat01-python-cap", str(int(time.time()) + 3600)
    for used in ("0.10", "0.20"):
        with pacer.permit(MODEL, api_key=token, client=client, max_share=0.2) as p:
            p.report(200, {
                "anthropic-organization-id": "org-python-cap",
                "anthropic-ratelimit-unified-status": "allowed",
                "anthropic-ratelimit-unified-5h-utilization": used,
                "anthropic-ratelimit-unified-5h-reset": reset,
            }, usage={"input_tokens": 1, "output_tokens": 1})
    # A third would take it past its 20 %: held until the reset, and told why.
    with pytest.raises(pacer.PermitTimeout, match="its cap of 20 % of the 5-hour window") as held:
        with pacer.permit(MODEL, api_key=token, client=client, max_share=0.2, timeout=0):
            pass
    assert 3000 < held.value.retry_after <= 3600
    # Uncapped, the same account goes on.
    with pacer.permit(MODEL, api_key=token, client=client, timeout=0) as p:
        p.release()
    with pytest.raises(ValueError, match="max_share"):
        with pacer.permit(MODEL, api_key=token, client=client, max_share=1.5):
            pass
