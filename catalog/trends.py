"""Trend analyses: plain functions from catalogue tables to tables. Plots live in `catalog.plots`.

Counting units (stated here once, and in every report):
- paradigm shares: one count per study, by its derived paradigm (SFT-only / RL-only / hybrid),
  by the year of its arXiv id (first version).
- data-source shares: one count per distinct (study, Figure-2 source) pair: a study that uses
  benchmark data and GPT-4 data counts once under each. Shares are of all such mentions in a year,
  so they sum to 100% like the survey's.
- algorithm adoption: studies per year whose pipeline uses the method in any stage.
Confidence intervals are Wilson score intervals (95%) on a binomial share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from taxonomy.schema import FIGURE2_SOURCES

YEARS = (2023, 2024, 2025)
PARADIGMS = ("sft", "rl", "hybrid")
PARADIGM_LABELS = {"sft": "SFT-only", "rl": "RL-only", "hybrid": "Hybrid (SFT + RL)"}
SOURCE_LABELS = {
    "benchmark": "Benchmark datasets",
    "open_weight_model": "Open-weight-model generated",
    "proprietary_model": "Proprietary-API-model generated",
    "human_web": "Human / web",
}

# The survey's Figure 2 (arXiv 2603.13985), in percent, as quoted in this project's issue tracker.
SURVEY_PARADIGM: dict[int, dict[str, float]] = {
    2023: {"hybrid": 20.0, "sft": 73.3, "rl": 6.7},
    2024: {"hybrid": 73.8, "sft": 19.1, "rl": 7.1},
    2025: {"hybrid": 70.6, "sft": 17.6, "rl": 11.8},
}
SURVEY_SOURCES: dict[int, dict[str, float]] = {
    2023: {"benchmark": 48.9, "open_weight_model": 12.2, "proprietary_model": 32.2, "human_web": 6.7},
    2024: {"benchmark": 54.7, "open_weight_model": 17.5, "proprietary_model": 19.9, "human_web": 7.9},
    2025: {"benchmark": 61.1, "open_weight_model": 25.0, "proprietary_model": 11.1, "human_web": 2.8},
}
# The survey's Appendix B literature census (papers per domain and year; 2025 projected from H1).
SURVEY_CENSUS: dict[str, dict[int, int]] = {
    "general": {2023: 292, 2024: 652, 2025: 983},
    "math": {2023: 492, 2024: 1098, 2025: 2399},
    "agentic": {2023: 100, 2024: 179, 2025: 261},
    "code": {2023: 115, 2024: 428, 2025: 786},
}
# Appendix B's benchmark names per domain ("general" is the survey's QA domain).
CENSUS_TERMS: dict[str, tuple[str, ...]] = {
    "agentic": ("webshop", "webarena", "mind2web", "miniwob++", "scienceworld", "alfworld",
                "tdw-mat", "c-wah", "alfred", "rlcard"),
    "general": ("hotpotqa", "strategyqa", "triviaqa", "pubmedqa", "musique", "2wikimultihopqa", "qasper"),
    "math": ("gsm8k", "asdiv", "svamp", "aime"),
    "code": ("swe-bench", "humaneval", "livecodebench", "bird", "intercodesql"),
}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials, as fractions in [0, 1]."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _shares(counts: pd.DataFrame, group: list[str], cat: str, cats: Iterable[str],
            survey: Mapping[int, Mapping[str, float]] | None) -> pd.DataFrame:
    """counts has columns group + [cat, 'count']; complete the grid, add n, share %, CI, survey %."""
    rows = []
    for key, g in counts.groupby(group, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        n = int(g["count"].sum())
        have = dict(zip(g[cat], g["count"], strict=True))
        for c in cats:
            k = int(have.get(c, 0))
            lo, hi = wilson(k, n)
            year = dict(zip(group, key, strict=True)).get("year")
            rows.append({**dict(zip(group, key, strict=True)), cat: c, "count": k, "n": n,
                         "share": 100 * k / n if n else float("nan"), "ci_low": 100 * lo, "ci_high": 100 * hi,
                         "survey": (survey or {}).get(year, {}).get(c, float("nan"))})
    return pd.DataFrame(rows, columns=group + [cat, "count", "n", "share", "ci_low", "ci_high", "survey"])


def paradigm_shares(studies: pd.DataFrame, by_domain: bool = False, years: Iterable[int] = YEARS) -> pd.DataFrame:
    """Share of SFT-only / RL-only / hybrid studies per year (and per primary domain)."""
    df = studies[studies["year"].isin(list(years))]
    group = ["year", "domain"] if by_domain else ["year"]
    counts = df.groupby(group + ["paradigm"]).size().rename("count").reset_index()
    return _shares(counts, group, "paradigm", PARADIGMS, SURVEY_PARADIGM)


TUNED_PATTERN = r"instruct|chat|-it\b|\bit\b|sft|distill|alpaca|vicuna|ultralm|zephyr|tulu|wizard|metamath"


def starts_from_tuned(base_models: Iterable[str]) -> bool:
    """Whether a base model name says it was already instruction-/chat-tuned (e.g. 'Qwen2.5-7B-Instruct')."""
    return any(re.search(TUNED_PATTERN, m.lower()) for m in base_models)


def with_inherited_sft(studies: pd.DataFrame) -> pd.DataFrame:
    """Sensitivity view: an RL-only study that starts from an instruction-tuned model (by its base
    model's name) counts as hybrid, since SFT happened upstream, just not in the study itself."""
    out = studies.copy()
    inherit = (out["paradigm"] == "rl") & out["base_models"].map(starts_from_tuned)
    out.loc[inherit, "paradigm"] = "hybrid"
    return out


def source_shares(studies: pd.DataFrame, years: Iterable[int] = YEARS) -> pd.DataFrame:
    """Figure-2 data-source shares per year; unit: distinct (study, source) mentions."""
    df = studies[studies["year"].isin(list(years))][["id", "year", "data_sources"]].explode("data_sources")
    df = df[df["data_sources"].isin([str(s) for s in FIGURE2_SOURCES])].drop_duplicates(["id", "data_sources"])
    counts = df.groupby(["year", "data_sources"]).size().rename("count").reset_index()
    counts = counts.rename(columns={"data_sources": "source"})
    return _shares(counts, ["year"], "source", [str(s) for s in FIGURE2_SOURCES], SURVEY_SOURCES)


def algorithm_adoption(studies: pd.DataFrame, paradigms: Iterable[str] = ("rl", "hybrid"),
                       method_paradigm: Mapping[str, str] | None = None, top: int | None = None) -> pd.DataFrame:
    """Studies per year using each method. With `method_paradigm` (id -> paradigm), keep only
    methods of the given paradigms (default: RL/preference and hybrid algorithms)."""
    df = studies[["id", "year", "methods"]].explode("methods").drop_duplicates(["id", "methods"])
    if method_paradigm is not None:
        keep = set(paradigms)
        df = df[df["methods"].map(lambda m: method_paradigm.get(m) in keep)]
    out = df.groupby(["year", "methods"]).size().rename("studies").reset_index().rename(columns={"methods": "method"})
    if top is not None:
        best = out.groupby("method")["studies"].sum().sort_values(ascending=False).head(top).index
        out = out[out["method"].isin(best)]
    return out.sort_values(["year", "studies", "method"], ascending=[True, False, True]).reset_index(drop=True)


def domain_paradigm(studies: pd.DataFrame) -> pd.DataFrame:
    """Counts of studies by primary domain (rows) and paradigm (columns)."""
    t = pd.crosstab(studies["domain"], studies["paradigm"])
    return t.reindex(columns=list(PARADIGMS), fill_value=0)


FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("Llama", r"llama|vicuna|alpaca|tulu|code ?llama"),
    ("Qwen", r"qwen|qwq"),
    ("Mistral", r"mistral|mixtral|zephyr"),
    ("DeepSeek", r"deepseek"),
    ("Gemma", r"gemma"),
    ("Phi", r"\bphi"),
    ("StarCoder", r"starcoder|santacoder"),
    ("InternLM", r"internlm"),
    ("OLMo", r"olmo"),
    ("GLM", r"glm|codegeex"),
    ("PaLM / Gemini (proprietary)", r"palm|gemini"),
    ("GPT (proprietary)", r"\bgpt-?[34]|gpt-3\.5|chatgpt|\bo1\b"),
)


