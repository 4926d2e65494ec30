"""The Lytho sandboxes' dialect is their own: never read from the client's tables, and
overridden by files merged into the defaults or refused with file, line, column and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.sandbox.lytho_dialect import LythoDialect

ROOT = Path(__file__).resolve().parents[1]


def test_sandboxes_do_not_read_or_import_the_clients_tables() -> None:
    probe = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: opened.append(str(a[0])) if e == 'open' else None)\n"
        "import bridge.sandbox.lytho, bridge.sandbox.lytho_workflow\n"
        "bridge.sandbox.lytho.create_lytho_app()\n"
        "bridge.sandbox.lytho_workflow.create_lytho_workflow_app()\n"
        "print([m for m in sys.modules if m.startswith('bridge.clients')])\n"
        "print([p for p in opened if '/bridge/clients/' in p.replace('\\\\', '/')])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["[]", "[]"]


def test_an_override_merges_nested_and_dotted_keys_into_the_defaults() -> None:
    dialect = LythoDialect.from_mapping(
        {
            "dam": {"operations": {"add_tags": {"method": "put"}}},
            "dam.operations.add_tags.path": "assets/{asset_id}/tag-ids",
            "workflow.pages": {"sizes": [50, 10]},
        }
    )
    op = dialect.op("add_tags")
    assert (op.method, op.path, op.ids_in, op.ids_name) == (
        "PUT",
        "assets/{asset_id}/tag-ids",
        "body",
        "tagIds",
    )
    assert dialect.workflow_pages.sizes == (10, 50)
    assert LythoDialect.from_mapping(None) == LythoDialect()


BAD_FILES = [
    (
        "dam:\n  pages:\n    first_page: 2\n",
        "x.yaml:3:5: dam.pages.first_page (number of the first page): expected 0 or 1, got 2",
    ),
    (
        "dam.pages.frist_page: 1\n",
        "x.yaml:1:1: unknown key dam.pages.frist_page; did you mean dam.pages.first_page?",
    ),
    (
        'dam:\n  operations:\n    add_tags: {path: "assets/{id}/tags"}\n',
        "x.yaml:3:16: dam.operations.add_tags.path (path of add_tags): "
        "'assets/{id}/tags' must hold {asset_id}",
    ),
    (
        'dam.operations.add_metadata.path: "assets/{asset_id}/tags"\n',
        "x.yaml:1:1: dam.operations.add_metadata.path: POST assets/{}/tags is also "
        "dam.operations.add_tags.path",
    ),
    (
        "dam.operations.get_metadata:\n  ids: {in: body, name: x}\n",
        "x.yaml:2:3: unknown key dam.operations.get_metadata.ids; "
        "dam.operations.get_metadata has method, path",
    ),
    (
        "dam.pages.items: content\ndam:\n  pages: {items: data}\n",
        "x.yaml:3:11: dam.pages.items is set twice (first at {dir}/x.yaml:1:1)",
    ),
    (
        "dam.upload.method: PATCH\n",
        "x.yaml:1:1: dam.upload.method (how the bytes go to the upload URL): "
        "expected one of PUT, POST, got 'PATCH'",
    ),
    (
        "workflow:\n  kinds: {task: proof}\n",
        "x.yaml:2:11: workflow.kinds.task: the segment 'proof' is also workflow.kinds.proof",
    ),
    (
        "dam: [1, 2]\n",
        "x.yaml:1:1: dam: expected a mapping of auth, fields, operations, pages, paths, "
        "rate_limits, upload",
    ),
    (
        "dam:\n  pages: {items: [\n",
        "x.yaml:3:1: expected the node content, but found '<stream end>'",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_an_invalid_override_file_names_file_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "x.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        LythoDialect.from_file(tmp_path / "x.yaml")
    assert str(caught.value) == f"{tmp_path}/{message}".replace("{dir}", str(tmp_path))
