"""Set a method's `impl` in data/methods.yaml (a locked in-place edit of that one entry).

    python scripts/set_impl.py dft reference_impls.methods.dft
"""

from __future__ import annotations

import fcntl
import re
import sys
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "data" / "methods.yaml"


def set_impl(method_id: str, module: str) -> None:
    with open(PATH, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        text = f.read()
        m = re.search(rf'^  - id: "{re.escape(method_id)}"\n(.*?)(?=^  - id: |\Z)', text, re.M | re.S)
        if not m:
            sys.exit(f"no method {method_id!r} in {PATH.name}")
        entry = m.group(0)
        if re.search(r"^    impl: ", entry, re.M):
            new = re.sub(r'^    impl: .*$', f'    impl: "{module}"', entry, flags=re.M)
        else:
            new = re.sub(r"^(    sources: )", f'    impl: "{module}"\n\\1', entry, count=1, flags=re.M)
        text = text[: m.start()] + new + text[m.end():]
        f.seek(0)
        f.write(text)
        f.truncate()


if __name__ == "__main__":
    set_impl(sys.argv[1], sys.argv[2])
