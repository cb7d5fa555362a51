"""`py-echo`: returns its input unchanged; the Python twin of the Rust
`echo`, so that benchmarks compare the two languages on the same call."""

from typing import List

from wit_world import exports
from wit_world.imports.corral_tool_types import Capabilities, ToolInfo, ToolError_InvalidInput
from componentize_py_types import Err


class Tool(exports.Tool):
    def describe(self) -> List[ToolInfo]:
        return [
            ToolInfo(
                name="py_echo",
                description="Returns its input unchanged.",
                input_schema='{"type":"object","properties":{"message":{"type":"string"}},"additionalProperties":true}',
                output_schema='{"type":"object"}',
                capabilities=Capabilities(http_hosts=[], secrets=[], workspace_read=False, workspace_write=False),
            )
        ]

    def call(self, tool: str, input: str) -> str:
        if tool != "py_echo":
            raise Err(ToolError_InvalidInput(f"this component offers no tool named `{tool}`"))
        return input
