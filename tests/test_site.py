"""The explorer (`sftrl site`), built once per module and driven in headless Chromium like a person.

Browser tests need Debian's `chromium` and Playwright for Python (scripts/setup.sh installs both).
Without them these tests FAIL with a message; set SFTRL_NO_BROWSER=1 to skip them on purpose.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from typer.testing import CliRunner

from catalog import Catalog
from catalog.trends import model_family
from explorer import build_site
from explorer.browser import chromium_path, launch, node_position
from taxonomy.graph import build_graph, descendants, lineage
from taxonomy.registry import default_data_dir
from taxonomy.schema import Pipeline, Result, Run, Stage

MINI = Path(__file__).parent / "fixtures" / "mini"
MB2 = 2 * 1024 * 1024


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the built-in catalogue: the site and the Python API read the same files."""
    return Path(shutil.copytree(default_data_dir(), tmp_path_factory.mktemp("explorer-data") / "data"))


@pytest.fixture(scope="module")
def cat(data: Path) -> Catalog:
    return Catalog.load(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, data: Path):
    out = tmp_path_factory.mktemp("explorer") / "site"
    t = time.perf_counter()
    stats = build_site(out, data_dir=data, runs_dir=out.parent / "no-runs-here")
    print(f"\nsite: {stats.pages} pages in {time.perf_counter() - t:.1f} s (cpu {stats.cpu_seconds:.1f} s); "
          f"heaviest {stats.heaviest()}")
    return out, stats


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("SFTRL_NO_BROWSER") == "1":
        pytest.skip("SFTRL_NO_BROWSER=1: browser tests skipped on purpose")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: run `bash scripts/setup.sh` "
                    "(or set SFTRL_NO_BROWSER=1 to skip the browser tests on purpose)")
    if chromium_path() is None:
        pytest.fail("Chromium is missing: run `bash scripts/setup.sh` (it installs Debian's chromium), "
                    "set SFTRL_CHROMIUM to a Chromium binary, or SFTRL_NO_BROWSER=1 to skip on purpose")
    pw = sync_playwright().start()
    ctx = launch(pw, tmp_path_factory.mktemp("chromium-profile"))
    yield ctx
    ctx.close()
    pw.stop()


@pytest.fixture
def page(browser):
    p = browser.new_page()
    p.errors = []  # console errors, uncaught exceptions and failed loads, each a string
    p.on("console", lambda m: p.errors.append(f"console: {m.text}") if m.type == "error" else None)
    p.on("pageerror", lambda exc: p.errors.append(f"exception: {exc}"))
    # ERR_ABORTED: leaving a page cancels its in-flight (lazy image) loads, not a fault; a missing
    # file fails with ERR_FILE_NOT_FOUND (and the link check finds it too).
    p.on("requestfailed", lambda r: None if r.failure == "net::ERR_ABORTED"
         else p.errors.append(f"failed to load {r.url}: {r.failure}"))
    yield p
    p.close()


def open_page(page, root: Path, rel: str) -> None:
    path, _, frag = rel.partition("#")
    page.goto((root / path).as_uri() + (f"#{frag}" if frag else ""))
    page.wait_for_load_state("load")


# ---------------------------------------------------------------------------- helpers


