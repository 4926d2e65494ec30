"""Client of the Lytics REST API: collect, segments, entities, jobs, work (clients)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import httpx

from bridge.clients.base import KeyedClient
from bridge.errors import ClientError, PermanentError

# The one place that knows where data is collected: `POST /api/collect?stream=NAME` with
# one JSON object as the body (lytics-openapi.yaml, CollectRequest).
COLLECT_PATH: Final = "api/collect"
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
        """Send one event (an object) or several (a list) to a stream.

        The spec takes one object per call, so a list is sent item by item. Returns
        `{"message_count", "rejected_count"}`; raises PermanentError after sending all
        items when Lytics rejected any of them (a partial failure that retrying repeats).
        """
        if not stream:
            raise ValueError("a Lytics stream name is required")
        items = [data] if isinstance(data, Mapping) else list(data)
        sent = rejected = 0
        last: httpx.Response | None = None
        for item in items:
            if not isinstance(item, Mapping):
                raise ValueError(
                    f"each item collected must be an object, not {type(item).__name__}"
                )
            last = await self.request(
                "POST", COLLECT_PATH, params={"stream": stream}, json=dict(item)
            )
            sent += 1
            body = _json_or_none(last)
            counts = body.get("data") if isinstance(body, dict) else None
            if isinstance(counts, dict) and isinstance(counts.get("rejected_count"), int):
                rejected += counts["rejected_count"]
        if rejected and last is not None:
            raise self._error(
                last, f"Lytics rejected {rejected} of {sent} messages sent to stream {stream!r}"
            )
        return {"message_count": sent, "rejected_count": rejected}

    # Accounts.

    async def list_accounts(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/account")

    async def get_account(self, aid: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/account/{_seg(aid)}")

    # Segments.

    async def list_segments(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/segment")

    async def get_segment(self, slug_or_id: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/segment/{_seg(slug_or_id)}")

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
        path = f"api/entity/{_seg(table)}/{_seg(field)}/{_seg(value)}"
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
        return await self._dict("GET", f"api/datamodel/{_seg(name)}")

    # Connections.

    async def list_connections(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/connection")

    async def get_connection(self, connection_id: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/connection/{_seg(connection_id)}")

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
        return await self._dict("PUT", f"api/connection/{_seg(connection_id)}", json=body)

    async def delete_connection(self, connection_id: str) -> None:
        await self._envelope("DELETE", f"api/connection/{_seg(connection_id)}")

    # Jobs and work.

    async def list_jobs(self) -> list[dict[str, Any]]:
        return await self._list("GET", "api/job")

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self._dict("GET", f"api/job/{_seg(job_id)}")

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
        await self._envelope("DELETE", f"api/job/{_seg(job_id)}")

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


def _seg(value: str) -> str:
    return quote(str(value), safe="")


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
