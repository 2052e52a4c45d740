"""`sftrl findings list` and `sftrl findings run NAME [--quick] --out DIR` (reference_impls/findings.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

findings_app = typer.Typer(help="Published findings about SFT and RL, re-tested as declared experiments.",
                           no_args_is_help=True)


@findings_app.command("list")
def findings_list() -> None:
    """The declared findings: name, paper, claim, statistic, whether it can run."""
    from reference_impls.findings import FINDINGS

    for f in FINDINGS.values():
        state = f"not runnable yet: {f.not_runnable}" if f.not_runnable else \
            f"{len(f.arms)} arm(s): {'; '.join(a.label + ' = ' + ', '.join(a.entries) for a in f.arms)}; " \
            f"{f.seeds} seeds, budget {f.budget:,}"
        print(f"{f.name}  (arXiv {f.arxiv})\n  claim: {f.claim}\n  task: {f.task} {f.task_options}; {state}\n"
              f"  decides: {f.statistic}\n")


@findings_app.command("run")
def findings_run(
    name: Annotated[str, typer.Argument(help="A finding (sftrl findings list)")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder: finding.json, finding.md, finding.png and the arenas")],
    quick: Annotated[bool, typer.Option("--quick", help="Fewer seeds, a smaller budget and k (a smoke run)")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's)")] = None,
    arenas: Annotated[Path | None, typer.Option("--arenas", help="Where the arms' arenas live (default: OUT); "
                                                "findings with the same arm can share it (finished runs are reused)")] = None,
) -> None:
    """Run a finding's declared experiment and write its verdict.

    Example: sftrl findings run limit-of-rlvr --quick --out /tmp/f
    """
    from reference_impls.findings import FINDINGS, run_finding

    if name not in FINDINGS:
        print(f"error: no finding {name!r}; known: {', '.join(FINDINGS)}", file=sys.stderr)
        raise typer.Exit(2)
    if FINDINGS[name].not_runnable:
        print(f"error: finding {name!r} cannot run yet: {FINDINGS[name].not_runnable}", file=sys.stderr)
        raise typer.Exit(2)
    if threads:
        import torch

        torch.set_num_threads(max(1, threads))
    res = run_finding(name, out_dir, quick=quick, log=lambda m: print(m, file=sys.stderr, flush=True), arenas=arenas)
    print(f"{name}: {res['verdict']}\n  {res['summary']}\nreport: {out_dir / 'finding.md'}   figure: "
          f"{out_dir / 'finding.png'}")


@findings_app.command("table")
def findings_table(
    root: Annotated[Path, typer.Argument(help="A folder of finding folders (e.g. docs/findings)")] = Path("docs/findings"),
) -> None:
    """Print the Markdown table finding -> paper -> ours -> verdict of ROOT/*/finding.json."""
    from reference_impls.findings import table

    print(table(root), end="")
