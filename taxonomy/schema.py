"""The one schema shared by the taxonomy, the catalogue and our own runs.

Every model is strict: unknown fields are rejected, closed vocabularies are enums, ids are slugs.
A study's training paradigm (SFT-only / RL-only / hybrid, the survey's three classes) is *derived*
from its pipeline and never typed twice. A `Result` carries its `origin`, so numbers reported by a
paper and numbers measured by a run of ours sit in one table.

No torch here: importing the taxonomy must stay fast.
"""

from __future__ import annotations

import math
import re
from datetime import date as Date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

SLUG = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
ARXIV = r"^[0-9]{4}\.[0-9]{4,5}$"  # new-style arXiv id, YYMM.NNNNN (no version suffix); ASCII digits
Slug = Annotated[str, Field(pattern=SLUG, min_length=1, max_length=80)]


def _arxiv_ok(v: str) -> str:
    """YYMM.NNNN up to 2014, YYMM.NNNNN from 2015 on; the month must be 01-12, and the id must be
    one arXiv could have issued: new-style ids began in April 2007 (0704), none is from the future."""
    if not re.fullmatch(ARXIV, v):  # pydantic checks the pattern first; this guards direct calls
        raise ValueError(f"arXiv id {v!r} is not of the form YYMM.NNNNN")
    yymm, num = v.split(".")
    if not 1 <= int(yymm[2:]) <= 12:
        raise ValueError(f"arXiv id {v!r} has month {yymm[2:]}")
    today = Date.today()
    if not "0704" <= yymm <= f"{today.year % 100:02d}{today.month:02d}":
        raise ValueError(f"arXiv id {v!r} would be from 20{yymm[:2]}-{yymm[2:]}: new-style arXiv ids run "
                         f"from 2007-04 to this month")
    if (int(yymm) >= 1501) != (len(num) == 5):
        raise ValueError(f"arXiv id {v!r}: ids from 2015 on have 5 digits after the dot, earlier ones 4")
    return v


ArxivId = Annotated[str, Field(pattern=ARXIV), AfterValidator(_arxiv_ok)]
Url = Annotated[str, Field(pattern=r"^https?://\S+$")]


class Strict(BaseModel):
    # defer_build: a model's validator is built on its first validation, not at import (a catalogue
    # read from the cache validates nothing; ~25 ms of a CLI call); the validation is the same
    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=False, defer_build=True)


# ---------------------------------------------------------------------------- vocabularies


class Paradigm(StrEnum):
    """The survey's three-way split. Preference optimisation (DPO family) counts as RL."""

    sft = "sft"
    rl = "rl"
    hybrid = "hybrid"


class Family(StrEnum):
    """A finer grouping, following the survey's sections."""

    supervised = "supervised"  # plain SFT / behaviour cloning
    sft_algorithm = "sft_algorithm"  # algorithm-centric SFT (GEM, Token Cleaning, OTR, ...)
    sft_data = "sft_data"  # data-centric SFT (LIMA-style curation, FisherSFT, ...)
    rejection_sampling = "rejection_sampling"  # RFT, STaR, ReST-EM, RAFT: filter own samples, SFT
    offline_preference = "offline_preference"  # DPO, IPO, KTO, ORPO, SimPO
    online_preference = "online_preference"  # online / iterative DPO
    policy_gradient = "policy_gradient"  # REINFORCE and the critic-free family (GRPO, RLOO, ...)
    actor_critic = "actor_critic"  # PPO
    entropy_control = "entropy_control"  # entropy bonus, Clip-Cov / KL-Cov, entropy advantage
    rl_data = "rl_data"  # data-centric RL: rollout selection, prompt filtering, curricula
    hybrid_sequential = "hybrid_sequential"  # pipelines: SFT then RL (RLHF, R1), SFT then DPO
    sft_to_rl = "sft_to_rl"  # SFT signal brought into RL (LUFFY, SRFT, BREAD, NFT, ReLIFT)
    rl_to_sft = "rl_to_sft"  # RL view rectifies SFT (DFT, iw-SFT)
    sft_plus_rl = "sft_plus_rl"  # single-stage SFT+RL (Prefix-RFT, CHORD, UFT, HPT, SRL)
    distillation = "distillation"  # a teacher's token distributions on the student's own samples (GKD)


class Signal(StrEnum):
    """What supervision a method consumes."""

    demonstrations = "demonstrations"
    preference_pairs = "preference_pairs"
    unpaired_labels = "unpaired_labels"  # KTO-style desirable/undesirable singletons
    verifiable_reward = "verifiable_reward"
    reward_model = "reward_model"


class PolicyKind(StrEnum):
    on_policy = "on_policy"
    off_policy = "off_policy"
    mixed = "mixed"


class RelationKind(StrEnum):
    extends = "extends"  # source adds to target
    modifies = "modifies"  # source changes a part of target
    simplifies = "simplifies"
    removes_component = "removes_component"  # e.g. GRPO drops PPO's critic
    special_case_of = "special_case_of"
    equivalent_under = "equivalent_under"  # equal under the condition in `note`
    combines = "combines"  # a hybrid combines its SFT and RL parents
    rectifies = "rectifies"  # e.g. DFT rectifies SFT's implicit reward


