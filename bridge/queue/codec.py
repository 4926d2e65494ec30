"""arq's job format, written in one place: job bytes, the JSON serializer, the TTLs (→ queue).

A job is arq's dict `{"t": try, "f": function, "a": args, "k": kwargs, "et": enqueue ms}`,
serialized as compact JSON (not arq's default pickle), so stock arq reads our jobs and we
read its own (tests/test_arq_contract.py). `job_bytes` writes it in Python and `job_lua`
in the Lua scripts, from the same pieces.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from arq.constants import expires_extra_ms, keep_cronjob_progress

# A job that has not started is dropped a day after it was due (arq's expires_extra_ms).
JOB_EXPIRY_MS: int = expires_extra_ms
# The try counter of a job is kept this long (seconds), as arq's own worker keeps it.
RETRY_KEY_TTL = 88_400
# A finished job's result is kept this long (seconds): `bridge trace`, arq's Job.result()
# and the idempotent enqueue (a job id with a kept result is not queued again) rely on it.
RESULT_TTL = 3600
# A job may hand its worker lists to append to with its finish, in the same script (its
# trace's last entries): `ctx[FINISH_APPENDS]`, a list of (key, ttl s, [values]).
FINISH_APPENDS = "finish_appends"
# A cron job keeps its in-progress key this long (seconds) after it ran, so that no other
# worker runs the same slot.
CRON_KEEP_IN_PROGRESS: float = keep_cronjob_progress

# The pieces of a job's bytes: head, function, ARGS, args (a JSON array), TAIL, enqueue ms, END.
_HEAD = '{"t":null,"f":"'
_ARGS = '","a":'
_TAIL = ',"k":{},"et":'
_END = "}"


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; anything not JSON-able (an exception in a result) as its repr."""
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


def loads(raw: bytes | str) -> Any:
    return json.loads(raw)


def job_serializer(value: Any) -> bytes:
    """arq's `job_serializer`: jobs and results as compact JSON."""
    return dumps(value)


def job_deserializer(raw: bytes) -> Any:
    """arq's `job_deserializer`."""
    return json.loads(raw)


def job_payload(function: str, args: Sequence[Any], enqueue_ms: int) -> bytes:
    """A job in arq's format, serialized as JSON (the worker's job_deserializer)."""
    return job_bytes(function, dumps(list(args)), enqueue_ms)


def job_bytes(function: str, encoded_args: bytes, enqueue_ms: int) -> bytes:
    """A job in arq's format around arguments already encoded as a JSON array."""
    return b"%s%s%s%s%s%d%s" % (
        _HEAD.encode(),
        function.encode(),
        _ARGS.encode(),
        encoded_args,
        _TAIL.encode(),
        enqueue_ms,
        _END.encode(),
    )


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_lua(function: str, args_expr: str, enqueue_ms_expr: str) -> str:
    """A Lua expression giving the bytes `job_bytes` gives, for a script that holds the
    arguments' JSON array in `args_expr` and the enqueue time (ms) in `enqueue_ms_expr`."""
    return " .. ".join(
        [
            _lua_string(_HEAD + function + _ARGS),
            args_expr,
            _lua_string(_TAIL),
            enqueue_ms_expr,
            _lua_string(_END),
        ]
    )
