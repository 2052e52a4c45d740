"""Catalogue speed at 1x, 10x and 40x today's size: load + validate, query; new read path vs the old one.

    .venv/bin/python benchmarks/bench_catalog.py            # 1x, 10x, 40x; old read path at 1x and 10x
    .venv/bin/python benchmarks/bench_catalog.py --old-all  # also the old read path at 40x (minutes)
    .venv/bin/python benchmarks/bench_catalog.py --cli      # plus cold `sftrl` commands on today's data
    .venv/bin/python benchmarks/bench_catalog.py --cli-only --repeat 5 --before OLD/
        # only the cold commands, today's code against a copy of an earlier one (OLD/ holds its
        # sftrl_cli.py and taxonomy/, e.g. from `git show`), runs interleaved, in one run

Synthetic catalogues copy today's `data/` (registry as is; every study k times, with a fresh id,
title and arXiv number of the same month), one file per (copy, original file), in a temp folder.
"Old read path" is the reader this project used before issue 16 (PyYAML's pure-Python `safe_load`
and `compose` of each file, copied below) plugged into today's `check_catalog`; "old query" rebuilds
the study frame on every call, as `Catalog.query` did. Timings are medians of `--repeat` runs,
CPU seconds of the process by default (the machine may be shared; `--wall` for wall clock),
in-process (imports excluded); no test asserts any of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog import catalog as catalog_mod  # noqa: E402
from catalog.catalog import Catalog, check_catalog  # noqa: E402
from taxonomy import loading, registry  # noqa: E402

# ---------------------------------------------------------------------------- synthetic catalogues


def make_catalogue(src: Path, dst: Path, copies: int) -> int:
    """Write `copies` x today's studies under dst/studies; returns the number of studies."""
    dst.mkdir(parents=True)
    for name in ("methods.yaml", "relations.yaml"):
        shutil.copy(src / name, dst / name)
    (dst / "studies").mkdir()
    files = {p.stem: yaml.load(p.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)["studies"]
             for p in sorted((src / "studies").glob("*.yaml"))}
    counter, n = 0, 0
    for k in range(copies):
        for stem, studies in files.items():
            out = []
            for s in studies:
                s = dict(s)
                counter += 1
                yymm = s["arxiv"][:4]
                s["arxiv"] = f"{yymm}.{counter % 100000:05d}" if yymm >= "1501" else f"{yymm}.{counter % 10000:04d}"
                if k:
                    s["id"] = f"{s['id']}-copy{k}"
                    s["title"] = f"{s['title']} (copy {k})"
                out.append(s)
            n += len(out)
            (dst / "studies" / f"c{k:02d}-{stem}.yaml").write_text(
                yaml.dump({"studies": out}, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True),
                encoding="utf-8")
    return n


# ---------------------------------------------------------------------------- the old read path


def old_read_entries(path: Path, key: str, model: type, root: Path | None = None):
    """`taxonomy/loading.py:read_entries` before issue 16 (parses each file twice, pure Python)."""
    from pydantic import ValidationError

    name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
    Problem = loading.Problem
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return [], [Problem(name, mark.line + 1 if mark else None, None, None, f"YAML syntax error: {e}")]
    if data is None:
        return [], []
    items = data[key] or []
    nodes = loading._node_at(tree, (key,))
    good, problems = [], []
    for i, item in enumerate(items):
        node = loading._node_at(nodes, (i,))
        line = node.start_mark.line + 1 if node is not None else None
        try:
            good.append((model.model_validate(item), line))
        except ValidationError as e:
            for err in e.errors():
                problems.append(Problem(name, line, str(item.get("id")), ".".join(map(str, err["loc"])),
                                        loading._describe(err)))
    return good, problems


class old_reader:
    """Context manager: `check_catalog` reads with the old path while inside."""

    def __enter__(self) -> None:
        self.saved = catalog_mod.read_entries, registry.read_entries
        catalog_mod.read_entries = registry.read_entries = old_read_entries

    def __exit__(self, *exc: Any) -> None:
        catalog_mod.read_entries, registry.read_entries = self.saved


