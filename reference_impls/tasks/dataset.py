"""A user's dataset as a Task (`--data PATH`), in TRL's column conventions, so data that works with
TRL works here unchanged:

    prompt, completion                  demonstrations (SFT); the expert solution for hybrids
    prompt, chosen, rejected            preference pairs (DPO family)
    prompt, completion, label           unpaired labelled completions (KTO)
    prompt + answer | solution | ground_truth    a reference answer for the reward (RL);
                                        without one, the reward compares with `completion`
    messages                            conversational: the last assistant turn is the completion
    prompt / completion / chosen / rejected as lists of {"role", "content"} dicts: conversational
Conversational rows are rendered with the tokenizer's chat template (`bind(tokenizer)`, called by
the runner); a tokenizer without one (the tiny preset) gets a plain "role: content" template.

Formats: .jsonl, .json, .csv, .parquet, or a folder written by `datasets.save_to_disk` (its
"train" split; "test" or "validation" becomes the evaluation split). `--eval-data PATH` gives the
evaluation split; otherwise `eval_fraction` (default 0.1, at least one row) is held out, chosen by
a seeded shuffle. Steps of a solution are its lines (or, for one line, its words). Every problem of
a file is reported at once, before any training, as `file:row: column: what was expected`.
"""

from __future__ import annotations

import json
import random
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from reference_impls.tasks.base import MissingSignal, Problem, Task
from reference_impls.tasks.rewards import exact, make_reward

ANSWER_COLUMNS = ("answer", "solution", "ground_truth", "reference")
TEXT_COLUMNS = ("prompt", "completion", "chosen", "rejected")
SIGNAL_COLUMNS = {
    "demonstrations": "prompt + completion (or messages, or chosen)",
    "preference_pairs": "prompt + chosen + rejected",
    "unpaired_labels": "prompt + completion + label (or chosen + rejected)",
    "verifiable_reward": "prompt (+ answer/solution/ground_truth or completion for --reward exact/math)",
    "expert_solutions": "prompt + completion (or messages, or chosen)",
    "solution_steps": "prompt + completion (or messages, or chosen)",
}