def model_family(name: str) -> str:
    low = name.lower()
    for fam, pat in FAMILY_PATTERNS:
        if re.search(pat, low):
            return fam
    return "Other"


def base_model_families(studies: pd.DataFrame) -> pd.DataFrame:
    """Studies per year that fine-tune a model of each family (a study counts once per family)."""
    df = studies[["id", "year", "base_models"]].explode("base_models").dropna()
    df["family"] = df["base_models"].map(model_family)
    df = df.drop_duplicates(["id", "family"])
    return df.groupby(["year", "family"]).size().rename("studies").reset_index()


# ---------------------------------------------------------------------------- literature census


@dataclass(frozen=True)
class Paper:
    id: str
    date: str  # YYYY-MM-DD (or YYYY-MM)
    text: str


def count_mentions(text: str, term: str) -> int:
    """Case-insensitive occurrences of `term` not glued to other letters/digits ('aime' != 'aimed')."""
    return len(re.findall(rf"(?<![a-z0-9]){re.escape(term.lower())}(?![a-z0-9])", text.lower()))


def census(papers: Iterable[Paper], k: int = 5, terms: Mapping[str, Iterable[str]] = CENSUS_TERMS,
           partial_year: int | None = None) -> pd.DataFrame:
    """The survey's Appendix B rule: a paper counts for a domain in its year if it mentions any one of
    the domain's benchmark names at least k times. For `partial_year` only January-June papers are
    counted and `projected` doubles that count (the H1-doubling projection)."""
    rows = []
    for p in papers:
        year, month = int(p.date[:4]), int(p.date[5:7])
        if partial_year is not None and year == partial_year and month > 6:
            continue
        for domain, names in terms.items():
            if any(count_mentions(p.text, t) >= k for t in names):
                rows.append({"domain": domain, "year": year, "paper": p.id})
    df = pd.DataFrame(rows, columns=["domain", "year", "paper"])
    out = df.groupby(["domain", "year"]).size().rename("count").reset_index()
    out["projected"] = [c * 2 if y == partial_year else c for y, c in zip(out["year"], out["count"], strict=True)]
    return out


def read_corpus(path) -> list[Paper]:
    """JSONL with fields id, date, text (one paper per line)."""
    import json
    from pathlib import Path

    papers = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            papers.append(Paper(str(rec["id"]), str(rec["date"]), str(rec["text"])))
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
            raise ValueError(f"{path}:{i}: expected a JSON object with id, date, text ({e})") from None
        if not re.match(r"^\d{4}-\d{2}", papers[-1].date):
            raise ValueError(f"{path}:{i}: date {papers[-1].date!r} is not YYYY-MM[-DD]")
    return papers
