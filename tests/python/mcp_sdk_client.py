"""Drives a Corral broker socket with the official MCP Python SDK.

The SDK is configured exactly as for any stdio MCP server, with
`corral mcp bridge --socket SOCKET` as the server command; it prints what
it saw as one JSON object for the Rust test to check.

Usage: python mcp_sdk_client.py CORRAL_BINARY SOCKET
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def main(corral: str, socket: str) -> None:
    params = StdioServerParameters(command=corral, args=["mcp", "bridge", "--socket", socket])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            ok = await session.call_tool("echo", {"message": "from the python sdk"})
            denied = await session.call_tool("files_write", {"path": "top.txt", "content": "x"})
            print(
                json.dumps(
                    {
                        "protocol": init.protocol_version,
                        "server": init.server_info.name,
                        "tools": sorted(t.name for t in tools.tools),
                        "ok": {
                            "is_error": ok.is_error,
                            "structured": ok.structured_content,
                            "text": ok.content[0].text,
                        },
                        "denied": {"is_error": denied.is_error, "text": denied.content[0].text},
                    }
                )
            )


asyncio.run(main(sys.argv[1], sys.argv[2]))
