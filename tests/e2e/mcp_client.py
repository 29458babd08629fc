"""Drives `pacer mcp` over stdio with the official `mcp` SDK, as Claude Code would: lists the
tools, then calls each of them. Prints one JSON object: the tool names, and each call's text
and whether it was an error.

Usage: mcp_client.py PACER_BINARY [ENV=VALUE ...]   (the server's environment)
"""

import asyncio
import json
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


async def main() -> None:
    binary, *pairs = sys.argv[1:]
    env = dict(pair.split("=", 1) for pair in pairs)
    params = StdioServerParameters(command=binary, args=["mcp"], env=env)
    out = {}
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = init.server_info.name
            tools = await session.list_tools()
            out["tools"] = {t.name: t.input_schema for t in tools.tools}
            window_tool = next(t.name for t in tools.tools if "window" in t.name)
            calls = [
                (window_tool, {}),
                ("pacer_fanout_fits", {"count": 3, "unit": "subagents", "priority": "batch"}),
                ("pacer_fanout_fits", {"count": 1, "unit": "calls"}),
                ("pacer_fanout_fits", {"count": 0}),
                ("pacer_held", {}),
            ]
            out["calls"] = []
            for name, args in calls:
                started = time.perf_counter()
                result = await session.call_tool(name, args)
                ms = (time.perf_counter() - started) * 1000
                out["calls"].append(
                    {"tool": name, "args": args, "text": text_of(result),
                     "error": bool(result.is_error), "ms": round(ms, 2)}
                )
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