# Relation kinds that say "source is derived from target"; they must form a DAG.
DERIVATION_KINDS = frozenset(
    {
        RelationKind.extends,
        RelationKind.modifies,
        RelationKind.simplifies,
        RelationKind.removes_component,
        RelationKind.special_case_of,
        RelationKind.combines,
        RelationKind.rectifies,
    }
)


class Domain(StrEnum):
    """The survey's four application domains."""

    general = "general"  # general QA / chat / alignment
    math = "math"
    agentic = "agentic"  # tool use, web, embodied, multi-turn
    code = "code"


class DataSource(StrEnum):
    """Where a stage's data comes from: the survey's Figure 2 vocabulary plus two pipeline kinds."""

    benchmark = "benchmark"  # benchmark / existing curated datasets
    open_weight_model = "open_weight_model"  # generated by an open-weight model
    proprietary_model = "proprietary_model"  # generated by a proprietary API model (GPT-4, ...)
    human_web = "human_web"  # written or labelled by humans, or mined from the web
    self_generated = "self_generated"  # sampled from the policy being trained
    rule_based = "rule_based"  # a rule-based / verifiable reward (answer checker, unit tests)


# Figure 2 of the survey counts these four; the other two are pipeline bookkeeping.
FIGURE2_SOURCES = (
    DataSource.benchmark,
    DataSource.open_weight_model,
    DataSource.proprietary_model,
    DataSource.human_web,
)


class Origin(StrEnum):
    reported = "reported"  # stated by a paper
    measured = "measured"  # measured by a run of ours


class PipelineRead(StrEnum):
    """Where a study's training pipeline was read, so a reader (and the trend report) can weigh it."""

    abstract = "abstract"  # the arXiv abstract page only
    paper_body = "paper_body"  # the method / experiments section of the paper (arXiv HTML or PDF)
    official_code = "official_code"  # the authors' repository: README or training scripts
    model_card = "model_card"  # the released model's card
    secondary = "secondary"  # a summary written by someone else


class Modality(StrEnum):
    """The survey covers text-only tasks; multimodal studies stay out of survey-comparable counts."""

    text = "text"
    multimodal = "multimodal"


class Split(StrEnum):
    in_distribution = "in_distribution"
    out_of_distribution = "out_of_distribution"


# ---------------------------------------------------------------------------- the taxonomy


class Method(Strict):
    """A post-training method, as the survey names it."""

    id: Slug
    name: str
    full_name: str
    paradigm: Paradigm
    family: Family
    year: int = Field(ge=1950, le=2100)
    arxiv: ArxivId | None = None  # None for pre-arXiv classics or non-arXiv reports
    objective: str  # LaTeX
    signals: list[Signal] = Field(min_length=1)
    policy: PolicyKind
    needs_reference: bool
    needs_value_model: bool
    needs_reward_model: bool
    idea: str  # one line
    components: list[Slug] = []  # for pipelines/hybrids: the methods it chains or mixes
    impl: str | None = None  # dotted module of the reference implementation
    aliases: list[str] = []
    sources: list[Url] = Field(min_length=1)  # pages the id/year were verified on

    @model_validator(mode="after")
    def _year_matches_arxiv(self) -> Method:
        if self.arxiv and int("20" + self.arxiv[:2]) != self.year:
            raise ValueError(
                f"year {self.year} contradicts arXiv id {self.arxiv} (first posted 20{self.arxiv[:2]})"
            )
        return self


class Relation(Strict):
    """A typed edge of the method graph: `source` --kind--> `target`."""

    source: Slug
    target: Slug
    kind: RelationKind
    note: str  # the condition, e.g. "SFT = policy gradient with reward 1{y=y*}/pi"
    citation: str  # arXiv id or URL that states it

    @field_validator("citation")
    @classmethod
    def _citation_form(cls, v: str) -> str:
        if re.fullmatch(ARXIV, v):
            return _arxiv_ok(v)
        if not re.fullmatch(r"https?://\S+", v):
            raise ValueError("expected an arXiv id (YYMM.NNNNN) or an http(s) URL")
        return v


# ---------------------------------------------------------------------------- pipelines


class Data(Strict):
    source: DataSource
    name: str | None = None  # e.g. "UltraFeedback", "GSM8K train"
    size: int | None = Field(default=None, ge=0)  # number of examples, where stated


class Stage(Strict):
    """One step of a training pipeline."""

    method: Slug
    data: list[Data] = []
    hyperparameters: dict[str, float | int | str | bool] = {}
    note: str | None = None
    # Set when the paper's own algorithm is not in the registry and `method` is its nearest
    # registered relative: says what differs. Adoption counts exclude approximated stages.
    approximation: str | None = None


