"""How the commands run beside `bridge dev` find it: `.bridge/dev.json` in its folder.

`bridge dev` writes the file (mode 0600: it holds the webhook secret, admin token and its
sandboxes' demo credentials) once it listens, and removes it when it stops. `send`, `trace`,
`dlq`, `replay`, `fire` and `doctor` read it; the variables it holds apply where the
environment sets none. A file whose process is gone (a `bridge dev` that was killed) is
ignored, with a note.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bridge.errors import ConfigError
from bridge.settings import Settings, source_env_suffix

# Relative to the working directory: every project folder has its own.
STATE_DIR = Path(".bridge")
STATE_FILE = STATE_DIR / "dev.json"
LOCK_FILE = STATE_DIR / "dev.lock"
REDIS_DIR = STATE_DIR / "redis"


@dataclass(frozen=True)
class DevState:
    """A running `bridge dev`: its process, base URL and the variables its commands need."""

    pid: int
    url: str
    env: dict[str, str] = field(default_factory=dict)
    # The embedded redis-server's data folder, when `bridge dev` runs its own.
    redis_dir: str | None = None
    started_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "url": self.url,
            "env": self.env,
            "redis_dir": self.redis_dir,
            "started_at": self.started_at,
        }


def state_env(settings: Settings) -> dict[str, str]:
    """The variables that let another command reach the same Redis, sign and log in."""
    env = {
        "REDIS_URL": settings.redis_url,
        "BRIDGE_KEY_PREFIX": settings.key_prefix,
        "BRIDGE_QUEUE_NAME": settings.queue_name,
        "BRIDGE_RULES_DIR": str(settings.rules_dir.resolve()),
        "BRIDGE_TEMPLATES_DIR": str(settings.templates_dir.resolve()),
    }
    if settings.webhook_secret is not None:
        env["BRIDGE_WEBHOOK_SECRET"] = settings.webhook_secret.get()
    for suffix, secret in settings.webhook_secrets.items():
        env[f"BRIDGE_WEBHOOK_SECRET_{source_env_suffix(suffix)}"] = secret.get()
    for suffix, scheme in settings.webhook_schemes.items():
        env[f"BRIDGE_WEBHOOK_SCHEME_{source_env_suffix(suffix)}"] = scheme
    if settings.slack_signing_secret is not None:
        env["SLACK_SIGNING_SECRET"] = settings.slack_signing_secret.get()
    if settings.allow_unsigned:
        env["BRIDGE_ALLOW_UNSIGNED"] = "1"
    if settings.admin_token is not None:
        env["BRIDGE_ADMIN_TOKEN"] = settings.admin_token.get()
    return env


def shown_url(url: str) -> str:
    """A Redis URL without its user name and password, fit to print."""
    return re.sub(r"//[^@/]*@", "//", url)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def prepare_dir(folder: Path = STATE_DIR) -> None:
    """Create `.bridge/` (owner only), telling git to ignore everything in it."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        ignore = folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# lytbridge's local state (bridge dev): never commit it\n*\n")
    except OSError as exc:
        raise ConfigError(
            f"bridge dev cannot create {folder}/ in {Path.cwd()}: {exc.strerror}; "
            "run it in a folder you can write to"
        ) from None


def write_state(state: DevState, path: Path = STATE_FILE) -> None:
    """Write the state file atomically, readable by its owner only."""
    prepare_dir(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(state.to_json(), out, indent=2)
    os.replace(partial, path)


def remove_state(pid: int, path: Path = STATE_FILE) -> None:
    """Remove the state file if it is this process's."""
    state = load_state(path)
    if state is not None and state.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def load_state(path: Path = STATE_FILE) -> DevState | None:
    """The state file as written, live or not; None if missing or unreadable."""
    try:
        raw = json.loads(path.read_text())
        return DevState(
            pid=int(raw["pid"]),
            url=str(raw["url"]),
            env={str(k): str(v) for k, v in dict(raw.get("env") or {}).items()},
            redis_dir=str(raw["redis_dir"]) if raw.get("redis_dir") else None,
            started_at=float(raw.get("started_at") or 0),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def lock_held(path: Path = LOCK_FILE) -> bool | None:
    """Whether a `bridge dev` holds this folder's lock; None where locks are not known.

    The lock, not the pid, tells whether dev runs: a pid can be reused by another process
    after a kill or a restart (in a container, dev's pid 1 is always alive).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the pid check remains
        return None
    try:
        handle = path.open("r")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def read_state(path: Path = STATE_FILE) -> tuple[DevState | None, str | None]:
    """The running `bridge dev` of this folder, or None; and a note to show, if any."""
    if not path.exists():
        return None, None
    state = load_state(path)
    if state is None:
        return None, f"note: ignoring {path}: it is not a state file bridge dev wrote"
    held = lock_held(path.with_name(LOCK_FILE.name))
    if not (pid_alive(state.pid) if held is None else held):
        return None, (
            f"note: ignoring {path}: the bridge dev that wrote it (pid {state.pid}) is no "
            "longer running"
        )
    return state, None


@contextlib.contextmanager
def single_instance(path: Path = LOCK_FILE) -> Iterator[None]:
    """Hold the folder's lock while `bridge dev` runs; ConfigError if another holds it."""
    prepare_dir(path.parent)
    handle: IO[str] = path.open("a")
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the state file's pid check remains
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            running, _ = read_state(path.with_name(STATE_FILE.name))
            where = f" (pid {running.pid}, {running.url})" if running else ""
            raise ConfigError(
                f"bridge dev is already running in this folder{where}; stop it first "
                "(Ctrl-C in its terminal), or use its commands beside it"
            ) from None
        yield
    finally:
        handle.close()
