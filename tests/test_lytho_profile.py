"""The Lytho API profile: sources for every entry, overrides, and their errors; page shapes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.clients.lytho_profile import default_profile, load_profile
from bridge.clients.pages import read_page
from bridge.errors import ClientError, ConfigError
from bridge.settings import Settings

# A document line, a named public source (docs/lytho-api.md lists them), or "assumed".
_CITED = re.compile(
    r"(dam-doc|workflow-doc):\d+|NOTES\.md|Lytho's (DAM|Workflow) reference|public client|assumed"
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_entry_says_where_it_comes_from():
    profile = default_profile()
    assert len(profile.entries) > 50
    for entry in profile.entries.values():
        assert _CITED.search(entry.source), f"{entry.key} has no source: {entry.source!r}"
        assert entry.origin == "default"


def test_a_document_line_cited_says_what_the_entry_claims():
    # A citation points at the line that backs the entry, so it can be read and checked.
    docs = {
        "dam-doc": "lytho-dam-api.txt",
        "workflow-doc": "lytho-workflow-api.txt",
    }
    shared = next(
        (
            p / "shared" / "api-docs"
            for p in Path(__file__).resolve().parents
            if (p / "shared" / "api-docs").is_dir()
        ),
        None,
    )
    if shared is None:
        pytest.skip("shared/api-docs is not beside this checkout")
    entry = default_profile().entry("dam.pages.size_param")
    doc, line = re.search(r"(dam-doc):(\d+)", entry.source).groups()  # type: ignore[union-attr]
    text = (shared / docs[doc]).read_text(encoding="utf-8").splitlines()[int(line) - 1]
    assert "Size" in text and "maximum of 50" in text


def test_an_override_file_changes_only_the_entries_it_names(tmp_path: Path):
    path = _write(
        tmp_path,
        "dam:\n"
        "  pages:\n"
        "    first_page: 1\n"
        "    items: data\n"
        "  operations:\n"
        '    add_tags: {method: put, path: "assets/{asset_id}/tag-ids"}\n'
        "workflow.search.modified_since: updatedAfter\n",
    )
    profile = load_profile(path)
    assert profile.dam_pages.first_page == 1 and profile.dam_pages.items == "data"
    tags = profile.op("add_tags")
    # The op is merged into its default: the id list still goes where the default says.
    assert (tags.method, tags.path, tags.ids_in, tags.ids_name) == (
        "PUT",
        "assets/{asset_id}/tag-ids",
        "body",
        "tagIds",
    )
    assert profile.value("workflow.search.modified_since") == "updatedAfter"
    assert set(profile.overridden) == {
        "dam.pages.first_page",
        "dam.pages.items",
        "dam.operations.add_tags",
        "workflow.search.modified_since",
    }
    assert profile.entry("dam.pages.first_page").origin == f"{path}:3"
    assert profile.value("dam.pages.size_param") == "size"
    assert profile.dam_path("add_tags", asset_id="a/1") == "assets/a%2F1/tag-ids"


def test_every_problem_of_an_override_file_is_reported_with_its_line(tmp_path: Path):
    path = _write(
        tmp_path,
        "dam:\n"
        "  pages:\n"
        "    first_page: -1\n"
        "    itemz: data\n"
        "  operations:\n"
        "    add_tags: {method: FETCH}\n"
        '    remove_tags: {path: "assets/{id}/tags"}\n'
        "    create_tag: {ids: {in: body, name: x}}\n"
        "workflow.rate_limits: 20 a minute\n"
        "workflow.auth.token_auth: digest\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == "the Lytho profile override has problems:"
    assert lines[1:] == [
        f"{path}:3:17: dam.pages.first_page must be a whole number of at least 0",
        f"{path}:4:5: unknown profile key 'dam.pages.itemz'; keys here: dam.pages.first_page, "
        "dam.pages.items, dam.pages.last, dam.pages.max_size, dam.pages.page_param, "
        "dam.pages.size_param",
        f"{path}:6:15: dam.operations.add_tags method must be one of DELETE, GET, PATCH, POST, "
        "PUT, not 'FETCH'",
        f"{path}:7:18: dam.operations.remove_tags must use exactly {{asset_id}} (as the default "
        "'assets/{asset_id}/tags' does)",
        f"{path}:8:17: dam.operations.create_tag takes no ids (it sends no list of ids)",
        f"{path}:9:23: workflow.rate_limits must be limits like '20/1m:1,30000/1d' "
        "(count/period[:burst], period in s, m, h or d; a burst at most its count), not "
        "'20 a minute'",
        f"{path}:10:27: workflow.auth.token_auth must be one of 'basic', 'body'",
    ]


def test_broken_yaml_and_a_missing_file_are_one_clear_line(tmp_path: Path):
    path = _write(tmp_path, "dam:\n  pages: {first_page: 1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3:1: invalid YAML: "):
        load_profile(path)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_profile(missing)
    assert str(caught.value) == (
        f"BRIDGE_LYTHO_PROFILE names {missing}, which cannot be read (No such file or "
        "directory); fix the path or unset it"
    )


def test_an_empty_override_file_is_the_defaults(tmp_path: Path):
    profile = load_profile(_write(tmp_path, "# nothing overridden yet\n"))
    assert profile.overridden == ()
    assert profile.entries == default_profile().entries


def test_an_edited_file_is_read_again(tmp_path: Path):
    import os

    path = _write(tmp_path, "dam.pages.first_page: 1\n")
    assert load_profile(path).dam_pages.first_page == 1
    path.write_text("dam.pages.first_page: 0\ndam.pages.items: results\n", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_profile(path).dam_pages.items == "results"


def test_the_setting_names_the_file():
    settings = Settings.from_env({"BRIDGE_LYTHO_PROFILE": "ops/lytho.yaml"})
    assert settings.lytho_profile == Path("ops/lytho.yaml")
    assert Settings.from_env({}).lytho_profile is None


def test_the_profiles_rate_limits_feed_the_limiter_unless_a_setting_wins(tmp_path: Path):
    from bridge.operate.context import rate_limiter
    from bridge.queue.keys import Keys

    path = _write(tmp_path, "dam.rate_limits: 100/1m\n")
    settings = Settings.from_env({"BRIDGE_LYTHO_PROFILE": str(path)})
    limiter = rate_limiter(None, Keys("t:"), settings)  # type: ignore[arg-type]
    assert [(x.count, x.period) for x in limiter.limits("lytho")] == [(100, 60.0)]
    workflow = [(x.count, x.period) for x in limiter.limits("lytho_workflow")]
    assert workflow == [(20, 63.0), (30000, 86400.0)]
    settings = Settings.from_env(
        {"BRIDGE_LYTHO_PROFILE": str(path), "BRIDGE_RATE_LIMIT_LYTHO": "5/1s"}
    )
    limiter = rate_limiter(None, Keys("t:"), settings)  # type: ignore[arg-type]
    assert [(x.count, x.period) for x in limiter.limits("lytho")] == [(5, 1.0)]


# Pages.

STYLE = default_profile().dam_pages


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        ({"content": [{"id": 1}], "totalElements": 1, "totalPages": 1, "last": True}, "content"),
        ({"items": [{"id": 1}], "totalCount": 1}, "items"),
        ({"data": [{"id": 1}], "total": 1}, "data"),
        ({"results": [{"id": 1}], "count": 1}, "results"),
        ([{"id": 1}], "list"),
    ],
)
def test_a_page_is_read_in_every_common_shape(body, shape):
    page = read_page(body, STYLE, "assets")
    assert page.items == [{"id": 1}]
    assert page.shape == shape
    assert page.total == (None if shape == "list" else 1)


def test_the_profiles_items_key_is_tried_first():
    style = load_style(items="results")
    page = read_page({"content": [{"id": 1}], "results": [{"id": 2}]}, style, "assets")
    assert (page.shape, page.items) == ("results", [{"id": 2}])


def load_style(**changes):
    from dataclasses import replace

    return replace(STYLE, **changes)


def test_a_page_in_an_unknown_shape_says_what_it_tried():
    with pytest.raises(ClientError) as caught:
        read_page({"assets": [], "size": 50}, STYLE, "assets")
    assert str(caught.value) == (
        "GET assets: expected a page of items (tried content, items, data, results and a bare "
        "list), got an object with keys assets, size; set the page shape in "
        "BRIDGE_LYTHO_PROFILE (docs/lytho-api.md)"
    )
    with pytest.raises(ClientError, match=r"^GET tags: expected a page of items, got 'oops'$"):
        read_page("oops", STYLE, "tags")


def test_the_end_of_a_list_is_found_from_a_flag_a_count_or_a_short_page():
    one_based = load_style(first_page=1)
    full = [{"id": i} for i in range(50)]
    assert not read_page({"content": full}, STYLE, "a").is_last(0, 50, STYLE)
    assert read_page({"content": full, "last": True}, STYLE, "a").is_last(0, 50, STYLE)
    assert read_page({"content": full, "totalPages": 2}, STYLE, "a").is_last(1, 50, STYLE)
    assert not read_page({"content": full, "totalPages": 2}, STYLE, "a").is_last(0, 50, STYLE)
    # Page 2 of 2 when pages count from 1.
    page = read_page({"data": full, "totalPages": 2}, one_based, "a")
    assert not page.is_last(1, 50, one_based) and page.is_last(2, 50, one_based)
    assert read_page({"content": full[:3]}, STYLE, "a").is_last(0, 50, STYLE)
    assert read_page([], STYLE, "a").is_last(0, 50, STYLE)
    # Entries that are not objects count towards a full page, but are not items.
    page = read_page({"content": [*full[:49], "x"]}, STYLE, "a")
    assert len(page.items) == 49 and not page.is_last(0, 50, STYLE)


def test_the_docs_list_every_entry_with_its_source():
    from bridge.clients.lytho_profile import markdown_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "lytho-api.md").read_text("utf-8")
    begin = doc.index("\n", doc.index("<!-- profile:begin")) + 1
    end = doc.index("<!-- profile:end -->")
    # Regenerate with: python -c "from bridge.clients.lytho_profile import *;
    #   print(markdown_table(default_profile()), end='')" and paste between the markers.
    assert doc[begin:end] == markdown_table(default_profile())


@pytest.mark.parametrize("command", ["web", "worker", "dev"])
def test_a_process_with_a_broken_override_file_does_not_start(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    import bridge.cli.dev
    import bridge.operate.worker
    from bridge.cli.main import main

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the process started")

    monkeypatch.setattr(bridge.operate.worker, "worker_main", started)
    monkeypatch.setattr(bridge.cli.dev, "dev_services", started)
    monkeypatch.setattr("uvicorn.run", started)
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, "dam:\n  pages:\n    first_page: one\n")
    monkeypatch.setenv("BRIDGE_LYTHO_PROFILE", str(path))
    assert main([command]) == 1
    assert capsys.readouterr().err == (
        f"bridge {command}: the Lytho profile override has problems:\n"
        f"{path}:3:17: dam.pages.first_page must be a whole number of at least 0\n"
    )


def test_bridge_devs_lytho_sandboxes_speak_the_profile_of_the_override_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import httpx

    from bridge.cli import dev

    monkeypatch.chdir(tmp_path)
    path = _write(
        tmp_path,
        "dam.pages.items: data\n"
        "dam.pages.first_page: 1\n"
        'dam.paths.assets: "dam/assets"\n'
        "workflow.pages.items: results\n",
    )
    env = {"REDIS_URL": "redis://127.0.0.1:6379/13", "BRIDGE_LYTHO_PROFILE": str(path)}
    with dev.dev_services(Settings.from_env(env)) as settings:
        assert settings.lytho_api_key is not None
        key = {"x-api-key": settings.lytho_api_key.get()}
        page = httpx.get(f"{settings.lytho_api_url}dam/assets", params={"page": 1}, headers=key)
        assert page.status_code == 200 and page.json()["data"]
        old = httpx.get(f"{settings.lytho_api_url}assets", headers=key)
        assert old.status_code == 404
        assert settings.lytho_token_url is not None and settings.lytho_client_id is not None
        assert settings.lytho_client_secret is not None
        token = httpx.post(
            settings.lytho_token_url,
            data={"grant_type": "client_credentials"},
            auth=(settings.lytho_client_id, settings.lytho_client_secret.get()),
        ).json()["access_token"]
        proofs = httpx.get(
            f"{settings.lytho_workflow_api_url}proof/search",
            params={"page": 1, "pageSize": 30},
            headers={"authorization": f"Bearer {token}"},
        )
        assert proofs.status_code == 200 and proofs.json()["results"]


def test_a_key_set_twice_is_an_error_naming_both_places(tmp_path: Path):
    # Review R2, S6: the second setting silently won, and a user's PUT was lost.
    path = _write(
        tmp_path,
        "dam.operations.add_tags: {method: PUT}\n"
        "dam:\n"
        "  operations:\n"
        '    add_tags: {path: "assets/{asset_id}/tag-ids"}\n'
        "  pages:\n"
        "    first_page: 1\n"
        "    first_page: 2\n"
        "dam.pages.first_page: 0\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    assert str(caught.value).splitlines() == [
        "the Lytho profile override has problems:",
        f"{path}:4:5: dam.operations.add_tags is set twice: at {path}:1:1 and {path}:4:5",
        f"{path}:7:5: dam.pages.first_page is set twice: at {path}:6:5 and {path}:7:5",
        f"{path}:8:1: dam.pages.first_page is set twice: at {path}:6:5 and {path}:8:1",
    ]


def test_a_path_may_start_with_http_but_not_name_a_scheme(tmp_path: Path):
    # Review R2, N5: only a scheme (://) or a leading / is refused.
    path = _write(tmp_path, 'dam.paths.asset: "httpAssets/{asset_id}"\n')
    assert load_profile(path).dam_path("asset", asset_id=5) == "httpAssets/5"
    for bad in ("https://lytho.example/assets/{asset_id}", "/v1/assets/{asset_id}"):
        path = _write(tmp_path, f'dam.paths.asset: "{bad}"\n')
        with pytest.raises(ConfigError) as caught:
            load_profile(path)
        assert str(caught.value).splitlines()[1] == (
            f"{path}:1:18: dam.paths.asset must be a path relative to the API's base URL, "
            "like 'assets/{asset_id}'"
        )
