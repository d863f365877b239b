"""Reviewer dashboard: pages exist and link to each other, text is escaped, every figure is embedded,
bad method files are shown (file and field named) beside the others; headless Chromium renders
every page with no missing image and no console error (skipped when no browser is installed)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from omegaconf import open_dict
from PIL import Image

from comparison_fixtures import SECTION_FOLDERS, write_fixture_results
from headless import check_pages, find_browser
from repshare.report.render import cell
from repshare.utils.io import write_json

PAGES = ["index.html"] + [f"{m}.html" for m in SECTION_FOLDERS]


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
    return re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', html)


def test_every_page_exists_and_links_to_every_other(good_report):
    assert sorted(p.name for p in good_report.glob("*.html")) == sorted(PAGES)
    for page in PAGES:
        html = (good_report / page).read_text()
        hrefs = set(re.findall(r'href="([^"]+)"', html))
        assert set(PAGES) <= hrefs, (page, set(PAGES) - hrefs)
        assert all((good_report / h).is_file() for h in hrefs), hrefs  # no dangling local link
        assert not any(h.startswith(("http:", "https:", "//")) for h in hrefs)


def test_static_page_csp_no_script_no_remote(good_report):
    for page in PAGES:
        html = (good_report / page).read_text()
        assert "Content-Security-Policy" in html and "default-src 'none'" in html and "img-src data:" in html
        assert "<script" not in html.lower()
        assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from elsewhere


def test_text_is_escaped(good_report):
    sec = (good_report / "gemel.html").read_text()
    assert "&lt;script&gt;alert(" in sec and "<script>alert" not in sec  # the summary
    assert "gemel &lt;section&gt; &amp; co" in sec  # the title
    assert "claim 0 &lt;b&gt;bold?&lt;/b&gt;" in sec and "<b>bold?" not in sec  # a claim
    assert "a &lt;i&gt;" in sec  # a table cell
    index = (good_report / "index.html").read_text()
    assert "<b>bold?" not in index and "&lt;b&gt;bold?&lt;/b&gt;" in index  # claims on the verdict table


def test_every_figure_is_embedded_and_decodes(good_report):
    for method in SECTION_FOLDERS:
        srcs = images_in((good_report / f"{method}.html").read_text())
        assert len(srcs) == 2, method  # the fixture's two figures
        for src in srcs:
            assert src.startswith("data:image/png;base64,")
            Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    overview = images_in((good_report / "index.html").read_text())
    assert len(overview) == 1  # the comparison figure
    img = Image.open(io.BytesIO(base64.b64decode(overview[0].split(",", 1)[1])))
    assert img.size[0] > 600


def test_overview_content(good_report):
    html = (good_report / "index.html").read_text()
    # readable names, verdict badges per paper, the workload and stage times
    for text in ("Representation sharing (CKA)", "Gemel layer merging", "MEEdge placement", "Concurrency score",
                 "COCO mAP@[.5:.95]", "top-1 accuracy", "How long each stage took", "Package versions",
                 "experiment_name: smoke"):
        assert text in html, text
    assert html.count('class="badge v-partly"') >= 1 and html.count('class="badge v-does-not"') >= 1
    # every fixture setting is a row of the comparison table; nothing reported as a problem
    for setting in ("<td>g2</td>", "<td>m1</td>", "<td>p1</td>"):
        assert setting in html
    assert "Problems in this run" not in html
    run = json.loads((good_report.parent / "metrics" / "report_run.json").read_text())
    assert run["metrics"] == {"pages": len(PAGES), "problems": 0}


def test_bad_method_files_shown_named_and_others_still_rendered(smoke_cfg):
    def mutate(results: Path) -> None:
        (results / "multiexit" / "section.json").write_text('{"method": "meedge"}')  # no title
        doc = json.loads((results / "gemel" / "comparison_rows.json").read_text())
        doc["rows"][0]["labels_used"] = "yes"
        write_json(results / "gemel" / "comparison_rows.json", doc)
        (results / "concurrency" / "figures" / "concurrency_1.png").unlink()

    rep = build(smoke_cfg, mutate)
    index = (rep / "index.html").read_text()
    assert "Problems in this run" in index
    assert "multiexit/section.json: malformed report section: missing field &#39;title&#39;" in index
    assert "gemel/comparison_rows.json row 0: field &#39;labels_used&#39; must be true or false" in index
    assert "concurrency/figures/concurrency_1.png" in index and "figures[1].path" in index
    # the broken section's page exists, says why; the others are whole
    meedge = (rep / "meedge.html").read_text()
    assert "multiexit/section.json" in meedge and not images_in(meedge)
    conc = (rep / "concurrency.html").read_text()
    assert len(images_in(conc)) == 1 and "Figure missing" in conc
    assert len(images_in((rep / "gemel.html").read_text())) == 2  # its section is fine, its rows are not
    assert "<td>p1</td>" in index and "<td>g2</td>" not in index
    with open_dict(smoke_cfg):
        smoke_cfg.report.strict = True
    from repshare.stages import report

    with pytest.raises(ValueError, match="report.strict: .*multiexit/section.json"):
        report.run(smoke_cfg)


def test_cell_format():
    assert cell(None) == "–" and cell(True) == "yes" and cell(0.123456) == "0.1235"
    assert cell(float("nan")) == "n/a" and cell(3) == "3" and cell([1, 0.5]) == "1, 0.5"
    assert cell(12345678.0) == "1.235e+07" and cell(-0.0) == "0"


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason="no Chromium/Chrome on PATH (apt-get install chromium)")
def test_headless_chromium_renders_every_page(good_report, tmp_path):
    checks = check_pages(find_browser(), [(good_report / p, tmp_path / f"{p}.png") for p in PAGES])
    assert len(checks) == len(PAGES)
    for c in checks:
        assert c.errors == [], (c.url, c.errors)
        assert c.broken_images == [], (c.url, c.broken_images)
        assert c.images == (1 if c.url.endswith("index.html") else 2), c.url
        shot = Image.open(c.screenshot)
        assert shot.size[0] == 1280 and shot.size[1] > 600
        assert len(shot.getcolors(1 << 16) or range(1 << 16)) > 50  # not a blank page


def test_stage_times_from_run_records(tmp_path):
    from repshare.stages.report import stage_times

    results, data = tmp_path / "results", tmp_path / "data"
    write_json(data / "prepare_run.json", {"stage": "prepare", "seconds": 3.5, "created": "2026-01-01T00:00:01"})
    write_json(results / "metrics" / "classifier_run.json", {"stage": "train_classifier", "seconds": 40.0,
                                                            "created": "2026-01-01T00:00:02"})
    write_json(results / "gemel" / "gemel_run.json", {"seconds": 7, "created": "2026-01-01T00:00:03"})
    write_json(results / "wandb" / "x" / "y_run.json", {"stage": "noise", "seconds": 1, "created": "0"})
    write_json(results / "metrics" / "report_run.json", {"stage": "report", "seconds": 1, "created": "9"})
    (results / "cka").mkdir()
    (results / "cka" / "cka_run.json").write_text("{broken")
    rows = stage_times(results, data)
    assert [(r["Stage"], r["Seconds"], r["Record"]) for r in rows] == [
        ("Prepare data", 3.5, "data/prepare_run.json"),
        ("Train classifier", 40.0, "results/metrics/classifier_run.json"),
        ("Gemel", 7, "results/gemel/gemel_run.json"),  # no "stage" key: named after the file
    ]
