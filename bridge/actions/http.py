"""http.post: POST JSON to an HTTPS endpoint; private and loopback addresses refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.actions.action import Action, ActionDeps, StepCall
from bridge.clients.base import ApiClient
from bridge.errors import PermanentError
from bridge.schema import ActionSchema, Param

SCHEMA = ActionSchema(
    name="http.post",
    description="POST a JSON body to an HTTPS endpoint (private addresses refused unless "
    "BRIDGE_HTTP_ALLOW lists them).",
    params={
        "url": Param("url", ("string",), required=True, description="https://… endpoint"),
        "json": Param("json", ("any",), description="the JSON body"),
        "headers": Param("headers", ("object",), description="extra request headers"),
    },
)
MAX_BODY_KEPT = 16_384
# Headers the bridge sets itself; a rule cannot override them.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class Endpoint(ApiClient):
    """Any endpoint a rule names: the shared retries and error messages, no credentials."""

    api = "the endpoint"
    credential_hint = "check the headers the rule sends"


def request_headers(raw: Any, action: str = "http.post") -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PermanentError(f"{action} 'headers' must be an object of header names to values")
    headers = {str(k): str(v) for k, v in raw.items()}
    reserved = sorted(k for k in headers if k.lower() in RESERVED_HEADERS)
    if reserved:
        raise PermanentError(f"{action} may not set the header(s) {', '.join(reserved)}")
    return headers


async def run(deps: ActionDeps, call: StepCall) -> dict[str, Any]:
    url = str(call.params["url"])
    endpoint = Endpoint(deps.outbound, url, retry=deps.retry, timeout=deps.timeout)
    response = await endpoint.request(
        "POST",
        url,
        json=call.params.get("json"),
        headers=request_headers(call.params.get("headers")),
    )
    body: Any = None
    if response.content:
        try:
            body = response.json()
        except ValueError:
            body = response.text[:MAX_BODY_KEPT]
    return {"status": response.status_code, "body": body}


POST = Action(SCHEMA, run)
