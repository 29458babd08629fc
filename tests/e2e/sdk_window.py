"""Call the Messages API with the official `anthropic` Python SDK and a subscription's OAuth
token past a spent window, as a script on a Claude Pro/Max account would.

Usage: sdk_window.py BASE_URL TOKEN CALLS

Makes CALLS calls one after the other, each without the SDK's own retries (a spent window's
429 says to come back in hours, and the SDK would honour that by sleeping). Prints one JSON
object: the calls that succeeded, and for each that raised, its exception type, HTTP status,
the `anthropic-ratelimit-unified-status`, `retry-after` and `x-should-retry` headers of its
response, and how long it took.
"""

import json
import sys
import time
import warnings

import anthropic


def main() -> None:
    warnings.simplefilter("ignore")
    base_url, token, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = anthropic.Anthropic(
        base_url=base_url, api_key=None, auth_token=token, timeout=60, max_retries=0
    )
    ok = 0
    errors = []
    for _ in range(calls):
        started = time.monotonic()
        try:
            client.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
            )
            ok += 1
        except anthropic.APIStatusError as raised:
            headers = raised.response.headers
            errors.append({
                "type": type(raised).__name__,
                "status": raised.status_code,
                "unified_status": headers.get("anthropic-ratelimit-unified-status"),
                "retry_after": headers.get("retry-after"),
                "x_should_retry": headers.get("x-should-retry"),
                "seconds": round(time.monotonic() - started, 3),
            })
    print(json.dumps({"ok": ok, "errors": errors}))


if __name__ == "__main__":
    main()
