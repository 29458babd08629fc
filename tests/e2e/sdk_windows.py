"""A subscription's window shared by batch workers and a person at the keyboard, through the
official `anthropic` Python SDK with `max_retries=0`.

Usage: sdk_windows.py BASE_URL BATCH_WORKERS INTERACTIVE_EVERY SECONDS

BATCH_WORKERS threads call in a loop with `x-pacer-priority: batch` (pausing half a second after a
refusal); one caller makes an interactive call every INTERACTIVE_EVERY seconds. Every call uses
the subscription's OAuth token (`Authorization: Bearer sk-ant-oat…`). Prints one JSON object: per
priority the calls that succeeded and failed, and the first message pacer gave a held call.
"""

import json
import sys
import threading
import time

import anthropic


def main() -> None:
    base_url = sys.argv[1]
    workers, every, seconds = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    client = anthropic.Anthropic(
        base_url=base_url, auth_token="sk-ant-oat01-e2e-windows", api_key=None,
        max_retries=0, timeout=120,
    )
    lock = threading.Lock()
    counts = {"batch": {"ok": 0, "failed": 0}, "interactive": {"ok": 0, "failed": 0}}
    held_message: list[str] = []
    deadline = time.monotonic() + seconds

    def call(priority: str) -> bool:
        try:
            client.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-pacer-priority": priority},
            )
            with lock:
                counts[priority]["ok"] += 1
            return True
        except anthropic.APIStatusError as error:
            with lock:
                counts[priority]["failed"] += 1
                message = str(error)
                if priority == "batch" and "pacer:" in message and not held_message:
                    held_message.append(message)
            return False

    def batch() -> None:
        while time.monotonic() < deadline:
            if not call("batch"):
                time.sleep(0.5)

    def interactive() -> None:
        start = time.monotonic()
        n = 0
        while True:
            at = start + n * every
            if at >= deadline:
                return
            time.sleep(max(0.0, at - time.monotonic()))
            call("interactive")
            n += 1

    pool = [threading.Thread(target=batch) for _ in range(workers)]
    pool.append(threading.Thread(target=interactive))
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({**counts, "held_message": held_message[0] if held_message else None}))


if __name__ == "__main__":
    main()
