"""Load the Messages API with the official `anthropic` Python SDK, as many scripts do.

Usage: sdk_load.py BASE_URL THREADS SECONDS [MODEL]

THREADS threads call `client.messages.create` in a loop for SECONDS seconds, each with the SDK's
default retry policy (2 retries, honouring retry-after). Prints one JSON object: calls that
succeeded, calls that raised (by exception type), and the first error message seen.
"""

import json
import sys
import threading
import time

import anthropic


def main() -> None:
    base_url, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    model = sys.argv[4] if len(sys.argv) > 4 else "claude-sonnet-4-5"
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-e2e-test", timeout=600)
    lock = threading.Lock()
    ok = 0
    errors: dict[str, int] = {}
    first_error: list[str] = []
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal ok
        while time.monotonic() < deadline:
            try:
                message = client.messages.create(
                    model=model,
                    max_tokens=16,
                    messages=[{"role": "user", "content": "hi"}],
                )
                assert message.usage.output_tokens > 0
                with lock:
                    ok += 1
            except Exception as error:  # noqa: BLE001 - every failure is what we count
                with lock:
                    name = type(error).__name__
                    errors[name] = errors.get(name, 0) + 1
                    if not first_error:
                        first_error.append(f"{name}: {error}")

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({"ok": ok, "failed": sum(errors.values()), "errors": errors,
                      "first_error": first_error[0] if first_error else None}))


if __name__ == "__main__":
    main()
