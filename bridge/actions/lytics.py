"""Lytics actions: send data (collect), start a workflow, look up a profile and its segments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.clients.lytics import MAX_COLLECT_ITEMS, LyticsClient
from bridge.errors import PermanentError
from bridge.schema import ActionSchema, Param

COLLECT = ActionSchema(
    name="lytics.collect",
    description="Send one event (an object) or several (a list, in one request of at most "
    f"{MAX_COLLECT_ITEMS}) to a Lytics stream (POST /api/collect?stream=…).",
    params={
        "stream": Param("stream", ("string",), required=True, description="the stream name"),
        "data": Param("data", ("object", "array"), required=True, description="the event(s)"),
    },
    results={"message_count": "integer", "rejected_count": "integer"},
)
SCALAR = ("string", "number")  # an integer is a number
PROFILE_PARAMS = {
    "field": Param("field", ("string",), required=True, description="e.g. email, _uid"),
    "value": Param("value", SCALAR, required=True, description="the value to match"),
    "table": Param("table", ("string",), description="default user"),
}
LOOKUP = ActionSchema(
    name="lytics.lookup",
    description="Fetch the Lytics profile whose field equals value "
    "(GET /api/entity/{table}/{field}/{value}); a missing profile is found: false.",
    params={
        **PROFILE_PARAMS,
        "fields": Param("fields", ("array",), description="only these profile fields"),
    },
    results={"found": "boolean"},
)
SEGMENT_MEMBERSHIP = ActionSchema(
    name="lytics.segment_membership",
    description="Whether a Lytics profile is in a segment, in one request: the profile "
    "lookup (GET /api/entity/…), whose `segments` lists its segment slugs (UserProfile in "
    "the spec). A segment scan would need an LQL filter built from the value, whose quoting "
    "the spec does not give. Only when the segment is not among the slugs, a second request "
    "(GET /api/segment/{slug_or_id}) resolves an id to its slug or refuses an unknown segment.",
    params={
        "segment": Param("segment", ("string",), required=True, description="slug or id"),
        **PROFILE_PARAMS,
    },
    results={"member": "boolean", "found": "boolean"},
)
TRIGGER_WORK = ActionSchema(
    name="lytics.trigger_work",
    description="Start a Lytics background workflow (POST /api/work).",
    params={
        "workflow_id": Param("workflow_id", ("string",), required=True),
        "config": Param("config", ("object",), description="the workflow's configuration"),
    },
)


def client(deps: ActionDeps, action: str) -> LyticsClient:
    found = deps.lytics
    if found is None:
        raise PermanentError(f"{action} needs LYTICS_API_TOKEN to be set")
    return found


async def collect(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    data = call.params["data"]
    if isinstance(data, Mapping):
        items: Any = dict(data)
    elif isinstance(data, list) and all(isinstance(item, Mapping) for item in data):
        items = [dict(item) for item in data]
    else:
        raise PermanentError("lytics.collect 'data' must be an object or a list of objects")
    lytics = client(deps, "lytics.collect")
    try:
        counts = await lytics.collect(str(call.params["stream"]), items)
    except ValueError as exc:
        raise PermanentError(f"lytics.collect: {exc}") from None
    return {"stream": call.params["stream"], **counts}


def profile_key(call: StepCall, action: str) -> tuple[str, str, str]:
    """The (table, field, value) naming one profile, checked after rendering."""
    table = call.params.get("table", "user")
    field, value = call.params["field"], call.params["value"]
    for name, given in (("table", table), ("field", field)):
        if not isinstance(given, str) or not given:
            raise PermanentError(f"{action} '{name}' must be a non-empty string")
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        raise PermanentError(f"{action} 'value' must be a non-empty string or a number")
    return table, field, str(value)


async def lookup(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    table, field, value = profile_key(call, "lytics.lookup")
    fields = call.params.get("fields")
    if fields is not None and (
        not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields)
    ):
        raise PermanentError("lytics.lookup 'fields' must be a list of field names")
    profile = await client(deps, "lytics.lookup").get_entity(
        field, value, table=table, fields=fields or None
    )
    return {
        "found": profile is not None,
        "profile": profile,
        "table": table,
        "field": field,
        "value": value,
    }


async def segment_membership(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    action = "lytics.segment_membership"
    table, field, value = profile_key(call, action)
    segment = call.params["segment"]
    if not isinstance(segment, str) or not segment:
        raise PermanentError(f"{action} 'segment' must be a segment slug or id")
    lytics = client(deps, action)
    result: dict[str, Any] = {"segment": segment, "table": table, "field": field, "value": value}
    profile = await lytics.get_entity(field, value, table=table)
    if profile is None:
        return {"member": False, "found": False, "slug": None, **result}
    slugs = profile.get("segments")
    if not isinstance(slugs, list):
        raise PermanentError(
            f"{action}: Lytics answered the {table} profile with {field} = {value!r} without "
            "a 'segments' list, so membership cannot be told; check with bridge doctor"
        )
    slug = segment
    if segment not in slugs:
        try:
            slug = (await lytics.get_segment(segment)).get("slug_name") or segment
        except PermanentError as exc:
            if exc.status != 404:
                raise
            raise PermanentError(
                f"{action}: Lytics has no segment {segment!r}; give its slug or id"
            ) from None
    return {"member": slug in slugs, "found": True, "slug": slug, **result}


async def trigger_work(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    config = call.params.get("config")
    if config is not None and not isinstance(config, Mapping):
        raise PermanentError("lytics.trigger_work 'config' must be an object")
    work = await client(deps, "lytics.trigger_work").create_work(
        str(call.params["workflow_id"]), config
    )
    return {"work_id": work.get("id"), "workflow_id": call.params["workflow_id"]}


ACTIONS = (
    Action(COLLECT, collect),
    Action(TRIGGER_WORK, trigger_work),
    Action(LOOKUP, lookup),
    Action(SEGMENT_MEMBERSHIP, segment_membership),
)