def parse_bibtex(text: str) -> list[dict[str, str]]:
    """A strict little BibTeX reader: @type{key, name = {balanced} | "..." | digits, ...}."""
    entries, i, n = [], 0, len(text)

    def skip_ws(j: int) -> int:
        while j < n and text[j].isspace():
            j += 1
        return j

    def braced(j: int) -> tuple[str, int]:  # text[j] == "{"
        depth, k = 0, j
        while k < n:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                return text[j + 1:k], k + 1
            k += 1
        raise ValueError(f"unbalanced braces from offset {j}")

    while (i := skip_ws(i)) < n:
        m = re.compile(r"@(\w+)\s*\{\s*([^,\s{}]+)\s*,").match(text, i)
        if not m:
            raise ValueError(f"expected '@type{{key,' at offset {i}: {text[i:i + 40]!r}")
        entry, i = {"ENTRYTYPE": m.group(1).lower(), "ID": m.group(2)}, m.end()
        while True:
            i = skip_ws(i)
            if text.startswith("}", i):
                i += 1
                break
            f = re.compile(r"([A-Za-z][\w-]*)\s*=\s*").match(text, i)
            if not f:
                raise ValueError(f"expected 'field =' at offset {i}: {text[i:i + 40]!r}")
            i = f.end()
            if text.startswith("{", i):
                value, i = braced(i)
            elif (q := re.compile(r'"([^"]*)"|(\d+)').match(text, i)):
                value, i = q.group(1) or q.group(2), q.end()
            else:
                raise ValueError(f"bad value for {f.group(1)} at offset {i}")
            entry[f.group(1).lower()] = value
            i = skip_ws(i)
            if text.startswith(",", i):
                i += 1
        entries.append(entry)
    return entries


def api_ids(cat: Catalog, q: str = "", family: str = "", **filters) -> set[str]:
    """What the studies page should show, from the Python API: `Catalog.query` for the filters; the
    free text searched in what the API searches (title, id, pipeline, arXiv) plus base models
    (`base_model=`), first authors and benchmarks; the base-model family via `trends.model_family`."""
    df = cat.query(**filters)
    ids = set(df["id"])
    if q:
        t = q.lower()
        hit = set(cat.query(text=q, **filters)["id"]) | set(cat.query(base_model=q, **filters)["id"])
        hit |= {r.id for r in df.itertuples() if isinstance(r.first_author, str) and t in r.first_author.lower()}
        res = cat.results()
        hit |= set(res[res["benchmark"].str.lower().str.contains(t, regex=False)]["study"])
        ids &= hit
    if family:
        ids &= {r.id for r in df.itertuples() if family in {model_family(m) for m in r.base_models}}
    return ids


def shown(page) -> tuple[int, set[str]]:
    count = int(page.get_attribute("#count", "data-count"))
    ids = set(page.eval_on_selector_all(
        "#studies tbody tr td:nth-child(2) a", "as => as.map(a => a.getAttribute('href').slice(8, -5))"))
    return count, ids


# ---------------------------------------------------------------------------- the build (no browser)


def test_build_writes_every_page_under_2mb(site, cat):
    out, stats = site
    assert stats.studies == len(cat.studies) and stats.methods == len(cat.registry.methods)
    assert {p.stem for p in (out / "studies").glob("*.html")} == {s.id for s in cat.studies}
    assert {p.stem for p in (out / "methods").glob("*.html")} == set(cat.registry.methods) | {"index"}
    for name in ("index.html", "graph.html", "trends.html", "methods/index.html"):
        assert (out / name).is_file(), name
    heavy = {k: v for k, v in stats.page_bytes.items() if v >= MB2}
    assert not heavy, f"pages of 2 MB or more with their assets: {heavy}"
    assert "cdn" not in (out / "index.html").read_text().lower()


def broken_links(out: Path) -> list[str]:
    """Relative href/src values in the site's pages that name no file of the site."""
    ref = re.compile(r'(?:href|src)="([^"]*)"')
    broken = []
    for page in out.rglob("*.html"):
        for target in ref.findall(page.read_text(encoding="utf-8")):
            url = target.split("#")[0].split("?")[0]
            if not url or re.match(r"^[a-z]+:", url):
                continue
            if not (page.parent / unquote(url)).resolve().is_file():
                broken.append(f"{page.relative_to(out)} -> {target}")
    return broken


def test_static_links_resolve(site):
    """Every relative href/src in every page names a file of the site (external links are not fetched)."""
    broken = broken_links(site[0])
    assert not broken, f"{len(broken)} broken links, e.g. {broken[:5]}"


