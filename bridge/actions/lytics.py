"""lytics.collect and lytics.trigger_work: send data to Lytics, start a Lytics workflow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.clients.lytics import LyticsClient
from bridge.errors import PermanentError
from bridge.schema import ActionSchema, Param

COLLECT = ActionSchema(
    name="lytics.collect",
    description="Send one event (an object) or several (a list) to a Lytics stream "
    "(POST /api/collect?stream=…).",
    params={
        "stream": Param("stream", ("string",), required=True, description="the stream name"),
        "data": Param("data", ("object", "array"), required=True, description="the event(s)"),
    },
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
    counts = await client(deps, "lytics.collect").collect(str(call.params["stream"]), items)
    return {"stream": call.params["stream"], **counts}


async def trigger_work(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    config = call.params.get("config")
    if config is not None and not isinstance(config, Mapping):
        raise PermanentError("lytics.trigger_work 'config' must be an object")
    work = await client(deps, "lytics.trigger_work").create_work(
        str(call.params["workflow_id"]), config
    )
    return {"work_id": work.get("id"), "workflow_id": call.params["workflow_id"]}


ACTIONS = (Action(COLLECT, collect), Action(TRIGGER_WORK, trigger_work))
