"""pacer's HTTP transports driving the official anthropic SDK against the mock Anthropic API,
with pacerd pacing and no gateway in between."""

from __future__ import annotations

import asyncio
import threading
import time

import anthropic
import pytest

import pacer
from conftest import Daemon

KEY = "sk-ant-transport-test"
MODEL = "claude-sonnet-4-5"


def budget(daemon: Daemon) -> dict:
    budgets = daemon.status()["budgets"]
    assert len(budgets) == 1, budgets
    return budgets[0]


def sdk(mock, client, **kwargs):
    return anthropic.Anthropic(
        base_url=mock.url, api_key=KEY, max_retries=0,
        http_client=pacer.http_client(client=client, **kwargs),
    )


def herd(sdk_client, threads: int, seconds: float) -> dict:
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0, "errors": {}}
    deadline = time.monotonic() + seconds

    def worker():
        while time.monotonic() < deadline:
            try:
                message = sdk_client.messages.create(
                    model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
                )
                assert message.usage.output_tokens > 0
                with lock:
                    counts["ok"] += 1
            except Exception as error:  # noqa: BLE001 - every failure is counted
                with lock:
                    counts["failed"] += 1
                    name = type(error).__name__
                    counts["errors"][name] = counts["errors"].get(name, 0) + 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return counts


def test_eight_sdk_threads_at_60_rpm_get_through_with_no_failed_call(daemon, client, mock_factory):
    mock = mock_factory("--rpm", "60", "--latency-ms", "50")
    result = herd(sdk(mock, client), threads=8, seconds=20)
    stats = mock.stats()
    print("paced:", result, "upstream:", stats)
    assert result["failed"] == 0, result
    assert result["ok"] >= 50, result
    assert stats["rate_limited"] <= 1, stats
    b = budget(daemon)
    assert b["in_flight"] == 0 and b["input_tokens"] > 0 and b["output_tokens"] > 0


def test_without_pacer_the_same_herd_fails(mock_factory):
    mock = mock_factory("--rpm", "60", "--latency-ms", "50")
    plain = anthropic.Anthropic(base_url=mock.url, api_key=KEY, max_retries=0)
    result = herd(plain, threads=8, seconds=3)
    assert result["errors"].get("RateLimitError", 0) > 0, result