def test_refuses_a_folder_it_did_not_build(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not built by"):
        build_site(tmp_path, data_dir=MINI)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_cli_builds_a_users_catalogue_with_runs_and_arena(tmp_path):
    from sftrl_cli import app

    runs = tmp_path / "runs"
    run = Run(id="grpo-test-run", created="2026-11-28T10:00:00", task="addition", model="tiny",
              pipeline=Pipeline(stages=[Stage(method="sft"), Stage(method="grpo")]), config={}, seed=1,
              device="cpu", hardware="test", versions={},
              results=[Result(benchmark="addition", metric="accuracy", value=87.5, origin="measured")])
    (runs / run.id).mkdir(parents=True)
    (runs / run.id / "run.json").write_text(run.model_dump_json())
    arena = tmp_path / "arena" / "addition"  # the shape `sftrl arena` writes (reference_impls/arena.py)
    arena.mkdir(parents=True)
    (arena / "arena.json").write_text(json.dumps({
        "spec": {"task": "addition", "seeds": 1, "budget": 64}, "command": "sftrl arena --task addition",
        "status": "finished", "runs": {"sft+grpo": [{"seed": 0}]},
        "table": [{"entry": "sft+grpo", "paradigm": "hybrid", "seeds": 1, "in_distribution": 91.0,
                   "in_distribution_ci": 2.5, "out_of_distribution": float("nan"), "out_of_distribution_ci": float("nan")}],
        "claims": [{"claim": "2. SFT followed by RL beats either alone", "verdict": "not tested", "numbers": "-"}]}))
    (arena / "arena.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # only linked, never decoded here
    (arena / "arena.md").write_text("# arena\n")
    out = tmp_path / "site"
    res = CliRunner().invoke(app, ["site", "--out", str(out), "--data", str(MINI), "--runs", str(runs),
                                   "--arena", str(tmp_path / "arena")])
    assert res.exit_code == 0, res.output
    mini = Catalog.load(MINI)
    assert f"({len(mini.studies)} studies, {len(mini.registry.methods)} methods, 1 runs)" in res.output
    assert len(list((out / "studies").glob("*.html"))) == len(mini.studies)
    grpo = (out / "methods" / "grpo.html").read_text()
    assert "grpo-test-run" in grpo and "87.50%" in grpo
    assert "grpo-test-run" not in (out / "methods" / "dpo.html").read_text()
    # arena results: on the trends page and the pages of the methods they name
    trends = (out / "trends.html").read_text()
    assert all(x in trends for x in ("sft+grpo", "91.0 ± 2.5", "either alone", "arena/addition/arena.png",
                                     "arena/addition/arena.md", "sftrl arena --task addition"))
    assert not broken_links(out)
    assert "sft+grpo" in (out / "methods" / "grpo.html").read_text()
    assert "arena" not in (out / "methods" / "dpo.html").read_text().lower()
    res = CliRunner().invoke(app, ["site", "--out", str(tmp_path / "runs"), "--data", str(MINI)])
    assert res.exit_code == 2 and "not built by" in res.output


# ---------------------------------------------------------------------------- in the browser


def test_search_and_filters_match_the_python_api(site, cat, page):
    out, _ = site
    open_page(page, out, "index.html")
    assert shown(page) == (len(cat.studies), {s.id for s in cat.studies})
    steps = [  # (control, value, the same query for the Python API)
        ("#f-domain", "math", {"domain": "math"}),
        ("#f-year", "2025", {"domain": "math", "year": 2025}),
        ("#f-paradigm", "hybrid", {"domain": "math", "year": 2025, "paradigm": "hybrid"}),
    ]
    for sel, value, query in steps:
        page.select_option(sel, value)
        expect = api_ids(cat, **query)
        assert shown(page) == (len(expect), expect), (sel, value)
    page.click("#f-reset")
    page.wait_for_function(f"document.querySelector('#count').dataset.count === '{len(cat.studies)}'")
    page.select_option("#f-method", "grpo")
    only = api_ids(cat, method="grpo")
    assert shown(page) == (len(only), only)
    page.check("#f-desc")
    family = api_ids(cat, method="grpo", include_descendants=True)
    assert len(family) > len(only), "GRPO's descendants add studies: the checkbox must be tested on a change"
    assert shown(page) == (len(family), family)
    page.select_option("#f-source", "benchmark")
    page.select_option("#f-family", "Qwen")
    expect = api_ids(cat, method="grpo", include_descendants=True, source="benchmark", family="Qwen")
    assert shown(page) == (len(expect), expect)
    hash_ = page.evaluate("location.hash")
    for term in ("math", "gsm8k", "qwen2.5-7b"):  # title words, a benchmark, a base model
        page.fill("#f-q", term)
        expect = api_ids(cat, q=term, method="grpo", include_descendants=True, source="benchmark", family="Qwen")
        assert shown(page) == (len(expect), expect), term
    # the view lives in the address: a fresh page opened on it shows the same rows
    page.fill("#f-q", "")
    fresh = page.context.new_page()
    open_page(fresh, out, "index.html" + hash_)
    assert shown(fresh) == shown(page) and fresh.input_value("#f-family") == "Qwen" and fresh.is_checked("#f-desc")
    fresh.close()
    assert not page.errors


def test_sort_and_export_the_filtered_rows(site, cat, page):
    out, _ = site
    open_page(page, out, "index.html#domain=code")
    expect = api_ids(cat, domain="code")
    page.click("#studies th[data-key=title] button")
    titles = page.eval_on_selector_all("#studies tbody tr td:nth-child(2) a", "as => as.map(a => a.textContent)")
    assert titles == sorted(titles, key=str.lower) and len(titles) == len(expect)
    assert page.get_attribute("#studies th[data-key=title]", "aria-sort") == "ascending"
    with page.expect_download() as dl:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text(encoding="utf-8"))))
    assert {r["id"] for r in rows} == expect and all("code" in r["domains"] for r in rows)
    with page.expect_download() as dl:
        page.click("#export-bib")
    entries = parse_bibtex(Path(dl.value.path()).read_text(encoding="utf-8"))
    assert {e["ID"] for e in entries} == expect
    assert not [e["ID"] for e in entries if "nan" in e.values()], "a missing field printed as 'nan'"
    assert not page.errors


