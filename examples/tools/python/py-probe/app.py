"""`py-probe`: a hostile test tool. Each call tries one way out that a
Python component's WASI imports seem to offer (a socket, a name lookup, a
file outside the workspace, the environment), both through Python's
standard library and by calling the WASI interface itself, and reports what
happened, so that tests can assert that the host refused every attempt
while the workspace import still goes through policy."""

import json
import os
from typing import List

from wit_world import exports
# Imported when the component is built: componentize-py snapshots the
# interpreter after importing this module, and a module first imported
# inside a call is not there to import.
from wit_world.imports import environment, instance_network, ip_name_lookup, network, preopens, tcp_create_socket, workspace
from wit_world.imports.corral_tool_types import Capabilities, ToolInfo, ToolError_InvalidInput, ToolError_Failed, ToolError_Denied
from componentize_py_types import Err

TOOLS = ["probe_socket", "probe_dns", "probe_file", "probe_env", "probe_workspace"]


def outcome(attempt):
    try:
        value = attempt()
        return {"refused": False, "value": repr(value)[:200]}
    except BaseException as e:  # noqa: BLE001 - every refusal counts
        return {"refused": True, "error": f"{type(e).__name__}: {e}"[:300]}


def wasi_error(e):
    """The WASI error code inside an `Err`, by name."""
    value = getattr(e, "value", e)
    return getattr(value, "name", repr(value))


def socket_attempt(port):
    try:
        sock = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV4)
    except Err as e:
        raise PermissionError(f"create-tcp-socket: {wasi_error(e)}")
    return f"a socket was created: {sock!r}"


def python_socket_attempt(port):
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", port))
    return "connected"


def dns_attempt():
    try:
        stream = ip_name_lookup.resolve_addresses(instance_network.instance_network(), "localhost")
        return [stream.resolve_next_address()]
    except Err as e:
        raise PermissionError(f"resolve-addresses: {wasi_error(e)}")


def preopens_attempt():
    dirs = preopens.get_directories()
    if dirs:
        return [name for _, name in dirs]
    raise PermissionError("get-directories: none")


def file_attempt():
    results = {}
    for path in ["/etc/passwd", "/", ".", "secret.txt"]:
        try:
            with open(path, "rb") as f:
                results[path] = f.read(64)
        except IsADirectoryError:
            results[path] = os.listdir(path)
        except OSError:
            continue
    if results:
        return results
    raise PermissionError("no file could be opened")


def env_attempt():
    env = dict(os.environ)
    env.update(dict(environment.get_environment()))
    if env:
        return env
    raise LookupError("the environment is empty")


class Tool(exports.Tool):
    def describe(self) -> List[ToolInfo]:
        return [
            ToolInfo(
                name=name,
                description=f"Test tool: {name.removeprefix('probe_')} attempt.",
                input_schema='{"type":"object","properties":{"path":{"type":"string"},"port":{"type":"integer"}},"additionalProperties":false}',
                output_schema=None,
                capabilities=Capabilities(http_hosts=[], secrets=[], workspace_read=name == "probe_workspace", workspace_write=False),
            )
            for name in TOOLS
        ]

    def call(self, tool: str, input: str) -> str:
        if tool == "probe_socket":
            port = json.loads(input).get("port", 22)
            return json.dumps({
                "wasi": outcome(lambda: socket_attempt(port)),
                "python": outcome(lambda: python_socket_attempt(port)),
            })
        if tool == "probe_dns":
            return json.dumps({"wasi": outcome(dns_attempt)})
        if tool == "probe_file":
            return json.dumps({"wasi": outcome(preopens_attempt), "python": outcome(file_attempt)})
        if tool == "probe_env":
            return json.dumps(outcome(env_attempt))
        if tool == "probe_workspace":
            path = json.loads(input).get("path", "")
            try:
                data = workspace.read(path)
            except Err as e:
                if isinstance(e.value, workspace.FsError_Denied):
                    raise Err(ToolError_Denied(e.value.value))
                raise Err(ToolError_Failed(f"{type(e.value).__name__}: {e.value.value}"))
            return json.dumps({"text": data.decode("utf-8", "replace")})
        raise Err(ToolError_InvalidInput(f"this component offers no tool named `{tool}`"))
