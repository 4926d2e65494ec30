"""Client of the Lytics REST API: collect, segments, entities, jobs, work (clients)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final

import httpx

from bridge.clients.base import KeyedClient
from bridge.clients.ids import path_segment
from bridge.errors import ClientError, PermanentError

# The one place that knows where data is collected: `POST /api/collect?stream=NAME`
# (lytics-openapi.yaml). The spec's CollectRequest is one object; a list goes as one JSON
# array of such objects, as Lytics' JSON collect accepts (its Android SDK posts arrays to
# /collect/json/{stream}): one request, so a retry never repeats items already accepted.
COLLECT_PATH: Final = "api/collect"
# Lytics caps a body on api.lytics.io at 10 MB ("less than 10MB" for real-time collect);
# the item bound is ours, to keep one step one modest request.
MAX_COLLECT_ITEMS: Final = 1000
MAX_COLLECT_BYTES: Final = 10_000_000
MAX_SCAN_LIMIT: Final = 100


class LyticsClient(KeyedClient):
    """The Lytics API with its token in the `Authorization` header (no "Bearer").

    Answers come in an envelope `{status, message, data}`; methods return `data`.
    """

    api = "Lytics"
    limiter_key = "lytics"
    credential_hint = "check LYTICS_API_TOKEN"
    credential_header = "Authorization"

    async def _envelope(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.request(method, path, **kwargs)
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self._error(response, "expected a JSON envelope {status, message, data}")
        # `status` is a number or a string ("200", "success") depending on the endpoint.
        status = body.get("status")
        code = int(status) if isinstance(status, int | str) and str(status).isdigit() else None
        if code is not None and code >= 400:
            raise self._error(response, f"the envelope says status {code}")
        return body

    async def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._envelope(method, path, **kwargs)).get("data")

    async def _dict(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = await self._data(method, path, **kwargs)
        if not isinstance(data, dict):
            raise ClientError(f"{method} /{path}: expected an object in 'data', got {data!r:.100}")
        return data

    async def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        data = await self._data(method, path, **kwargs)
        if data is None:
            return []
        if not isinstance(data, list):
            raise ClientError(f"{method} /{path}: expected a list in 'data', got {data!r:.100}")
        return data

    # Data collection.

    async def collect(
        self, stream: str, data: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> dict[str, int]:
        """Send one event (an object) or several (a list, in one request) to a stream.

        Returns `{"message_count", "rejected_count"}`; raises PermanentError when Lytics
        rejected any message (a partial failure: retrying would repeat the accepted ones),
        and ValueError, before sending anything, for a list past the bounds.
        """
        if not stream:
            raise ValueError("a Lytics stream name is required")
        body = _collect_body(data)
        if isinstance(body, list) and not body:
            return {"message_count": 0, "rejected_count": 0}
        sent = 1 if isinstance(body, dict) else len(body)
        response = await self.request("POST", COLLECT_PATH, params={"stream": stream}, json=body)
        payload = _json_or_none(response)
        counts = payload.get("data") if isinstance(payload, dict) else None
        counts = counts if isinstance(counts, dict) else {}
        result = {
            "message_count": _count(counts.get("message_count"), sent),
            "rejected_count": _count(counts.get("rejected_count"), 0),
        }
        if result["rejected_count"]:
            raise self._error(
                response,
                f"Lytics rejected {result['rejected_count']} of {sent} messages sent to "
                f"stream {stream!r}; not retried, as that would send the accepted ones again",
            )
        return result

    # Accounts.

    async def list_accounts(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/account")

    async def get_account(self, aid: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/account/{_seg(aid, 'aid')}")

    # Segments.

    async def list_segments(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/segment")

    async def get_segment(self, slug_or_id: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/segment/{_seg(slug_or_id, 'segment')}")

    async def scan_segment(
        self,
        segment_id: str | None = None,
        *,
        filter_ql: str | None = None,
        limit: int = MAX_SCAN_LIMIT,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every profile of a segment (by id) or of an LQL filter, following `_next`."""
        if (segment_id is None) == (filter_ql is None):
            raise ValueError("scan a segment by segment_id or by filter_ql, exactly one")
        if not 1 <= limit <= MAX_SCAN_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_SCAN_LIMIT}, not {limit}")
        query = {"id": segment_id} if segment_id is not None else {"filter": filter_ql}
        cursor = ""
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["next"] = cursor
            body = await self._envelope("POST", "api/segment/scan", params=params, json=query)
            for profile in body.get("data") or []:
                yield profile
            cursor = body.get("_next") or ""
            if not cursor:
                return

    # Entities (user profiles).

    async def get_entity(
        self,
        field: str,
        value: str,
        *,
        table: str = "user",
        fields: Iterable[str] | None = None,
    ) -> dict[str, Any] | None:
        """The profile whose `field` equals `value`, or None when there is none."""
        path = f"api/entity/{_seg(table, 'table')}/{_seg(field, 'field')}/{_seg(value, 'value')}"
        params = {"fields": ",".join(fields)} if fields else None
        try:
            return await self._dict("GET", path, params=params)
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    # Data models.

    async def list_datamodels(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/datamodel")

    async def get_datamodel(self, name: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/datamodel/{_seg(name, 'name')}")

    # Connections.

    async def list_connections(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/connection")

    async def get_connection(self, connection_id: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/connection/{_seg(connection_id, 'connection_id')}")

    async def create_connection(
        self,
        name: str,
        type: str,
        *,
        auth_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = _connection_body({"name": name, "type": type, "auth_id": auth_id, "config": config})
        return await self._dict("POST", "api/connection", json=body)

    async def update_connection(
        self, connection_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change some fields of a connection, sending the others back as they are."""
        current = await self.get_connection(connection_id)
        body = _connection_body({**current, **changes})
        return await self._dict(
            "PUT", f"api/connection/{_seg(connection_id, 'connection_id')}", json=body
        )

    async def delete_connection(self, connection_id: str) -> None:
        await self._envelope("DELETE", f"api/connection/{_seg(connection_id, 'connection_id')}")

    # Jobs and work.

    async def list_jobs(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/job")

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/job/{_seg(job_id, 'job_id')}")

    async def create_job(
        self,
        type: str,
        connection_id: str,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type, "connection_id": connection_id}
        if config is not None:
            body["config"] = dict(config)
        return await self._dict("POST", "api/job", json=body)

    async def cancel_job(self, job_id: str) -> None:
        await self._envelope("DELETE", f"api/job/{_seg(job_id, 'job_id')}")

    async def create_work(
        self,
        workflow_id: str,
        config: Mapping[str, Any] | None = None,
        *,
        verbose_logging: bool = False,
    ) -> dict[str, Any]:
        """Trigger a background workflow; return `{"id": work_id}`."""
        body: dict[str, Any] = {"workflow_id": workflow_id, "verbose_logging": verbose_logging}
        if config is not None:
            body["config"] = dict(config)
        return await self._dict("POST", "api/work", json=body)


def _seg(value: str, name: str) -> str:
    """`value` as one path segment of a request; '..' and the like refused, naming `name`."""
    return path_segment(name, value, "an id" if name.endswith("id") else "a path segment")


def _count(value: Any, default: int) -> int:
    """A count Lytics reported, or `default` when it sent none."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def _collect_body(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> dict[str, Any] | list[dict[str, Any]]:
    """The JSON body of a collect: one object, or a bounded list of objects."""
    if isinstance(data, Mapping):
        return dict(data)
    items = list(data)
    for n, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise ValueError(f"item {n} collected must be an object, not {type(item).__name__}")
    if len(items) > MAX_COLLECT_ITEMS:
        raise ValueError(
            f"{len(items)} items are more than the {MAX_COLLECT_ITEMS} sent in one request; "
            "split the list over several steps, or load it with Lytics' bulk upload"
        )
    body = [dict(item) for item in items]
    size = len(json.dumps(body, separators=(",", ":"), default=str).encode())
    if size > MAX_COLLECT_BYTES:
        raise ValueError(
            f"the list is {size} bytes of JSON, over Lytics' {MAX_COLLECT_BYTES} byte limit "
            "for one request; split it over several steps"
        )
    return body


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _connection_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """A ConnectionRequest: the writable fields only, without nulls."""
    return {
        key: values[key]
        for key in ("name", "type", "auth_id", "config")
        if values.get(key) is not None
    }