def test_study_page_shows_pipeline_and_bibtex(site, cat, page):
    out, _ = site
    study = max(cat.studies, key=lambda s: (len(s.pipeline.stages), len(s.results), s.id))
    open_page(page, out, f"studies/{study.id}.html")
    stages = page.eval_on_selector_all(".pipeline .stage .stage-method a", "as => as.map(a => a.getAttribute('href'))")
    assert stages == [f"../methods/{m}.html" for m in study.pipeline.method_ids()]
    assert page.locator(".pipeline .stage").count() == len(study.pipeline.stages) >= 2
    (entry,) = parse_bibtex(page.text_content("#bibtex"))
    assert entry["ID"] == study.id and entry["eprint"] == study.arxiv and entry["title"].strip("{}") == study.title
    assert "nan" not in entry.values()
    page.click("button[data-copy]")
    page.wait_for_function("document.querySelector('.copy-status').textContent.length > 0")
    assert page.locator("#h-res + .table-wrap tbody tr").count() == len(study.results)
    assert not page.errors


def test_method_page_renders_its_objective(site, cat, page):
    out, _ = site
    open_page(page, out, "methods/grpo.html")
    page.wait_for_selector(".objective .katex")
    assert page.locator(".objective .katex-error").count() == 0
    visible = page.evaluate("""() => { const c = document.querySelector('.objective').cloneNode(true);
        c.querySelectorAll('.katex-mathml').forEach(n => n.remove()); return c.textContent; }""")
    assert "\\" not in visible and "GRPO" in visible and "clip" in visible
    text = page.text_content("main")
    assert "PPO" in text and "../code/grpo.html" in page.inner_html("main")
    assert not page.errors