# ---------------------------------------------------------------------------- measuring


CLOCK = time.process_time  # CPU seconds of this process: the machine is shared; --wall for wall clock


def timed(fn, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        out = None  # the previous result is freed first
        t = CLOCK()
        out = fn()
        times.append(CLOCK() - t)
    return statistics.median(times), out


QUERY = {"domain": "math", "paradigm": "hybrid", "method": "grpo", "include_descendants": True}


def bench_scale(folder: Path, repeat: int, old: bool) -> dict[str, Any]:
    os.environ[loading.CACHE_ENV] = "off"
    t_load, (reg, studies, problems) = timed(lambda: check_catalog(folder), repeat)
    assert not problems, problems[:3]
    row: dict[str, Any] = {"studies": len(studies), "load": t_load}
    with tempfile.TemporaryDirectory() as cache:
        os.environ[loading.CACHE_ENV] = cache
        check_catalog(folder)  # fills the cache
        row["cached"], (_, cached, _) = timed(lambda: check_catalog(folder), repeat)
        assert [s.model_dump() for s in cached] == [s.model_dump() for s in studies], "cache disagrees"
    os.environ[loading.CACHE_ENV] = "off"
    cat = Catalog(reg, studies)
    row["first_query"], _ = timed(lambda: Catalog(reg, studies).query(**QUERY), 1)  # builds the frame
    row["query"], hits = timed(lambda: cat.query(**QUERY), max(repeat, 5))
    row["select"], _ = timed(lambda: cat.select(**QUERY), max(repeat, 5))
    row["hits"] = len(hits)
    if old:
        with old_reader():
            row["old_load"], (_, old_studies, _) = timed(lambda: check_catalog(folder), 1 if len(studies) > 1000 else repeat)
        assert [s.model_dump() for s in old_studies] == [s.model_dump() for s in studies], "old and new disagree"
        row["old_query"], _ = timed(lambda: Catalog(reg, studies).query(**QUERY), repeat)  # frame rebuilt each call
    return row


CLI_COMMANDS = (["--help"], ["validate"], ["studies", "--domain", "math"], ["methods", "list"],
                ["graph", "lineage", "luffy"])


def _cli(code: Path) -> list[str]:
    """A cold `sftrl` of the code in `code` (the project, or a copy of an earlier version)."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(code)!r}); sys.argv[0] = 'sftrl'; "
            "from sftrl_cli import main; main()"]


def bench_cli(repeat: int, trends: bool = True, before: Path | None = None) -> list[tuple[str, list[float]]]:
    """Cold `sftrl` commands on today's catalogue: median wall and CPU seconds, for today's code
    and, with `before`, for the code in that folder (each repetition runs both, one after the other,
    so both see the same load). Each command runs once untimed first, to warm the catalogue cache and
    to write the bytecode cache (`__pycache__`, even where PYTHONDONTWRITEBYTECODE is set: a module
    edited since its .pyc was written is otherwise compiled again on every call: ~25 ms for the
    CLI's own modules here, which would blur a before/after comparison)."""
    import resource

    versions = [_cli(ROOT)] + ([_cli(before)] if before else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cmds = [*CLI_COMMANDS, *([["trends", "--out", f"{tmp}/trends"]] if trends else [])]
        for cmd in cmds:
            walls: list[list[float]] = [[] for _ in versions]
            cpus: list[list[float]] = [[] for _ in versions]
            warm_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            for exe in versions:
                subprocess.run([*exe, *cmd], check=True, capture_output=True, cwd=ROOT, env=warm_env)
            for _ in range(repeat if cmd[0] != "trends" else 1):
                for i, exe in enumerate(versions):
                    t0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t = time.perf_counter()
                    subprocess.run([*exe, *cmd], check=True, capture_output=True, cwd=ROOT)
                    walls[i].append(time.perf_counter() - t)
                    t1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpus[i].append(t1.ru_utime - t0.ru_utime + t1.ru_stime - t0.ru_stime)
            medians = [statistics.median(x) for w, c in zip(walls, cpus, strict=True) for x in (w, c)]
            rows.append((" ".join(cmd).replace(tmp, "TMP"), medians))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10, 40])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--old-all", action="store_true", help="time the old read path at every scale")
    ap.add_argument("--cli", action="store_true", help="also time cold sftrl commands on today's data")
    ap.add_argument("--cli-only", action="store_true", help="only the cold sftrl commands (not trends)")
    ap.add_argument("--before", type=Path, help="with --cli-only: also time the code in this folder "
                    "(its sftrl_cli.py and taxonomy/), interleaved with today's")
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--wall", action="store_true", help="wall-clock seconds instead of this process's CPU seconds")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    if args.cli_only:
        print(f"cold commands, median of {args.repeat}; load average {os.getloadavg()[0]:.1f} before")
        rows = bench_cli(args.repeat, trends=False, before=args.before)
        head = "| command (today's catalogue, cold process, cache warm) |"
        head += " before: wall | before: CPU | after: wall | after: CPU |" if args.before else " wall | CPU |"
        print(head + "\n|---|" + "---|" * (4 if args.before else 2))
        for cmd, m in rows:
            cells = [f"{x:.2f} s" for x in (m[2:] + m[:2] if args.before else m)]
            print(f"| sftrl {cmd} | " + " | ".join(cells) + " |")
        print(f"load average {os.getloadavg()[0]:.1f} after")
        return
    print(f"clock: {'wall' if args.wall else 'CPU of this process'}; median of {args.repeat}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.scales:
            folder = Path(tmp) / f"x{k}"
            make_catalogue(args.data, folder, k)
            rows.append((k, bench_scale(folder, args.repeat, old=args.old_all or k <= 10)))
            shutil.rmtree(folder)
            print(f"  {k}x done", file=sys.stderr, flush=True)

    def fmt(row: dict[str, Any], key: str, scale: float = 1.0, unit: str = "s") -> str:
        return f"{row[key] * scale:.3f} {unit}" if key in row else "-"

    print("| scale | studies | load+validate: old read path | new, parsed | ratio | new, from cache | ratio "
          "| per study (parsed) | query: old (frame rebuilt) | new (built frame) | ratio | select (no pandas) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, r in rows:
        ratio = f"{r['old_load'] / r['load']:.1f}x" if "old_load" in r else "-"
        cratio = f"{r['old_load'] / r['cached']:.1f}x" if "old_load" in r else "-"
        qratio = f"{r['old_query'] / r['query']:.1f}x" if "old_query" in r else "-"
        print(f"| {k}x | {r['studies']} | {fmt(r, 'old_load')} | {fmt(r, 'load')} | {ratio} | {fmt(r, 'cached')} "
              f"| {cratio} | {r['load'] / r['studies'] * 1e6:.0f} us | {fmt(r, 'old_query', 1e3, 'ms')} "
              f"| {fmt(r, 'query', 1e3, 'ms')} | {qratio} | {fmt(r, 'select', 1e3, 'ms')} |")
    base = rows[0][1]["load"] / rows[0][1]["studies"]
    cbase = rows[0][1]["cached"] / rows[0][1]["studies"]
    print("\ngrowth (time per study relative to the first scale; 1.0 = linear): parsed "
          + ", ".join(f"{k}x {r['load'] / r['studies'] / base:.2f}" for k, r in rows)
          + "; from cache " + ", ".join(f"{k}x {r['cached'] / r['studies'] / cbase:.2f}" for k, r in rows))
    if args.cli:
        print("\n| command (today's catalogue, cold process) | wall | CPU |\n|---|---|---|")
        for cmd, (wall, cpu) in bench_cli(args.repeat):
            print(f"| sftrl {cmd} | {wall:.2f} s | {cpu:.2f} s |")


if __name__ == "__main__":
    main()
