"""Node-RED as the paced benchmark's baseline: installed from npm, one flow, nothing else.

The flow: `http in` (POST /hooks/bench) → `switch` (payload.data.status == "approved") →
`http request` (POST the payload as JSON to the sink, keep-alive) → `http response` (202);
events that do not match are answered 202 at once. Node-RED keeps everything in process:
no signature check, no queue, no retry, nothing stored.

It is installed with `npm install --prefix DIR node-red@4` into DIR =
$LYTBRIDGE_NODE_RED_DIR or ~/.cache/lytbridge-bench/node-red (outside the repository), once.
Its settings switch off the editor and admin API (`httpAdminRoot: false`), diagnostics,
runtime state, telemetry, flow file writes (`readOnly`), and log warnings only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.procs import Launcher, Process, wait_until

DESCRIPTION = "http in → switch → http request (keep-alive) → http response, in process"
DEFAULT_DIR = Path.home() / ".cache" / "lytbridge-bench" / "node-red"

SETTINGS = """\
module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    userDir: {user_dir},
    flowFile: {flow_file},
    flowFilePretty: false,
    readOnly: true,
    httpAdminRoot: false,
    httpNodeRoot: "/",
    credentialSecret: false,
    diagnostics: {{enabled: false, ui: false}},
    runtimeState: {{enabled: false, ui: false}},
    telemetry: {{enabled: false, updateNotification: false}},
    externalModules: {{autoInstall: false}},
    editorTheme: {{projects: {{enabled: false}}}},
    logging: {{console: {{level: "warn", metrics: false, audit: false}}}},
}};
"""


def flow(sink_url: str) -> list[dict[str, object]]:
    tab = "bench9tab"
    return [
        {"id": tab, "type": "tab", "label": "bench"},
        {
            "id": "bench0in",
            "type": "http in",
            "z": tab,
            "url": "/hooks/bench",
            "method": "post",
            "upload": False,
            "wires": [["bench1switch"]],
        },
        {
            "id": "bench1switch",
            "type": "switch",
            "z": tab,
            "property": "payload.data.status",
            "propertyType": "msg",
            "rules": [{"t": "eq", "v": "approved", "vt": "str"}, {"t": "else"}],
            "checkall": "false",
            "outputs": 2,
            "wires": [["bench2post"], ["bench3answer"]],
        },
        {
            "id": "bench2post",
            "type": "http request",
            "z": tab,
            "method": "POST",
            "ret": "txt",
            "paytoqs": "ignore",
            "url": sink_url,
            "persist": True,
            "senderr": False,
            "headers": [],
            "wires": [["bench3answer"]],
        },
        {"id": "bench3answer", "type": "http response", "z": tab, "statusCode": "202", "wires": []},
    ]


def install(log: Callable[[str], None]) -> Path | str:
    """The installed node-red package folder, or why there is none."""
    prefix = Path(os.environ.get("LYTBRIDGE_NODE_RED_DIR", DEFAULT_DIR))
    package = prefix / "node_modules" / "node-red"
    if (package / "red.js").exists():
        return package
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        return "node or npm is not installed"
    log(f"paced: installing node-red@4 into {prefix} (npm)")
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "node-red@4", "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "npm install node-red@4 took more than 10 minutes"
    if done.returncode != 0 or not (package / "red.js").exists():
        return f"npm install node-red@4 failed: {(done.stderr or done.stdout)[-500:]}"
    return package


def version(package: Path) -> str:
    return str(json.loads((package / "package.json").read_text())["version"])


def start(launcher: Launcher, package: Path, user_dir: Path, port: int, sink_url: str) -> Process:
    """Node-RED on 127.0.0.1:`port` serving the benchmark flow, ready."""
    user_dir.mkdir(parents=True, exist_ok=True)
    flow_file = user_dir / "flows.json"
    flow_file.write_text(json.dumps(flow(sink_url)))
    (user_dir / "package.json").write_text('{"name": "lytbridge-bench", "version": "0.0.0"}')
    settings = user_dir / "settings.js"
    settings.write_text(
        SETTINGS.format(
            port=port, user_dir=json.dumps(str(user_dir)), flow_file=json.dumps(str(flow_file))
        )
    )
    node = shutil.which("node") or "node"
    log = launcher.logs / "node-red.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [
                node,
                str(package / "red.js"),
                "--settings",
                str(settings),
                "--userDir",
                str(user_dir),
            ],
            cwd=user_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    process = Process("node-red", popen, log)
    launcher.started.append(process)
    try:
        wait_until(
            lambda: process.check() or _answers(f"http://127.0.0.1:{port}/hooks/bench"),
            60,
            "Node-RED to answer (see its log, node-red.log)",
        )
    except RuntimeError:
        process.stop()
        raise
    return process


def _answers(url: str) -> bool:
    """Whether the flow is deployed: an event no rule matches is answered 202."""
    try:
        return httpx.post(url, json={"data": {"status": "draft"}}, timeout=1.0).status_code == 202
    except httpx.HTTPError:
        return False