class Pipeline(Strict):
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, v: Any) -> Any:
        return {"stages": v} if isinstance(v, list) else v  # YAML may give the stages directly

    def method_ids(self) -> list[str]:
        return [s.method for s in self.stages]


def derive_paradigm(stage_paradigms: list[Paradigm]) -> Paradigm:
    """SFT-only, RL-only, or hybrid (SFT and RL/preference stages both present, or a hybrid method)."""
    kinds = set(stage_paradigms)
    if Paradigm.hybrid in kinds or {Paradigm.sft, Paradigm.rl} <= kinds:
        return Paradigm.hybrid
    if kinds == {Paradigm.sft}:
        return Paradigm.sft
    return Paradigm.rl


class Result(Strict):
    benchmark: str
    metric: str  # e.g. "pass@1", "accuracy", "win rate"
    value: float
    unit: str = "%"  # "%" or "" for a raw score
    split: Split | None = None
    model: str | None = None  # which trained model the number belongs to
    origin: Origin = Origin.reported
    note: str | None = None

    @model_validator(mode="after")
    def _reported_is_finite(self) -> Result:
        # a paper reports numbers: NaN and infinity (YAML `.nan`, `.inf`, `1e999`) are not among them
        if self.origin is Origin.reported and not math.isfinite(self.value):
            raise ValueError(f"value {self.value} is not a finite number")
        return self


# ---------------------------------------------------------------------------- studies and runs


# Hosts that copy or proxy arXiv, Hugging Face or GitHub pages: never a catalogue source.
MIRROR_HOSTS = re.compile(
    r"(\.workers\.dev|\.$|^fast\.hugflare\.com|^arcxiv\.org|cnoctave\.top|^phind\.xodi\.top|arxiv-vanity\.com"
    r"|^ar5iv\.|hf-mirror\.com|websiteproxy|^git\.lnyan\.com|chatgptweb\.us\.kg|^hf\.chatfire\.cc"
    r"|^hf\.lightconeai\.hk|aifasthub\.com|anmk\.ir|^www\.huggingface\.co$|^export\.arxiv\.org)")


class Study(Strict):
    """An application study from the literature, with the source that verified its facts."""

    id: Slug
    title: str
    arxiv: ArxivId
    date: Date | None = None  # first-version date where seen; else the month comes from the id
    venue: str | None = None
    first_author: str | None = None
    domains: list[Domain] = Field(min_length=1)
    base_models: list[str] = []
    pipeline: Pipeline
    results: list[Result] = []
    sources: list[Url] = Field(min_length=1)
    secondary: bool = False  # True if some facts were read from a secondary summary
    modality: Modality = Modality.text
    pipeline_read: PipelineRead | None = None  # where the pipeline was read (required for RL-only)
    pipeline_evidence: str | None = None  # the words seen there, quoted, with which URL
    note: str | None = None

    @field_validator("date", mode="before")
    @classmethod
    def _date_form(cls, v: Any) -> Any:
        if isinstance(v, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
            raise ValueError("expected a date as YYYY-MM-DD")
        return v

    @field_validator("title")
    @classmethod
    def _title_has_words(cls, v: str) -> str:
        if not any(c.isalnum() for c in v):
            raise ValueError("a title needs at least one letter or digit")
        return v

    @model_validator(mode="after")
    def _finite_hyperparameters(self) -> Study:
        for i, st in enumerate(self.pipeline.stages):
            for k, v in st.hyperparameters.items():
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"pipeline stage {i + 1}, hyperparameter {k!r}: {v} is not a finite number")
        return self

    @model_validator(mode="after")
    def _canonical_sources(self) -> Study:
        for u in self.sources:
            host = re.sub(r"^https?://([^/?#]+).*", r"\1", u).lower()
            if MIRROR_HOSTS.search(host):
                raise ValueError(f"source {u}: {host} is a mirror or proxy; cite the canonical page it copies "
                                 "(arxiv.org, huggingface.co, github.com, ...)")
        return self

    @model_validator(mode="after")
    def _date_matches_arxiv(self) -> Study:
        if self.date is not None:
            yymm = f"{self.date.year % 100:02d}{self.date.month:02d}"
            if yymm != self.arxiv[:4]:
                raise ValueError(
                    f"date {self.date} contradicts arXiv id {self.arxiv} (YYMM {self.arxiv[:4]})"
                )
        return self

    @property
    def year(self) -> int:
        return 2000 + int(self.arxiv[:2])

    @property
    def month(self) -> str:
        return f"20{self.arxiv[:2]}-{self.arxiv[2:4]}"


class Run(Strict):
    """A pipeline we executed: same Pipeline and Result types as a Study."""

    id: str
    created: str  # ISO timestamp
    task: str
    model: str
    pipeline: Pipeline
    config: dict[str, Any]
    seed: int
    device: str
    hardware: str
    versions: dict[str, str]
    git_commit: str | None = None
    history: list[dict[str, float]] = []
    results: list[Result] = []
    status: str = "finished"  # finished | stopped | failed
    message: str | None = None
    replicates: str | None = None  # the catalogued study this run replicates (sftrl replicate)