def test_streams_are_passed_through_whole_and_their_usage_reported(daemon, client, mock_factory):
    mock = mock_factory("--output-tokens", "40", "--event-gap-ms", "5")
    api = sdk(mock, client)
    probe = 40_000
    before = client.estimate_input(probe)
    with api.messages.stream(model=MODEL, max_tokens=64,
                             messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == 40
    b = budget(daemon)
    assert b["in_flight"] == 0 and b["output_tokens"] == 40, b
    assert b["granted"] == 1
    # The calibration learned from it: this client's bodies count far fewer tokens than one for
    # four bytes ("hi" in a ~100-byte body counts 9), and its estimate says so now.
    after = client.estimate_input(probe)
    assert before == probe // 4, before
    assert after < before / 2, (before, after)


def test_the_async_client_is_paced_the_same_way(daemon, client, mock_factory):
    mock = mock_factory("--rpm", "600")

    async def main():
        api = anthropic.AsyncAnthropic(
            base_url=mock.url, api_key=KEY, max_retries=0,
            http_client=pacer.async_http_client(client=client, priority="batch"),
        )
        messages = await asyncio.gather(*[
            api.messages.create(model=MODEL, max_tokens=8,
                                messages=[{"role": "user", "content": "hi"}])
            for _ in range(5)
        ])
        async with api.messages.stream(model=MODEL, max_tokens=8,
                                       messages=[{"role": "user", "content": "hi"}]) as s:
            final = await s.get_final_message()
        return messages, final

    messages, final = asyncio.run(main())
    assert len(messages) == 5 and final.usage.output_tokens > 0
    b = budget(daemon)
    assert b["granted"] == 6 and b["in_flight"] == 0


def test_a_429_is_held_and_sent_again_and_every_peer_paused(daemon, client, mock_factory):
    mock = mock_factory()
    mock.inject(blind_429=1, blind_retry_after="1")
    api = sdk(mock, client)
    started = time.monotonic()
    message = api.messages.create(model=MODEL, max_tokens=8,
                                  messages=[{"role": "user", "content": "hi"}])
    assert message.usage.output_tokens > 0
    assert time.monotonic() - started >= 0.9
    stats = mock.stats()
    assert stats["rate_limited"] == 1 and stats["ok"] == 1, stats
    assert budget(daemon)["rate_limited"] == 1


def test_a_bare_429_holds_its_request_alone_and_sends_it_again_on_its_own_spacing(
        daemon, client, mock_factory):
    mock = mock_factory()
    mock.inject(bare_429=1)
    api = sdk(mock, client)
    started = time.monotonic()
    message = api.messages.create(model=MODEL, max_tokens=8,
                                  messages=[{"role": "user", "content": "hi"}])
    took = time.monotonic() - started
    assert message.usage.output_tokens > 0
    # Not again within ~15 s (the API's wall would still stand), nor long after.
    assert 15 <= took < 40, took
    stats = mock.stats()
    assert stats["bare"] == 1 and stats["ok"] == 1, stats
    b = budget(daemon)
    assert b["throttled"]["bare"] == 1 and b["paused_until"] is None, b


def test_past_max_hold_the_apis_429_is_passed_on_with_the_real_wait(daemon, client, mock_factory):
    mock = mock_factory()
    mock.inject(blind_429=1, blind_retry_after="30")
    api = sdk(mock, client, max_hold=1)
    with pytest.raises(anthropic.RateLimitError) as raised:
        api.messages.create(model=MODEL, max_tokens=8,
                            messages=[{"role": "user", "content": "hi"}])
    wait = int(raised.value.response.headers["retry-after"])
    assert 25 <= wait <= 30, wait
    assert mock.stats()["rate_limited"] == 1


def test_a_spend_cap_is_passed_on_at_once(daemon, client, mock_factory):
    mock = mock_factory()
    mock.inject(spend_cap=1)
    with pytest.raises(anthropic.RateLimitError, match="usage limits"):
        sdk(mock, client).messages.create(model=MODEL, max_tokens=8,
                                          messages=[{"role": "user", "content": "hi"}])
    stats = mock.stats()
    assert stats["spend_capped"] == 1 and stats["ok"] == 0, stats


def test_overloads_are_retried_three_times_then_passed_on(daemon, client, mock_factory):
    mock = mock_factory()
    mock.inject(overloaded=2, overloaded_retry_after="0")
    message = sdk(mock, client).messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert message.usage.output_tokens > 0
    mock.inject(overloaded=10, overloaded_retry_after="0")
    with pytest.raises(anthropic.APIStatusError) as raised:
        sdk(mock, client).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 529
    assert mock.stats()["overloaded"] == 2 + 4


def test_the_priority_header_is_used_and_taken_off(daemon, client, mock_factory):
    import json
    import urllib.request

    mock = mock_factory()
    api = sdk(mock, client)
    api.messages.create(model=MODEL, max_tokens=8,
                        messages=[{"role": "user", "content": "hi"}],
                        extra_headers={"x-pacer-priority": "interactive"})
    api.models.list() if hasattr(api, "models") else None
    with urllib.request.urlopen(f"{mock.url}/mock/requests") as r:
        seen = json.load(r)
    for request in seen:
        names = [name.lower() for name, _ in request["headers"]]
        assert "x-pacer-priority" not in names, request
    # Requests that are not Messages pass through ungated.
    assert budget(daemon)["granted"] == 1


def test_the_httpx_transport_paces_plain_httpx_too(daemon, client, mock_factory):
    httpx = pytest.importorskip("httpx")
    mock = mock_factory()
    with httpx.Client(transport=pacer.HttpxTransport(client=client)) as http:
        response = http.post(
            f"{mock.url}/v1/messages",
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            json={"model": MODEL, "max_tokens": 8,
                  "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 200, response.text
    b = budget(daemon)
    assert b["granted"] == 1 and b["in_flight"] == 0 and b["output_tokens"] > 0


def test_with_no_daemon_the_transport_fails_open(home, mock_factory):
    mock = mock_factory()
    lonely = pacer.Client(home / "nobody.sock")
    with pytest.warns(RuntimeWarning, match="no pacerd answers"):
        message = sdk(mock, lonely).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert message.usage.output_tokens > 0


def test_a_429_far_too_large_for_a_report_still_pauses_and_is_sent_again_once(daemon, client, mock_factory):
    """An upstream 429 with a 1.2 MB message: its report is bounded, so the pause happens and
    the request is held and sent again once, not resent in a loop with nothing in flight."""
    mock = mock_factory("--rpm", "600")
    mock.inject(huge_429=1, huge_429_bytes=1_200_000)
    message = sdk(mock, client).messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert message.usage.output_tokens > 0
    stats = mock.stats()
    assert (stats["rate_limited"], stats["ok"]) == (1, 1), stats
    b = budget(daemon)
    assert b["rate_limited"] == 1 and b["in_flight"] == 0, b


def test_a_capped_sdk_client_stops_at_its_share_of_the_window(daemon, client, mock_factory):
    # A 5-hour window of 20 calls; this client may use a fifth of it.
    mock = mock_factory("--subscription-5h", "20")
    capped = anthropic.Anthropic(
        base_url=mock.url, auth_token="sk-ant-oat01-python-transport-cap", max_retries=0,
        http_client=pacer.http_client(client=client, max_share=0.2, max_hold=1),
    )
    made = 0
    with pytest.raises(anthropic.RateLimitError) as held:
        for _ in range(20):
            capped.messages.create(
                model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
            made += 1
    assert 3 <= made <= 5, made
    assert "its cap of 20 %" in str(held.value), held.value
    assert mock.stats()["rate_limited"] == 0
    # A share that is not one is refused, naming it (the SDK wraps what the transport raised).
    bad = anthropic.Anthropic(
        base_url=mock.url, auth_token="sk-ant-oat01-python-transport-cap", max_retries=0,
        http_client=pacer.http_client(client=client, max_share=1.5),
    )
    with pytest.raises(anthropic.APIConnectionError) as refused:
        bad.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(refused.value.__cause__, ValueError)
    assert "max_share" in str(refused.value.__cause__)