class DataError(ValueError):
    """Bad user data: every problem found, each as `file:row: column: message`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("bad data:\n  " + "\n  ".join(problems[:20]) + more)


def read_rows(path: Path) -> tuple[list[dict[str, Any]], str]:
    """Rows of a file or saved dataset; returns (rows, unit) where unit names a row ("line")."""
    if not path.exists():
        raise DataError([f"{path}: no such file or folder"])
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows, problems = [], []
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            line = path.read_bytes()[:e.start].count(b"\n") + 1
            raise DataError([f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#x} at offset {e.start}); "
                             "save the file as UTF-8"]) from None
        except OSError as e:
            raise DataError([f"{path}: cannot read it ({e.strerror or e})"]) from None
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path.name}:{i}: not valid JSON ({e.msg}, column {e.colno})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path.name}:{i}: expected a JSON object per line, found {type(row).__name__}")
                continue
            rows.append({**row, "_where": f"{path.name}:{i}"})
        if problems:
            raise DataError(problems)
        return rows, "line"
    try:
        import datasets
    except ImportError:
        raise DataError([f"{path}: reading {suffix or 'a saved dataset'} needs `datasets` "
                         "(pip install 'sftrl[tasks]'); JSONL needs nothing"]) from None
    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        else:
            kind = {".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(suffix)
            if kind is None:
                raise DataError([f"{path}: unknown format {suffix!r}; use .jsonl, .json, .csv, "
                                 ".parquet or a saved Hugging Face dataset folder"])
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except DataError:
        raise
    except Exception as e:  # datasets raises many types for unreadable files
        raise DataError([f"{path}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0]})"]) from None
    return [{**r, "_where": f"{path.name}:row {i}"} for i, r in enumerate(ds, 1)], "row"


def _render(messages: list[dict], tok, generation_prompt: bool) -> str:
    if tok is not None and getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if generation_prompt else "")


def _check_messages(v, where: str, col: str, problems: list[str]) -> bool:
    if not isinstance(v, list) or not v or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in v):
        problems.append(f"{where}: {col}: expected a string or a non-empty list of "
                        f"{{'role': str, 'content': str}} messages, found {str(v)[:60]!r}")
        return False
    return True


class DatasetTask(Task):
    def __init__(self, rows: list[dict], eval_rows: list[dict] | None, source: str,
                 eval_fraction: float = 0.1, seed: int = 0, answer_column: str | None = None):
        self.name, self.source, self.answer_column = f"data:{Path(source).name}", source, answer_column
        self.rows, self.eval_rows_given = rows, eval_rows
        self.eval_fraction, self.seed, self.tok = eval_fraction, seed, None
        self._validate(rows + (eval_rows or []))
        self.reward = exact

    @classmethod
    def load(cls, path: str | Path, eval_data: str | Path | None = None, reward: str = "exact",
             **options) -> DatasetTask:
        known = {"eval_fraction", "seed", "answer_column"}
        if bad := sorted(set(options) - known):
            raise ValueError(f"--data tasks have no option(s) {bad}; options: {', '.join(sorted(known))}")
        rows, _ = read_rows(Path(path))
        if not rows:
            raise DataError([f"{path}: no rows"])
        ev = read_rows(Path(eval_data))[0] if eval_data else None
        task = cls(rows, ev, str(path), **options)
        if reward.startswith("model:") and task._has_reference:
            task.eval_reward = exact  # evaluate against the reference answers, not the learned reward
        task.reward = make_reward(reward, task)
        if reward in ("exact", "math") and not task._has_reference:
            task.provides = task.provides - {"verifiable_reward"}
        return task

    # --- validation: column types, then which signals the columns give ------------------------
    def _validate(self, rows: list[dict]) -> None:
        problems: list[str] = []
        for r in rows:
            w = r["_where"]
            if "messages" in r:
                if _check_messages(r["messages"], w, "messages", problems) and r["messages"][-1]["role"] != "assistant":
                    problems.append(f"{w}: messages: the last message must be the assistant's (the completion)")
            elif "prompt" not in r:
                problems.append(f"{w}: prompt: missing (columns here: {', '.join(k for k in r if k != '_where')})")
            for col in (*TEXT_COLUMNS, *ANSWER_COLUMNS):
                v = r.get(col)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    r[col] = v = str(v)  # CSV/Parquet read "42" as a number
                if v is not None and not isinstance(v, str) and col in TEXT_COLUMNS:
                    _check_messages(v, w, col, problems)
            if "label" in r and not isinstance(r["label"], bool) and r["label"] not in (0, 1):
                problems.append(f"{w}: label: expected true/false, found {r['label']!r}")
        if problems:
            raise DataError(problems)
        cols = set().union(*(r.keys() for r in rows))
        for col in ("completion", "chosen", "rejected", "prompt"):  # a column some rows leave empty
            if col in cols and (empty := [r["_where"] for r in rows if r.get(col) is None and "messages" not in r]):
                more = f" (and {len(empty) - 5} more)" if len(empty) > 5 else ""
                raise DataError([f"{w}: {col}: null or missing, while other rows have it; fill it or drop "
                                 "those rows" for w in empty[:5]] + ([more.strip()] if more else []))
        demo = "messages" in cols or "completion" in cols or "chosen" in cols
        answer = self.answer_column or next((c for c in ANSWER_COLUMNS if c in cols), None)
        if self.answer_column and self.answer_column not in cols:
            raise DataError([f"{self.source}: answer_column {self.answer_column!r} not among the columns "
                             f"{sorted(cols - {'_where'})}"])
        self.answer_column = answer
        self._has_reference = bool(answer or demo)
        self.provides = frozenset(
            {"verifiable_reward"}
            | ({"demonstrations", "expert_solutions", "solution_steps"} if demo else set())
            | ({"preference_pairs", "unpaired_labels"} if {"chosen", "rejected"} <= cols else set())
            | ({"unpaired_labels"} if {"completion", "label"} <= cols else set()))
        self._columns = sorted(cols - {"_where"})

    def require(self, needs, method: str) -> None:
        missing = sorted(set(needs) - set(self.provides))
        if missing:
            raise MissingSignal(
                f"method {method!r} needs {', '.join(missing)}: columns "
                f"{'; '.join(SIGNAL_COLUMNS.get(m, f'{m}: no dataset gives it (use --task)') for m in missing)}. "
                f"{self.source} has columns: "
                f"{', '.join(self._columns)}")

    # --- rows -> problems ---------------------------------------------------------------------
    def bind(self, tok) -> None:
        """Render conversational rows with `tok`'s chat template (the runner calls this)."""
        self.tok = tok
        self.__dict__.pop("_problems", None)
        self.__dict__.pop("eval_sets", None)

    def _problem(self, r: dict) -> Problem:
        def text(v, gen_prompt=False):
            return v if isinstance(v, str) or v is None else _render(v, self.tok, gen_prompt)

        if "messages" in r:
            msgs = r["messages"]
            prompt, solution = _render(msgs[:-1], self.tok, True), msgs[-1]["content"]
        else:
            prompt = text(r["prompt"], True)
            solution = text(r.get("completion")) if r.get("completion") is not None else text(r.get("chosen"))
            if isinstance(r.get("completion"), list):
                solution = "".join(m["content"] for m in r["completion"])
        answer = r.get(self.answer_column) if self.answer_column else None
        answer = str(answer) if answer is not None else solution
        rejected = r.get("rejected")
        rejected = "".join(m["content"] for m in rejected) if isinstance(rejected, list) else rejected
        label = bool(r["label"]) if "label" in r and r["label"] is not None else None
        steps = None
        if solution:
            lines = solution.splitlines(keepends=True)
            steps = tuple(lines) if len(lines) > 1 else tuple(re.findall(r"\S+\s*", solution)) or (solution,)
        return Problem(prompt=prompt, solution=solution, answer=answer, steps=steps,
                       rejected=rejected, label=label, meta=r)

    @cached_property
    def _problems(self) -> tuple[list[Problem], list[Problem]]:
        probs = [self._problem(r) for r in self.rows]
        if self.eval_rows_given is not None:
            return probs, [self._problem(r) for r in self.eval_rows_given]
        order = list(range(len(probs)))
        random.Random(self.seed).shuffle(order)
        n_eval = max(1, round(self.eval_fraction * len(probs))) if len(probs) > 1 else 0
        held = set(order[:n_eval])
        train = [p for i, p in enumerate(probs) if i not in held]
        return train or probs, [probs[i] for i in sorted(held)]

    @cached_property
    def eval_sets(self) -> dict[str, list[Problem]]:
        return {"in_distribution": self._problems[1]}

    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        train = self._problems[0]
        return [train[rng.randrange(len(train))] for _ in range(n)]

    def checked_problems(self) -> list[Problem]:
        return self._problems[0] + self._problems[1]

    def unpaired(self, n: int, rng: random.Random) -> list[tuple[str, str, bool]]:
        if any(p.label is not None for p in self._problems[0]):
            return super().unpaired(n, rng)
        out = []  # from pairs: chosen desirable, rejected undesirable (as TRL's unpairing does)
        for p in self.problems(n, rng):
            good = rng.random() < 0.5
            out.append((p.prompt, p.solution if good else p.rejected, good))
        return out

    def wrong_completion(self, problem: Problem, rng: random.Random) -> str:
        if problem.rejected is not None:
            return problem.rejected
        other = self._problems[0][rng.randrange(len(self._problems[0]))]  # another row's solution
        return other.solution if other.solution != problem.solution else (problem.solution or "") + " x"

    @property
    def max_new_tokens(self) -> int:  # characters: a safe upper bound in tokens
        sols = [len(p.solution or p.answer or "") for p in self._problems[0][:2000]]
        return min(512, max(sols, default=32) + 8)

    def alphabet(self) -> set[str]:
        chars: set[str] = set()
        for p in self._problems[0] + self._problems[1]:
            for t in (p.prompt, p.solution, p.answer, p.rejected):
                chars.update(t or "")
        return chars