def test_clicking_a_graph_node_highlights_exactly_its_lineage(site, cat, page):
    out, _ = site
    g = build_graph(cat.registry)
    open_page(page, out, "graph.html")
    page.wait_for_function("window.cy && cy.nodes('.m').length > 0")
    for mid in ("grpo", "luffy", "sft", "ppo"):
        anc, desc = set(lineage(g, mid)), set(descendants(g, mid))
        page.mouse.click(*node_position(page, mid))
        lit = set(page.evaluate("cy.nodes('.lit').map(n => n.id())"))
        assert lit == {mid} | anc | desc, mid
        assert set(page.evaluate("cy.nodes('.lineage').map(n => n.id())")) == anc, mid
        assert set(page.evaluate("cy.nodes('.descendant').map(n => n.id())")) == desc, mid
        assert page.evaluate("cy.nodes('.focus').map(n => n.id())") == [mid]
        assert page.locator(f"#panel a[href='methods/{mid}.html']").count() == 1
    page.click("#graph-clear")
    assert page.evaluate("cy.nodes('.lit').length") == 0
    page.fill("#graph-search", cat.registry["dft"].name)
    page.press("#graph-search", "Enter")
    assert page.evaluate("cy.nodes('.focus').map(n => n.id())") == ["dft"]
    legend = page.text_content(".legend")
    assert all(str(r.kind).replace("_", " ") in legend for r in cat.registry.relations)
    assert not page.errors


def browser_pages(out: Path) -> list[Path]:
    """Every page that runs its own code: the top pages and every method page (each renders its own
    objective). Study and reference-code pages are static text from one template each, with no script
    but site.js: every 10th of them is opened (all of their links are checked by test_static_links_resolve)."""
    every = sorted(out.glob("*.html")) + sorted((out / "methods").glob("*.html"))
    return every + sorted((out / "studies").glob("*.html"))[::10] + sorted((out / "code").glob("*.html"))[::10]


def test_every_page_loads_clean_with_no_broken_links(site, page):
    """Each page: no console error or failed load, KaTeX left no raw LaTeX and no equation wider than
    the page (1360 px window), every link (also those drawn by scripts) names a file of the site."""
    out, _ = site
    pages = browser_pages(out)
    broken, problems = [], []
    for p in pages:
        rel = str(p.relative_to(out))
        open_page(page, out, rel)
        if rel.startswith("methods/") and rel != "methods/index.html":
            bad = page.evaluate("""() => { const m = document.querySelector('.objective');
                if (!m.querySelector('.katex')) return 'not rendered';
                if (m.querySelector('.katex-error')) return m.querySelector('.katex-error').title;
                if (m.scrollWidth > m.clientWidth + 1) return 'the equation runs off the page';
                const c = m.cloneNode(true); c.querySelectorAll('.katex-mathml').forEach(n => n.remove());
                return c.textContent.includes('\\\\') ? 'raw LaTeX left' : ''; }""")
            if bad:
                problems.append(f"{rel}: {bad}")
        urls = page.evaluate("""() => Array.from(document.querySelectorAll('a[href], link[href], script[src], img[src]'))
            .map(e => e.href || e.src)""")
        for u in urls:
            parsed = urlparse(u)
            if parsed.scheme == "file" and not Path(unquote(parsed.path)).is_file():
                broken.append(f"{rel} -> {u}")
        if page.errors:
            problems += [f"{rel}: {e}" for e in page.errors]
            page.errors.clear()
    assert len(pages) > 80
    assert not broken, f"{len(broken)} broken links, e.g. {broken[:5]}"
    assert not problems, problems[:10]
