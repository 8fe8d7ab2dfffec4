"""Named benchmarks: download once from a (local) server, cache, check, and fail offline."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factedit.errors import FactEditError
from factedit.evaluate import benchmarks
from factedit.evaluate.benchmarks import BENCHMARKS, Benchmark, cache_path, resolve_source
from factedit.spec import load_spec

RECORD = {
    "case_id": 7,
    "requested_rewrite": {
        "prompt": "{} is located in the city of",
        "subject": "The Eiffel Tower",
        "target_new": {"str": "Rome"},
        "target_true": {"str": "Paris"},
    },
    "paraphrase_prompts": ["The Eiffel Tower stands in"],
    "neighborhood_prompts": ["The Louvre is located in the city of"],
    "attribute_prompts": [],
    "generation_prompts": [],
}

OTHER = {
    **RECORD,
    "case_id": 8,
    "requested_rewrite": {
        **RECORD["requested_rewrite"],
        "subject": "Big Ben",
        "target_true": {"str": "London"},
    },
    "paraphrase_prompts": ["Big Ben stands in"],
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines on stderr
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on localhost serving ``tmp_path/www``; yields (folder, base URL, hits)."""
    www = tmp_path / "www"
    www.mkdir()
    hits: list[str] = []

    class Counting(_Quiet):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Counting, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def counterfact(server, monkeypatch, tmp_path):
    """``counterfact`` pointed at the local server, with an empty $FACTEDIT_HOME."""
    www, base, hits = server
    (www / "counterfact.json").write_text(json.dumps([RECORD, OTHER]))
    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "home"))
    bench = Benchmark("counterfact", f"{base}/counterfact.json", "counterfact.json", "test")
    monkeypatch.setitem(BENCHMARKS, "counterfact", bench)
    monkeypatch.chdir(tmp_path)
    return bench, www, hits


def test_first_use_downloads_checks_and_caches_then_reuses_the_copy(counterfact):
    bench, _, hits = counterfact
    path = resolve_source("counterfact")
    assert path == cache_path(bench) and path.is_file()
    assert [r.case_id for r in load_spec(path).edits] == ["7", "8"]
    digest = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert digest == benchmarks.file_sha256(path)
    assert not list(path.parent.glob("*.download*"))  # no temporary left behind
    assert resolve_source("counterfact") == path
    assert hits == ["/counterfact.json"]  # the second use did not download again


def test_an_altered_cached_copy_is_an_error_naming_the_file(counterfact):
    path = resolve_source("counterfact")
    path.write_text(path.read_text()[:-5])
    with pytest.raises(FactEditError, match=r"does not match its recorded sha256: delete it"):
        resolve_source("counterfact")


def test_a_download_that_is_not_the_format_is_refused_and_not_cached(counterfact):
    bench, www, _ = counterfact
    (www / "counterfact.json").write_text("<html>moved</html>")
    with pytest.raises(FactEditError, match="not in its format"):
        resolve_source("counterfact")
    assert not cache_path(bench).exists()
    assert not list(cache_path(bench).parent.glob("*"))


def test_offline_without_a_cache_is_one_line_naming_data_file(counterfact, monkeypatch):
    bench, _, _ = counterfact
    dead = Benchmark("counterfact", "http://127.0.0.1:9/counterfact.json", bench.filename, "")
    monkeypatch.setitem(BENCHMARKS, "counterfact", dead)
    with pytest.raises(FactEditError) as caught:
        resolve_source("counterfact")
    message = str(caught.value)
    assert "\n" not in message and "--data FILE" in message and dead.url in message


def test_data_file_and_existing_paths_win(counterfact, tmp_path):
    local = tmp_path / "my-counterfact.json"
    local.write_text(json.dumps([RECORD]))
    assert resolve_source("counterfact", data=local) == local
    with pytest.raises(FactEditError, match="no such file"):
        resolve_source("counterfact", data=tmp_path / "missing.json")
    spec = tmp_path / "facts.yaml"
    spec.write_text("edits: []\n")
    assert resolve_source(spec) == spec
    with pytest.raises(FactEditError, match="named benchmark"):
        resolve_source(spec, data=local)
    (tmp_path / "counterfact").write_text("[]")  # a file of that name in the working dir
    assert resolve_source("counterfact") == Path("counterfact")


def test_every_named_benchmark_has_an_https_release():
    assert set(BENCHMARKS) == {"counterfact", "zsre", "counterfact-mass"}
    assert all(
        b.url.startswith("https://") and b.filename.endswith(".json") for b in BENCHMARKS.values()
    )


def test_cli_eval_offline_error_is_one_line_exit_2(counterfact, monkeypatch):
    from factedit.cli.main import app

    bench, _, _ = counterfact
    dead = Benchmark("counterfact", "http://127.0.0.1:9/counterfact.json", bench.filename, "")
    monkeypatch.setitem(BENCHMARKS, "counterfact", dead)
    result = CliRunner().invoke(app, ["eval", "counterfact", "--limit", "2"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--data FILE" in errors[0]
