"""Reviewer dashboard: pages exist and link to each other, text is escaped, every figure is embedded, every
registered claim is on its page with its verdict, the badge per paper matches the fixture, scripts are only
the vendored ones (admitted by hash), bad input stops the stage with one line unless allowed (then shown,
file and field named); headless Chromium renders every page at 1400 px and at a phone width with no console
error, no network request and no overlapping chart labels (skipped when no browser is installed)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from html import unescape
from pathlib import Path
from urllib.parse import urldefrag

import pytest
from omegaconf import open_dict
from PIL import Image

from comparison_fixtures import CLAIM_VERDICT, PAPER_VERDICT, SECTION_FOLDERS, write_fixture_results
from headless import check_pages, crawl, find_browser, local_path
from repshare.report.render import anchor, cell, page_file
from repshare.utils.artifacts import record_checksums
from repshare.utils.io import write_json

PAGES = ["index.html", "claims.html"] + [f"{m}.html" for m in SECTION_FOLDERS]
STATIC = Path(__file__).resolve().parents[1] / "src" / "repshare" / "report" / "static"


def build(cfg, mutate=None) -> Path:
    """Fixture results -> (optionally broken by ``mutate``) -> compare -> report; the report folder."""
    from repshare.stages import compare, report

    results = write_fixture_results(Path(cfg.paths.results_dir))
    if mutate:
        mutate(results)
    compare.run(cfg)
    report.run(cfg)
    return results / "report"


@pytest.fixture(scope="module")
def good_report(tmp_path_factory) -> Path:
    from repshare.config import compose

    tmp = tmp_path_factory.mktemp("dash")
    cfg = compose(["experiment=smoke"])
    with open_dict(cfg):
        cfg.paths.results_dir = str(tmp / "results")
        cfg.paths.data_dir = str(tmp / "data")
        cfg.logger.dir = str(tmp / "results" / "wandb")
    return build(cfg)


def images_in(html: str) -> list[str]:
    return re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', markup(html))


def markup(html: str) -> str:
    """The page without the contents of its <script> elements (the vendored code and the chart data)."""
    return re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", html, flags=re.S)


def test_every_page_exists_and_links_to_every_other(good_report):
    assert sorted(p.name for p in good_report.glob("*.html")) == sorted(PAGES)
    for page in PAGES:
        html = markup((good_report / page).read_text())
        hrefs = set(re.findall(r'href="([^"]+)"', html))
        assert set(PAGES) <= {urldefrag(h)[0] for h in hrefs}, (page, set(PAGES) - hrefs)
        for h in hrefs:  # every link is a page file name of this folder (plus a fragment): never a path or scheme
            target = urldefrag(h)[0]
            assert re.fullmatch(r"[A-Za-z0-9_-]+\.html", target), h
            assert (good_report / target).is_file(), h


def test_csp_admits_only_the_vendored_scripts(good_report):
    for page in PAGES:
        html = (good_report / page).read_text()
        csp = unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
        assert "default-src 'none'" in csp and "img-src data:" in csp and "unsafe-eval" not in csp
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
        code = [body for attrs, body in scripts if 'type="application/json"' not in attrs]
        assert all("src=" not in attrs for attrs, _ in scripts)  # nothing loaded from anywhere
        if page == "index.html":  # the interactive comparison chart: exactly the four vendored files
            assert len(code) == 4
            for body in code:
                digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
                assert f"'sha256-{digest}'" in csp
            vendored = {p.name: p.read_text() for p in STATIC.glob("*.js")}
            assert sorted(code, key=len) == sorted(vendored.values(), key=len)
        else:
            assert not code and "script-src" not in csp
        assert not re.search(r'(src|href)="(https?:)?//', markup(html))  # nothing fetched from elsewhere


def test_vendored_files_match_their_recorded_hashes():
    table = (STATIC / "README.md").read_text()
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(name)}` .*`{digest}`", table), name
    for lic in ("LICENSE.vega", "LICENSE.vega-lite", "LICENSE.vega-embed"):
        assert "Redistribution and use in source and binary forms" in (STATIC / lic).read_text()


def test_text_is_escaped(good_report):
    sec = (good_report / "gemel.html").read_text()
    assert "&lt;script&gt;alert(" in sec and "<script>alert" not in sec  # the summary
    assert "gemel &lt;section&gt; &amp; co" in sec  # the title
    assert "a &lt;i&gt;" in sec  # a table cell
    claims = (good_report / "claims.html").read_text()
    assert "a check &lt;b&gt;by construction&lt;/b&gt; holds" in claims and "<b>by construction" not in claims


def test_every_figure_is_embedded_and_decodes(good_report):
    for method in SECTION_FOLDERS:
        srcs = images_in((good_report / f"{method}.html").read_text())
        assert len(srcs) == 2, method  # the fixture's two figures
        for src in srcs:
            assert src.startswith("data:image/png;base64,")
            Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    overview = images_in((good_report / "index.html").read_text())
    assert len(overview) == 1  # the comparison figure (static twin of the chart)
    img = Image.open(io.BytesIO(base64.b64decode(overview[0].split(",", 1)[1])))
    assert img.size[0] > 600


def badge_of(html: str, element_id: str) -> str:
    row = re.search(rf'<tr id="{re.escape(element_id)}"[^>]*>(.*?)</tr>', html, flags=re.S)
    assert row, element_id
    return re.search(r'class="badge v-[^"]+">([^<]+)<', row.group(1)).group(1)


def test_every_registered_claim_is_on_its_pages_with_its_verdict(good_report):
    from repshare.comparison.registry import registry

    claims = (good_report / "claims.html").read_text()
    data = {c["key"]: c for c in json.loads((good_report.parent / "compare" / "claims.json").read_text())["claims"]}
    for c in registry():
        assert badge_of(claims, anchor(c.key)) == CLAIM_VERDICT[c.key] == data[c.key]["verdict"], c.key
        method = data[c.key]["method"]
        page = (good_report / page_file(method)).read_text()  # and on the page of the section that measured it
        assert badge_of(page, anchor(c.key)) == CLAIM_VERDICT[c.key], (c.key, method)
        assert f'href="claims.html#{anchor(c.key)}"' in page


def test_verdict_badge_per_paper(good_report):
    from repshare.comparison.registry import PAPERS

    html = (good_report / "index.html").read_text()
    table = re.search(r'<table class="verdicts">.*?</table>', html, flags=re.S).group(0)
    rows = re.findall(r"<tr><td[^>]*>(.*?)<br>.*?class=\"badge v-[^\"]+\">([^<]+)<", table, flags=re.S)
    assert {title: verdict for title, verdict in rows} == {p.title: PAPER_VERDICT[p.key] for p in PAPERS}
    claims = (good_report / "claims.html").read_text()
    for p in PAPERS:  # the claims page's heading per paper carries the same badge
        head = re.search(rf'<h2 id="p-{p.key}">.*?class="badge v-[^"]+">([^<]+)<', claims, flags=re.S)
        assert head.group(1) == PAPER_VERDICT[p.key]


def test_sanity_checks_are_shown_apart_never_as_claims(good_report):
    claims = (good_report / "claims.html").read_text()
    for p in ("cka", "gemel", "meedge", "concurrency"):
        assert f'id="sanity-{p}"' in claims
    assert "gemel: the hand-built chain gives eta = 1" in claims and ">failed<" in claims
    assert 'id="c-gemel.fixed_chain"' not in claims  # a sanity check has no claim row


def test_overview_content_and_provenance(good_report):
    html = (good_report / "index.html").read_text()
    for text in ("Representation sharing (CKA)", "Gemel layer merging", "MEEdge placement", "Concurrency score",
                 "COCO mAP@[.5:.95]", "top-1 accuracy", "experiment_name: smoke", "python -m repshare.report.diff",
                 "dvc plots diff", "dvc exp show", "No seed study"):
        assert text in html, text
    for setting in ("<td>g2</td>", "<td>m1</td>", "<td>p1</td>"):  # the shortlist table
        assert setting in html
    assert "Problems in this run" not in html
    # provenance from the run records: commit, versions, machine; no dates or durations anywhere
    assert "<code>abc123</code>" in html and "cpu_count 2" in html
    for page in PAGES:
        text = (good_report / page).read_text()
        assert "2026-11-23" not in text and "Generated 20" not in text
    spec = json.loads(re.search(r'data-chart="chart-comparison">(.*?)</script>', html, flags=re.S).group(1))
    assert len(spec["layer"][-1]["encoding"]["tooltip"]) == 6 and len(spec["data"]["values"]) == 8
    run = json.loads((good_report.parent / "metrics" / "report_run.json").read_text())
    assert run["metrics"] == {"pages": len(PAGES), "problems": 0}


def test_report_is_deterministic(smoke_cfg, tmp_path):
    from repshare.stages import report

    rep = build(smoke_cfg)
    first = {p.name: p.read_bytes() for p in rep.iterdir()}
    rep.rename(tmp_path / "first")
    report.run(smoke_cfg)
    assert {p.name: p.read_bytes() for p in rep.iterdir()} == first


def test_hostile_strings_stay_text_and_keys_never_become_paths(smoke_cfg):
    def mutate(results: Path) -> None:
        doc = json.loads((results / "gemel" / "comparison_rows.json").read_text())
        doc["rows"][0]["setting"] = "</script><script>alert(1)</script>"
        write_json(results / "gemel" / "comparison_rows.json", doc)
        record_checksums(results / "gemel", "gemel")

    rep = build(smoke_cfg, mutate)
    index = (rep / "index.html").read_text()
    assert "<script>alert(1)" not in index and "\\u003c/script\\u003e" in index  # inside the chart's data
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in index  # in the table
    for key in ("../../../../../x", "javascript:alert(document.cookie)//", "index", "claims"):
        with pytest.raises(ValueError, match="cannot name a dashboard page"):
            page_file(key)
    assert sorted(p.name for p in rep.parent.parent.glob("*.html")) == []  # nothing written outside the folder


def break_inputs(results: Path) -> None:
    (results / "kd_recover" / "section.json").write_text('{"method": "meedge"}')  # no title
    record_checksums(results / "kd_recover", "kd_recover")
    doc = json.loads((results / "gemel" / "comparison_rows.json").read_text())
    doc["rows"][0]["labels_used"] = "yes"
    write_json(results / "gemel" / "comparison_rows.json", doc)
    record_checksums(results / "gemel", "gemel")
    (results / "concurrency" / "figures" / "concurrency_1.png").unlink()


def test_bad_method_files_stop_the_report_unless_allowed(smoke_cfg, tmp_path, capsys):
    from omegaconf import OmegaConf

    from repshare.stage import run_stage
    from repshare.stages import compare, report

    with open_dict(smoke_cfg):
        smoke_cfg.compare.allow_problems = True
    rep = build(smoke_cfg, break_inputs)
    index = (rep / "index.html").read_text()
    assert "Problems in this run" in index
    assert "kd_recover/section.json: malformed report section: missing field &#39;title&#39;" in index
    assert "gemel/comparison_rows.json row 0: field &#39;labels_used&#39; must be true or false" in index
    assert "concurrency/figures/concurrency_1.png" in index and "figures[1].path" in index
    # the broken section's page exists, says why; the others are whole
    meedge = (rep / "meedge.html").read_text()
    assert "kd_recover/section.json" in meedge and not images_in(meedge)
    conc = (rep / "concurrency.html").read_text()
    assert len(images_in(conc)) == 1 and "Figure missing" in conc
    assert len(images_in((rep / "gemel.html").read_text())) == 2  # its section is fine, its rows are not
    assert "<td>p1</td>" in index and "<td>g2</td>" not in index
    # not allowed: one line, exit 2, and the previous dashboard stays as it was
    before = {p.name: p.read_bytes() for p in rep.iterdir()}
    with open_dict(smoke_cfg):
        smoke_cfg.compare.allow_problems = False
    params = tmp_path / "params.yaml"
    params.write_text(OmegaConf.to_yaml(smoke_cfg, resolve=True))
    for stage in (report.run, compare.run):
        with pytest.raises(SystemExit) as stop:
            run_stage(stage, ["--params", str(params)])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
        assert stop.value.code == 2 and len(err) == 1 and "compare.allow_problems=true" in err[0], err
    assert {p.name: p.read_bytes() for p in rep.iterdir()} == before


def test_a_missing_comparison_is_one_line(smoke_cfg):
    from repshare.stages import report

    write_fixture_results(Path(smoke_cfg.paths.results_dir))
    with pytest.raises(ValueError, match=r"missing file .*compare/comparison.json: rerun the compare stage"):
        report.run(smoke_cfg)


def test_run_diff_lists_what_changed(good_report, tmp_path, capsys):
    import shutil

    from repshare.report.diff import main

    a = good_report.parent
    b = tmp_path / "b"
    shutil.copytree(a, b)
    claims = json.loads((b / "compare" / "claims.json").read_text())
    flipped = claims["claims"][0]
    flipped["verdict"], flipped["ours"] = "does not", "9.000 [8.000, 10.000] (200 images)"
    write_json(b / "compare" / "claims.json", claims)
    record_checksums(b / "compare", "compare")
    out = tmp_path / "diff.html"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    html = out.read_text()
    assert "1 claim verdict changed" in html and "verdict changed" in html
    first_row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", html.split('id="claims"')[1], flags=re.S).group(1)
    assert flipped["key"] in first_row and "9.000 [8.000, 10.000]" in first_row  # changed claims first
    assert "<script" not in html
    assert main([str(a), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is neither a results folder nor a revision" in err[0]


def test_cell_format():
    assert cell(None) == "–" and cell(True) == "yes" and cell(0.123456) == "0.1235"
    assert cell(float("nan")) == "n/a" and cell(3) == "3" and cell([1, 0.5]) == "1, 0.5"
    assert cell(12345678.0) == "1.235e+07" and cell(-0.0) == "0"


NO_BROWSER = "no Chromium/Chrome on PATH (as root on Debian: bash .ci/ensure-browser, which `make test` runs)"


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason=NO_BROWSER)
@pytest.mark.parametrize("width", [1400, 390])
def test_headless_chromium_renders_every_page(good_report, tmp_path, width):
    """From index.html, following links, at a desktop and a phone width: every page loads with no console
    error or failed load, every figure decodes, every chart is drawn (by the vendored scripts, CSP intact)
    with no overlapping labels and within the page's width, every link and #fragment resolves, nothing is
    fetched over the network, and the verdict table has one row per paper with the fixture's verdict."""
    from repshare.comparison.registry import PAPERS

    checks = crawl(find_browser(), good_report / "index.html", tmp_path, width=width)
    pages = {local_path(c.url).name: c for c in checks}
    assert sorted(pages) == sorted(PAGES)  # every page is reachable through links, each opened once
    for name, c in pages.items():
        assert c.errors == [], (name, c.errors)
        assert c.requests and c.network_requests == [], (name, c.network_requests)
        assert all(local_path(u) is None or good_report in local_path(u).parents for u in c.requests), c.requests
        assert c.broken_images == [], (name, c.broken_images)
        assert c.images == {"index.html": 1, "claims.html": 0}.get(name, 2), name
        assert c.links, name
        for href, resolved in c.links:
            target = local_path(resolved)
            assert target is not None and target.is_file(), (name, href)  # local, and the file exists
            fragment = urldefrag(resolved)[1]
            if fragment:
                assert fragment in pages[target.name].ids, (name, href)
        for chart in c.charts:
            assert chart["drawn"] and chart["texts"] > 10, (name, chart)
            assert chart["overlaps"] == [] and chart["clipped"] == [], (name, chart)
            assert chart["width"] <= chart["page_width"], (name, chart)
        assert len(c.charts) == (1 if name == "index.html" else 0), name
        shot = Image.open(c.screenshot)
        assert shot.size[0] == width and shot.size[1] > 600
        assert len(shot.getcolors(1 << 16) or range(1 << 16)) > 50  # not a blank page

    table = pages["index.html"].table_after("verdicts")
    assert table is not None and table["head"][:2] == ["Paper", "Verdict"], pages["index.html"].tables
    assert len(table["rows"]) == len(PAPERS) == len(PAPER_VERDICT)
    for paper in PAPERS:
        rows = [r for r in table["rows"] if r[0].startswith(paper.title)]
        assert len(rows) == 1, (paper.title, table["rows"])
        assert paper.citation in rows[0][0] and rows[0][1] == PAPER_VERDICT[paper.key], rows[0]


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason=NO_BROWSER)
def test_headless_checks_catch_a_bad_page(tmp_path):
    """The browser checks above can fail: a page with a remote image, a script error, a broken figure,
    a dangling link and a chart with overlapping labels is reported on each count (requests are recorded
    even when they fail)."""
    (tmp_path / "ok.html").write_text("<!DOCTYPE html><title>ok</title><p id='here'>fine</p>")
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>bad</title>"
                   "<img src='http://127.0.0.1:9/remote.png'>"  # nothing listens on port 9: fails fast
                   "<img src='data:image/png;base64,AAAA'>"
                   "<a href='ok.html#here'>fine</a> <a href='missing.html'>dangling</a>"
                   "<div id='c'><svg width='200' height='50'><text x='10' y='20'>label one</text>"
                   "<text x='14' y='22'>label two</text></svg></div>"
                   "<script type='application/json' data-chart='c'>{}</script>"
                   "<script>console.error('boom')</script>")
    (c,) = check_pages(find_browser(), [(bad, tmp_path / "bad.png")])
    assert c.network_requests == ["http://127.0.0.1:9/remote.png"]
    assert any("boom" in e for e in c.errors) and any("load failed" in e for e in c.errors), c.errors
    assert c.images == 2 and len(c.broken_images) == 2
    links = {href: local_path(resolved) for href, resolved in c.links}
    assert links["ok.html#here"] == tmp_path / "ok.html" and not links["missing.html"].exists()
    assert c.charts and c.charts[0]["overlaps"] == ["label one / label two"]


