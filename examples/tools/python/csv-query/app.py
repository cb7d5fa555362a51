"""`csv_query`: filters, projects and aggregates a CSV file in the agent's
workspace. The file is read through the workspace import, so policy decides
each read; the tool reaches nothing else."""

import csv
import io
import json
from typing import List

from wit_world import exports
from wit_world.imports import workspace
from wit_world.imports.corral_tool_types import (
    Capabilities,
    ToolError_Denied,
    ToolError_Failed,
    ToolError_InvalidInput,
    ToolInfo,
)
from componentize_py_types import Err

INPUT_SCHEMA = {
    "type": "object",
    "required": ["path"],
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "description": "CSV file in the workspace, with a header row."},
        "select": {"type": "array", "items": {"type": "string"}, "description": "Columns to return; all when absent."},
        "where": {
            "type": "array",
            "description": "Conditions that must all hold.",
            "items": {
                "type": "object",
                "required": ["column", "op", "value"],
                "additionalProperties": False,
                "properties": {
                    "column": {"type": "string"},
                    "op": {"type": "string", "enum": ["=", "!=", "<", "<=", ">", ">=", "contains"]},
                    "value": {"type": "string"},
                },
            },
        },
        "group_by": {"type": "string", "description": "Column to group by before aggregating."},
        "aggregate": {
            "type": "object",
            "required": ["op"],
            "additionalProperties": False,
            "properties": {
                "op": {"type": "string", "enum": ["count", "sum", "avg", "min", "max"]},
                "column": {"type": "string", "description": "Numeric column; not needed for count."},
            },
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "At most this many rows; default 100."},
    },
}

OPS = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def invalid(message):
    return Err(ToolError_InvalidInput(message))


def number(text, column):
    try:
        return float(text)
    except ValueError:
        raise invalid(f"column `{column}` holds `{text}`, which is not a number")


def compare(cell, op, value):
    if op == "contains":
        return value in cell
    try:
        return OPS[op](float(cell), float(value))
    except ValueError:
        return OPS[op](cell, value)


def read_rows(path):
    try:
        data = workspace.read(path)
    except Err as e:
        if isinstance(e.value, workspace.FsError_Denied):
            raise Err(ToolError_Denied(e.value.value))
        raise Err(ToolError_Failed(f"reading `{path}`: {type(e.value).__name__.removeprefix('FsError_')}: {e.value.value}"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"`{path}` is not UTF-8 text: {e}")
    # A byte-order mark, as spreadsheet exports write: not part of the header.
    text = text.removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise invalid(f"`{path}` has no header row")
    return list(reader.fieldnames), list(reader)


def check_column(columns, column, what):
    if column not in columns:
        raise invalid(f"{what} names column `{column}`, which the file does not have (columns: {', '.join(columns)})")


def aggregate(rows, op, column):
    if op == "count":
        return len(rows)
    values = [number(r[column], column) for r in rows if r.get(column, "") != ""]
    if not values:
        return None
    if op == "sum":
        return sum(values)
    if op == "avg":
        return sum(values) / len(values)
    return min(values) if op == "min" else max(values)


def query(request):
    if not isinstance(request, dict) or not isinstance(request.get("path"), str):
        raise invalid("`path` (a string) is required")
    columns, rows = read_rows(request["path"])
    for cond in request.get("where") or []:
        check_column(columns, cond.get("column"), "a `where` condition")
        if cond.get("op") not in OPS and cond.get("op") != "contains":
            raise invalid(f"unknown `op` `{cond.get('op')}`; use one of =, !=, <, <=, >, >=, contains")
        rows = [r for r in rows if compare(r[cond["column"]], cond["op"], str(cond["value"]))]
    limit = request.get("limit", 100)
    agg = request.get("aggregate")
    if agg is not None:
        op = agg.get("op")
        if op not in ("count", "sum", "avg", "min", "max"):
            raise invalid(f"unknown aggregate `{op}`; use count, sum, avg, min or max")
        column = agg.get("column")
        if op != "count":
            if column is None:
                raise invalid(f"aggregate `{op}` needs a `column`")
            check_column(columns, column, "`aggregate`")
        group = request.get("group_by")
        if group is None:
            return {"value": aggregate(rows, op, column), "rows_matched": len(rows)}
        check_column(columns, group, "`group_by`")
        groups = {}
        for r in rows:
            groups.setdefault(r[group], []).append(r)
        out = [{group: k, op: aggregate(v, op, column)} for k, v in sorted(groups.items())]
        return {"groups": out[:limit], "truncated": len(out) > limit}
    select = request.get("select") or columns
    for c in select:
        check_column(columns, c, "`select`")
    out = [{c: r[c] for c in select} for r in rows[:limit]]
    return {"columns": select, "rows": out, "rows_matched": len(rows), "truncated": len(rows) > limit}


class Tool(exports.Tool):
    def describe(self) -> List[ToolInfo]:
        return [
            ToolInfo(
                name="csv_query",
                description="Queries a CSV file in the workspace: filter rows, select columns, count, sum, average, min or max, optionally grouped by a column.",
                input_schema=json.dumps(INPUT_SCHEMA),
                output_schema='{"type":"object"}',
                capabilities=Capabilities(http_hosts=[], secrets=[], workspace_read=True, workspace_write=False),
            )
        ]

    def call(self, tool: str, input: str) -> str:
        if tool != "csv_query":
            raise invalid(f"this component offers no tool named `{tool}`")
        try:
            request = json.loads(input)
        except json.JSONDecodeError as e:
            raise invalid(f"input is not JSON: {e}")
        return json.dumps(query(request))
