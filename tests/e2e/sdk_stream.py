"""Stream one message through BASE_URL with the official `anthropic` Python SDK.

Usage: sdk_stream.py BASE_URL

Prints one JSON object: the streamed text, the number of text events, and the final usage.
"""

import json
import sys

import anthropic


def main() -> None:
    client = anthropic.Anthropic(base_url=sys.argv[1], api_key="sk-ant-e2e-test")
    events = 0
    parts = []
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        for text in stream.text_stream:
            events += 1
            parts.append(text)
        final = stream.get_final_message()
    print(json.dumps({
        "text": "".join(parts),
        "events": events,
        "final_text": final.content[0].text,
        "input_tokens": final.usage.input_tokens,
        "output_tokens": final.usage.output_tokens,
    }))


if __name__ == "__main__":
    main()