def test_provenance_from_run_records_lock_and_overrides(tmp_path):
    from repshare.report import provenance as prov

    results, data = tmp_path / "results", tmp_path / "data"
    rec = {"seconds": 3.5, "created": "2026-01-01T00:00:01", "git_commit": "c1", "versions": {"numpy": "2.1"},
           "machine": {"cpu_count": 2}}
    write_json(data / "prepare_run.json", {**rec, "stage": "prepare"})
    write_json(results / "metrics" / "classifier_run.json", {**rec, "stage": "train_classifier", "git_commit": "c2",
                                                            "versions": {"numpy": "2.2"}})
    write_json(results / "gemel" / "gemel_run.json", rec)  # no "stage": named after the file
    write_json(results / "wandb" / "x" / "y_run.json", {**rec, "stage": "noise"})
    write_json(results / "metrics" / "report_run.json", {**rec, "stage": "report"})
    (results / "cka").mkdir()
    (results / "cka" / "cka_run.json").write_text("{broken")
    records = prov.run_records(results, data)
    assert [(r["stage"], r["record"]) for r in records] == [
        ("gemel", "results/gemel/gemel_run.json"), ("prepare", "data/prepare_run.json"),
        ("train_classifier", "results/metrics/classifier_run.json")]
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  compare:\n    cmd: x\n    outs:\n    - path: results/compare\n"
                    "      md5: 0123abcd.dir\n      size: 10\n    - path: results/metrics/compare_run.json\n"
                    "      md5: 5555\n")
    got = prov.summary(records, prov.lock_hashes(lock), prov.overrides({"a": {"b": 1, "c": 2}, "d": 3},
                                                                        {"a": {"b": 1, "c": 5}}), "smoke")
    assert got["commits"] == [{"Commit": "c1", "Stages": "gemel, prepare"}, {"Commit": "c2", "Stages": "train_classifier"}]
    assert got["versions"] == [{"Package": "numpy", "Version": "2.1 / 2.2"}]
    assert got["machines"] == [{"Machine": "cpu_count 2", "Stages": "gemel, prepare, train_classifier"}]
    assert got["lock"] == [{"Stage": "compare", "Output": "results/compare", "md5": "0123abcd.dir"}]
    assert got["overrides"] == ["a.c=2", "d=3"]
    assert "2026-01-01" not in json.dumps(got) and prov.lock_hashes(tmp_path / "absent.lock") == []
