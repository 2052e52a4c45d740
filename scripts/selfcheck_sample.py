"""Draw the catalogue self-check samples (issue 22, item 6): studies edited in a pass and studies not.

    python scripts/selfcheck_sample.py 302a00d 65063be --seed 22 --n 30

A study counts as edited when it was added between the two revisions or any field of its entry
changed. Both lists are drawn with one random.Random(seed): first the edited sample, then the
unedited one, each from the sorted ids, so the same revisions and seed give the same samples.
"""

from __future__ import annotations

import argparse
import random
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def studies(rev: str) -> dict[str, dict]:
    """Every study entry in data/studies/*.yaml at a git revision, by id."""
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", rev, "data/studies/"],
                           capture_output=True, text=True, check=True).stdout.split()
    out: dict[str, dict] = {}
    for name in names:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{name}"],
                              capture_output=True, text=True, check=True).stdout
        for s in yaml.safe_load(text)["studies"]:
            out[s["id"]] = s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", help="revision before the pass")
    ap.add_argument("after", help="revision after the pass")
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--n", type=int, default=30, help="studies per sample")
    args = ap.parse_args()
    old, new = studies(args.before), studies(args.after)
    edited = sorted(i for i in new if old.get(i) != new[i])
    unedited = sorted(i for i in new if old.get(i) == new[i])
    rng = random.Random(args.seed)
    print(f"{len(new)} studies at {args.after}: {len(edited)} edited or added, {len(unedited)} not edited")
    print("edited:", " ".join(rng.sample(edited, args.n)))
    print("not edited:", " ".join(rng.sample(unedited, args.n)))


if __name__ == "__main__":
    main()
