"""Pipeline configuration: one frozen pydantic section per stage, loaded from YAML.

    cfg = load_config("configs/tiny.yaml", overrides=["synthesis.n_deep_search=8"])
    cfg.hash  # stable 12-hex digest used in cache keys and MLflow params

Unknown keys and bad values raise `ConfigError` naming the file and the dotted field.
Validators raise; nothing is silently rewritten.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python

from deepresearch.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "tiny.yaml"


class Section(BaseModel):
    """Base for every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class WorldConfig(Section):
    """The synthetic research world (or a Wikidata5m-format dump)."""

    source: Literal["synthetic", "wikidata5m", "cndbpedia"] = "synthetic"
    wikidata5m_dir: str | None = None  # directory holding the wikidata5m_*.txt files
    cndbpedia_path: str | None = None  # a CN-DBpedia triple file (subject TAB predicate TAB object)
    seed: int = 0
    # entities per type; six types (person, organization, place, work, event, product)
    entities_per_type: int = Field(60, ge=2)
    # extra low/medium-authority pages per entity besides its high-authority reference page
    secondary_pages_per_entity: int = Field(2, ge=0, le=20)
    # fraction of low-authority pages that carry a wrong or stale value for some attribute
    conflict_rate: float = Field(0.35, ge=0.0, le=1.0)
    paragraphs_per_page: int = Field(3, ge=1, le=50)
    authority_registry: str = "registry/authority_domains.yaml"

    @model_validator(mode="after")
    def _wikidata_needs_dir(self) -> "WorldConfig":
        if self.source == "wikidata5m" and not self.wikidata5m_dir:
            raise ValueError("world.source=wikidata5m needs world.wikidata5m_dir")
        if self.source == "cndbpedia" and not self.cndbpedia_path:
            raise ValueError("world.source=cndbpedia needs world.cndbpedia_path")
        return self


class SearchConfig(Section):
    """Paragraph-level search with authority-aware ranking."""

    backend: Literal["embedded", "http"] = "embedded"
    http_url: str | None = None  # for backend=http: base URL of a search API
    k1: float = Field(1.2, gt=0)
    b: float = Field(0.75, ge=0, le=1)
    # results whose BM25 score is within this fraction of a group's best are "comparable":
    # inside such a group, higher authority ranks first
    relevance_tolerance: float = Field(0.15, ge=0.0, lt=1.0)
    candidate_multiplier: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _http_needs_url(self) -> "SearchConfig":
        if self.backend == "http" and not self.http_url:
            raise ValueError("search.backend=http needs search.http_url")
        return self


class BudgetConfig(Section):
    """Per-episode budget of the ReAct loop; running out forces a final answer."""

    max_turns: int = Field(24, ge=1)
    max_tool_calls: int = Field(40, ge=0)
    max_context_tokens: int = Field(16_384, ge=256)
    # tokens the policy may generate in one episode (its assistant turns, counted with the policy's
    # tokenizer); None = no limit. A checkpoint that writes junk until each turn's cap stops here.
    max_output_tokens: int | None = Field(None, ge=1)
    # consecutive assistant turns that neither call a tool nor answer (text only, or only malformed calls)
    # after which the final answer is forced; None = no limit. The expert's recovery from an injected
    # malformed call takes one such turn.
    max_idle_turns: int | None = Field(None, ge=1)


class ShellConfig(Section):
    """Limits of the sandboxed shell tool (README, "The agent's tools", says what they guarantee)."""

    timeout_s: float = Field(10.0, gt=0)
    # the whole sandbox (a memory cgroup): its processes, and what they write to /tmp, /dev/shm
    # and the workspace; each process is also capped at this much address space
    memory_mb: int = Field(512, ge=16)
    max_output_chars: int = Field(4000, ge=100)
    max_processes: int = Field(64, ge=8)  # processes and threads in the sandbox at once (pids cgroup)
    cpus: float = Field(1.0, gt=0)  # CPU time per wall second (cpu cgroup)
    workspace_mb: int = Field(256, ge=1)  # the workspace is a tmpfs of this size while a shell runs
    tmp_mb: int = Field(64, ge=1)  # the sandbox's /tmp and /dev/shm, each
    # the host uid/gid the sandbox runs as when the tool runs as root (65534 = nobody)
    sandbox_uid: int = Field(65534, ge=1)
    sandbox_gid: int = Field(65534, ge=1)
    # Where the machine cannot confine the whole sandbox (no cgroup for memory and processes, or no
    # workspace quota: typically when not running as root), the tool refuses to start a shell unless
    # this is true; then it warns and falls back to per-process limits (ulimit), which several
    # processes together can exceed.
    allow_weak_limits: bool = False


class FileToolConfig(Section):
    """Limits of the file tool, which runs in the host process."""

    max_bytes: int = Field(8 << 20, ge=1024)  # larger files are refused (read them with the shell)
    timeout_s: float = Field(10.0, gt=0)  # for reading or patching one file


class OpenAIPolicyConfig(Section):
    """An OpenAI-compatible chat-completions endpoint used as a teacher policy."""

    base_url: str = "http://localhost:8000/v1"
    model: str = "Qwen/Qwen2.5-72B-Instruct"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(0.6, ge=0)
    max_tokens: int = Field(2048, ge=1)
    timeout_s: float = Field(120.0, gt=0)


class HFPolicyConfig(Section):
    """A local Hugging Face checkpoint as the agent's policy (generation on CPU or vLLM)."""

    model_dir: str | None = None  # an HF checkpoint directory (set per run, e.g. --set agent.hf.model_dir=...)
    engine: Literal["transformers", "vllm"] = "transformers"
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, gt=0)


class AgentConfig(Section):
    """The ReAct agent runtime: budget, tools and policies."""

    budget: BudgetConfig = BudgetConfig()
    shell: ShellConfig = ShellConfig()
    file: FileToolConfig = FileToolConfig()
    openai: OpenAIPolicyConfig = OpenAIPolicyConfig()
    hf: HFPolicyConfig = HFPolicyConfig()
    search_k: int = Field(5, ge=1, le=50)
    # a tool output longer than this is stored in the workspace; only a summary enters the context
    max_observation_chars: int = Field(3000, ge=200)


class SynthesisConfig(Section):
    """Data synthesis by atomic capability."""

    seed: int = 0
    n_deep_search: int = Field(40, ge=1)
    n_deep_research: int = Field(20, ge=1)
    min_hops: int = Field(2, ge=1)
    max_hops: int = Field(3, ge=1)
    # scripted-expert attempts per task; quality keeps the shortest successful one
    attempts_per_task: int = Field(2, ge=1)
    # rate of deliberately malformed tool calls, each followed by a recovery
    tool_error_rate: float = Field(0.08, ge=0.0, le=0.5)
    # rate of detours (an extra, unneeded search) so attempts differ in length
    detour_rate: float = Field(0.3, ge=0.0, le=1.0)
    # share of the world's entities held out: training tasks (synthesis, PPO) never target them, the
    # evaluation's tasks target only them (synthesis/split.py states the guarantee)
    heldout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # seeds only the entity split; kept apart from `seed`, which the weekly fresh-data runs change, so a
    # fixed world keeps its held-out entities from one run to the next
    split_seed: int = 0

    @model_validator(mode="after")
    def _hops_ordered(self) -> "SynthesisConfig":
        if self.min_hops > self.max_hops:
            raise ValueError(f"synthesis.min_hops ({self.min_hops}) > synthesis.max_hops ({self.max_hops})")
        return self


class CapabilityConfig(Section):
    """One atomic-capability dataset (deepresearch/synthesis/capabilities.py): how many items to
    synthesize, and its share of each language-model stage's mix.

    A share is the fraction of the stage's final mix taken by this dataset: the stage's own data (the
    world pages and reports for mid1, the deep-search and deep-research trajectories for mid2 and SFT)
    is kept whole and these rows are added on top, at most every row the dataset has (nothing repeats).
    """

    n: int = Field(0, ge=0)  # items to synthesize (0: the dataset is not built)
    mid1: float = Field(0.0, ge=0.0, lt=1.0)
    mid2: float = Field(0.0, ge=0.0, lt=1.0)
    sft: float = Field(0.0, ge=0.0, lt=1.0)


class PlanningConfig(CapabilityConfig):
    """Reverse-engineered plans from the world's institutional reports, executed by the expert."""

    min_sections: int = Field(3, ge=2)  # entities a report (and its plan) covers
    max_sections: int = Field(5, ge=2)
    # chance the expert drifts from the plan (skips or reorders a step): what the consistency filter catches
    deviation_rate: float = Field(0.2, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "PlanningConfig":
        if self.min_sections > self.max_sections:
            raise ValueError(f"min_sections ({self.min_sections}) > max_sections ({self.max_sections})")
        return self


class SubgraphConfig(CapabilityConfig):
    """Questions over sampled KG subgraphs that intersect several constraints (paper: 10-40 nodes)."""

    min_nodes: int = Field(10, ge=2)
    max_nodes: int = Field(40, ge=2)
    constraints: int = Field(2, ge=2, le=4)  # constraints intersected per question

    @model_validator(mode="after")
    def _ordered(self) -> "SubgraphConfig":
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes ({self.min_nodes}) > max_nodes ({self.max_nodes})")
        return self


class WikiWalkConfig(CapabilityConfig):
    """Questions along hyperlink walks of the world's pages; evidence from at least two linked pages."""

    min_links: int = Field(1, ge=1)  # links followed from the start page
    max_links: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "WikiWalkConfig":
        if self.min_links > self.max_links:
            raise ValueError(f"min_links ({self.min_links}) > max_links ({self.max_links})")
        return self


class VerificationConfig(CapabilityConfig):
    """Drafts carrying a planted conflict; the expert detects and resolves it (paper: 5-10 % tool errors)."""

    tool_error_rate: float = Field(0.08, ge=0.05, le=0.10)


class DifficultyFilterConfig(Section):
    """The reference solver that drops questions a shallow agent already answers (paper: keep only
    what a strong model's simple ReAct cannot solve)."""

    # shallow: one search with the question, answer read off the top hit; openai: agent.openai's
    # endpoint in the ReAct loop; checkpoint: agent.hf.model_dir in the ReAct loop
    solver: Literal["shallow", "openai", "checkpoint"] = "shallow"
    # datasets whose questions are filtered (deep_search too at paper scale)
    apply_to: list[Literal["deep_search", "deep_search_subgraph", "wiki_walk"]] = Field(
        default_factory=lambda: ["deep_search_subgraph", "wiki_walk"]
    )
    # candidates built per question wanted, so that enough survive the filter
    oversample: float = Field(2.0, ge=1.0, le=20.0)


class CapabilitiesConfig(Section):
    """The atomic-capability datasets beyond deep_search and deep_research, and their mix shares."""

    planning: PlanningConfig = PlanningConfig()
    deep_search_subgraph: SubgraphConfig = SubgraphConfig()
    wiki_walk: WikiWalkConfig = WikiWalkConfig()
    verification: VerificationConfig = VerificationConfig()
    query_report: CapabilityConfig = CapabilityConfig()  # mid1: <query, report> pairs, no trajectories
    url_qa: CapabilityConfig = CapabilityConfig()  # mid2 family
    long_summary: CapabilityConfig = CapabilityConfig()  # mid2 family
    difficulty_filter: DifficultyFilterConfig = DifficultyFilterConfig()
    # expert attempts per task (seeded by synthesis.seed, like the other datasets)
    attempts_per_task: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _shares_leave_room(self) -> "CapabilitiesConfig":
        if self.query_report.mid2 or self.query_report.sft:
            raise ValueError("capabilities.query_report: text pairs have no episodes; only mid1 can take a share")
        for stage in ("mid1", "mid2", "sft"):
            total = sum(getattr(c, stage) for c in self.datasets().values())
            if total >= 1.0:
                raise ValueError(f"capabilities: the {stage} shares add up to {total:g}; they must stay below 1 "
                                 "(the stage's own data takes the rest)")
        return self

    def datasets(self) -> dict[str, CapabilityConfig]:
        """Each capability dataset's section, by dataset name."""
        names = ("planning", "deep_search_subgraph", "wiki_walk", "verification", "query_report", "url_qa",
                 "long_summary")
        return {n: getattr(self, n) for n in names}


class ExpectationConfig(Section):
    """Thresholds used by the great-expectations suites."""

    min_rows: int = Field(1, ge=0)
    max_tool_calls: int = Field(40, ge=1)
    min_citation_valid_rate: float = Field(1.0, ge=0.0, le=1.0)
    min_success_rate: float = Field(1.0, ge=0.0, le=1.0)


class QualityConfig(Section):
    """Quality gates applied to synthesized trajectories."""

    ngram_n: int = Field(4, ge=2)
    # a trajectory whose assistant text repeats one n-gram more often than this is a loop
    max_ngram_repeats: int = Field(6, ge=2)
    max_identical_tool_calls: int = Field(3, ge=2)
    minhash_threshold: float = Field(0.85, gt=0.0, le=1.0)
    minhash_num_perm: int = Field(128, ge=16)
    require_citations: bool = True
    expectations: ExpectationConfig = ExpectationConfig()


class ModelConfig(Section):
    """Base model and tokenizer. `base: tiny` builds both from config; otherwise `base` names an
    entry of registry/base_models.yaml (a local directory or s3:// URI; nothing is downloaded from a hub)."""

    base: str = "tiny"
    base_models_registry: str = "registry/base_models.yaml"
    # tiny Qwen2-architecture model (random init) and its BPE tokenizer trained on the world corpus
    vocab_size: int = Field(2048, ge=300)
    hidden_size: int = Field(128, ge=16)
    intermediate_size: int = Field(352, ge=16)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    max_position_embeddings: int = Field(4096, ge=128)
    rope_theta: float = Field(10_000.0, gt=0)
    tie_word_embeddings: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("model.num_attention_heads must be divisible by model.num_key_value_heads")
        return self


class TrainStageConfig(Section):
    """One run of the shared DeepSpeed training loop (mid-training 1/2, SFT, judge)."""

    seq_len: int = Field(512, ge=16)  # packed sequence length (paper: 32K stage 1, 128K stage 2)
    # False: one document (episode) per row, trimmed to its length: for episodes of varied length, where a
    # shared row pays attention over the whole row; True: first-fit packing of short documents
    pack_documents: bool = True
    micro_batch_size: int = Field(4, ge=1)  # sequences per process per micro-step
    grad_accum_steps: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    save_every: int = Field(50, ge=1)  # checkpoint every N optimizer steps (resume from the latest)
    zero_stage: int = Field(2, ge=0, le=3)
    bf16: bool = False  # bf16 on GPU; fp32 on CPU
    nnodes: int = Field(1, ge=1)
    nproc_per_node: int = Field(2, ge=1)
    seed: int = 0
    # mid2 only: also train on the tool observations (search results, pages), as a language model of whole
    # agent episodes (the system prompt and failed calls never are); None = yes for mid2
    observation_loss: bool | None = None


class TrainingConfig(Section):
    """Agentic mid-training (two stages) and SFT."""

    mid1: TrainStageConfig = TrainStageConfig()  # corpus, reasoning and report text; no tools
    mid2: TrainStageConfig = TrainStageConfig(seq_len=1024)  # whole tool-call episodes, longer context
    sft: TrainStageConfig = TrainStageConfig()  # loss on assistant tokens only
    # fraction of SFT trajectories drawn from Deep Search (the rest Deep Research)
    sft_deep_search_ratio: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _observations_in_mid2_only(self) -> "TrainingConfig":
        for stage in ("mid1", "sft"):
            if getattr(self, stage).observation_loss:
                raise ValueError(f"training.{stage}.observation_loss: only mid2 trains on tool observations")
        return self

    def observation_loss(self, stage: str) -> bool:
        """Whether `stage` trains on tool observations: mid2 does unless `training.mid2.observation_loss`
        is false (a language model of whole episodes); SFT never does (assistant turns only)."""
        return stage == "mid2" and self.mid2.observation_loss is not False


class JudgeConfig(Section):
    """Rubric judge: (report, rubric item) -> satisfied / partially / not."""

    # research tasks (on training entities) whose reports make the judge's data; None: synthesis.n_deep_research
    n_tasks: int | None = Field(None, ge=2)
    reports_per_task: int = Field(4, ge=1)  # controlled-quality variants per research task
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    max_len: int = Field(512, ge=32)
    # what the judge reads of a report (deepresearch.judge.evidence.judge_view): 0 = the whole report,
    # k = its headings and the k lines that best match the rubric item
    evidence_lines: int = Field(0, ge=0)
    mark_matches: bool = False  # mark report words the item shares and item words the report lacks
    train: TrainStageConfig = TrainStageConfig(max_steps=200, lr=5e-4)
    seed: int = 0


class RLConfig(Section):
    """PPO with a learned critic in the multi-tool environment (see `deepresearch.rl.train`).

    The three settings that shape the learning signal, explicitly:
    - advantages: GAE(gamma, lam) over policy tokens, tool observations skipped (recipe: γ = λ = 1, so
      A_t = R − V(s_t), R the episode reward plus any KL shaping after t); `whiten_advantages` rescales
      them to zero mean and unit variance over the batch's policy tokens (off: the raw R − V).
    - KL to the reference (the frozen SFT policy): with `kl_coef` = β > 0 every policy token's reward
      gets −β·KL(π_old ‖ π_ref), estimator `kl_estimator`; 0 skips the reference model entirely.
    - temperature: rollouts sample from softmax(logits / T), and every log-probability PPO uses (old,
      new, reference) and the logged entropy are of that same distribution, so the update is on-policy
      for the policy that actually acted at any T.
    """

    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(1.0, ge=0, le=1)
    whiten_advantages: bool = False
    clip_eps: float = Field(0.2, gt=0)
    value_clip_eps: float = Field(0.2, gt=0)
    kl_coef: float = Field(0.0, ge=0)  # β of the per-token KL-to-reference reward shaping; 0 disables it
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"  # rl.ppo.KLEstimator
    value_coef: float = Field(0.5, ge=0)
    ppo_epochs: int = Field(2, ge=1)
    # episodes per optimizer step (verl's ppo_mini_batch_size), forwarded `micro_batch_size` at a time
    # with their gradients accumulated (verl's ppo_micro_batch_size; 0 = the whole minibatch at once);
    # the accumulated gradient is that of the minibatch's token-mean losses
    minibatch_size: int = Field(4, ge=1)
    micro_batch_size: int = Field(0, ge=0)
    steps: int = Field(10, ge=1)  # rollout → update iterations
    episodes_per_step: int = Field(8, ge=1)
    # each step plays episodes_per_step / samples_per_task distinct tasks, every one of them this many
    # times (verl's rollout.n): samples of one task differ only in the policy's own choices
    samples_per_task: int = Field(1, ge=1)
    # subtract from each episode's reward the mean reward of the other samples of its task (RLOO's
    # leave-one-out baseline) before GAE: the advantage then says how much better than its task's other
    # samples an episode did, not how easy its task was; needs samples_per_task >= 2
    task_baseline: bool = False
    # leave out of the update the episodes of a task whose samples all earned the same reward (DAPO's
    # dynamic sampling, arXiv 2503.14476): their centered rewards are 0, so they carry no signal, and the
    # learner's time goes to the tasks that do; needs samples_per_task >= 2
    skip_uniform_groups: bool = False
    rollout_workers: int = Field(2, ge=1)  # Ray actors
    actor_lr: float = Field(1e-5, gt=0)
    critic_lr: float = Field(1e-4, gt=0)
    temperature: float = Field(1.0, gt=0)  # of rollouts and of every PPO log-prob (see above)
    max_new_tokens: int = Field(256, ge=1)  # per assistant turn
    # continuous batching at slice granularity (generation.batching): a batch of turns decodes at most
    # this many tokens before finished turns return and the next ones join; 0 = each batch to its end
    slice_tokens: int = Field(64, ge=0)
    engine: Literal["transformers", "vllm"] = "transformers"
    seed: int = 0

    @model_validator(mode="after")
    def _groups_fit(self) -> "RLConfig":
        if self.episodes_per_step % self.samples_per_task:
            raise ValueError(
                f"rl.episodes_per_step ({self.episodes_per_step}) is not a multiple of rl.samples_per_task "
                f"({self.samples_per_task})"
            )
        for flag in ("task_baseline", "skip_uniform_groups"):
            if getattr(self, flag) and self.samples_per_task < 2:
                raise ValueError(f"rl.{flag} needs rl.samples_per_task >= 2 (it compares a task's samples)")
        return self

    @property
    def tasks_per_step(self) -> int:
        """Distinct tasks a step plays (each `samples_per_task` times)."""
        return self.episodes_per_step // self.samples_per_task

    @property
    def forward_batch(self) -> int:
        """Episodes per forward pass of the learner, the critic and the reference."""
        return min(self.micro_batch_size or self.minibatch_size, self.minibatch_size)


# the held-out metrics a promotion can be decided on (evaluation.metrics.METRICS names)
GateMetric = Literal["mean_reward", "exact_match", "f1", "compliance", "judge_compliance", "well_formed_rate"]


class EvalConfig(Section):
    """Evaluation on held-out tasks and the promotion gate."""

    # held-out tasks: their targets are held-out entities (synthesis.heldout_fraction, synthesis/split.py)
    n_deep_search: int = Field(100, ge=1)
    n_deep_research: int = Field(20, ge=1)
    seed: int = 1000  # seeds the held-out tasks, the episodes and every bootstrap
    # bootstrap over tasks: every metric's interval and every paired difference's
    bootstrap: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    elo_bootstrap: int = Field(200, ge=10)
    elo_k: float = Field(16.0, gt=0)
    # generation: transformers on CPU, vLLM on a GPU (bf16); one engine per checkpoint shared by at most
    # `max_concurrency` episodes at once, their turns decoded in batches
    engine: Literal["transformers", "vllm"] = "transformers"
    max_concurrency: int = Field(32, ge=1)
    # torch's CPU threads while evaluating (transformers engine, probe): one thread per process is
    # several times faster than two on a shared 2-core machine (README, "Training throughput")
    torch_threads: int = Field(1, ge=1)
    # HF checkpoints played at once, each in its own process with its own engine and `torch_threads`
    # (transformers engine only: vLLM plays one checkpoint at a time on the GPU). A process decodes its
    # batches on about one core, so on a 2-core machine 2 checkpoints at once take about the time of one
    checkpoint_processes: int = Field(1, ge=1)
    # decoding of every evaluated checkpoint: 0 = greedy (the measured policy is its mode, as in most
    # agent benchmarks); RL rollouts sample at `rl.temperature` for exploration, evaluation does not
    temperature: float = Field(0.0, ge=0)
    max_new_tokens: int = Field(512, ge=1)  # per assistant turn; must fit the longest expected turn (a report)
    # continuous batching at slice granularity (generation.batching): a batch of turns decodes at most
    # this many tokens before finished turns return and the next ones join, so a 500-token report does
    # not hold every 50-token turn of the batch; 0 = each batch to its end
    slice_tokens: int = Field(64, ge=0)
    # teacher-forced next-action probe of every checkpoint on held-out expert trajectories: this many per
    # capability (0 = no probe), each cut at `probe_max_tokens`
    probe_episodes: int = Field(8, ge=0)
    probe_max_tokens: int = Field(4096, ge=64)
    # promotion of the policy (evaluation/promotion.py): it must clear these floors, be at least as good as
    # SFT on `gate_metric`, lose to SFT on none of `guard_metrics` (a paired interval entirely below 0), and
    # beat the current champion on `gate_metric` with a paired interval that excludes a loss
    gate_metric: GateMetric = "mean_reward"
    min_compliance: float = Field(0.0, ge=-10, le=1)
    guard_metrics: list[GateMetric] = ["exact_match", "compliance", "well_formed_rate"]
    # a policy that fails the answer format on half its held-out episodes never becomes champion
    min_well_formed_rate: float = Field(0.5, ge=0, le=1)
    # the judge becomes `champion` only if its macro-F1 against the ground-truth labels of the
    # evaluation's reports reaches this
    min_judge_macro_f1: float = Field(0.85, ge=0, le=1)


class TaskResources(Section):
    """Kubernetes requests for one task family; applied by the workflow with `with_overrides`."""

    cpu: str = "1"
    mem: str = "2Gi"
    gpu: int = Field(0, ge=0)
    # a flytekit.extras.accelerators name: A100, A100_80GB, H100, H200, L4, L40S, T4, A10G, V100
    accelerator: str | None = None

    @model_validator(mode="after")
    def _accelerator_needs_gpu(self) -> "TaskResources":
        if self.accelerator and not self.gpu:
            raise ValueError(f"accelerator {self.accelerator!r} given but gpu is 0")
        return self


class InfraConfig(Section):
    """Where and on what each task family runs on a cluster (ignored by local executions)."""

    image_registry: str = "localhost:30000"  # $DEEPRESEARCH_IMAGE_REGISTRY overrides
    data: TaskResources = TaskResources(cpu="2", mem="4Gi")
    train: TaskResources = TaskResources(cpu="2", mem="8Gi")
    rollout: TaskResources = TaskResources(cpu="2", mem="8Gi")
    eval: TaskResources = TaskResources(cpu="2", mem="4Gi")
    schedule: str = "0 6 * * 1"  # cron for scheduled retraining (weekly, Monday 06:00 UTC)


_S3_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class StorageConfig(Section):
    """Where datasets and checkpoints are stored when object storage is enabled.

    `endpoint_url` is set for MinIO or any other S3-compatible server (path-style addressing is
    used then) and left unset for AWS S3. Credentials are never part of the config: they come from
    the standard AWS environment variables or the boto3 credential chain.
    """

    enabled: bool = False
    endpoint_url: str | None = None  # e.g. http://minio.minio.svc:9000; None = AWS S3
    bucket: str = ""  # required when enabled
    prefix: str = "deepresearch"  # key prefix under which storage_uri() places artifacts
    region: str = "us-east-1"
    # files at least this large are uploaded/downloaded in parts
    multipart_threshold_mb: int = Field(8, ge=1)
    # S3 requires every part but the last to be >= 5 MiB; at most 10,000 parts per object
    multipart_chunk_mb: int = Field(8, ge=5, le=5120)
    # attempts per request (botocore, standard mode) and per file transfer (our retry)
    max_attempts: int = Field(5, ge=1, le=20)
    # first wait of our per-file retry; doubles each attempt, capped at 30 s
    retry_backoff_s: float = Field(0.5, ge=0.0, le=60.0)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"storage.endpoint_url {v!r} must start with http:// or https://")
        return v

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, v: str) -> str:
        if v and not _S3_BUCKET_RE.fullmatch(v):
            raise ValueError(
                f"storage.bucket {v!r} is not a valid S3 bucket name "
                "(3-63 lowercase letters, digits, dots or hyphens)"
            )
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix_shape(cls, v: str) -> str:
        if v.startswith("/") or v.endswith("/") or "//" in v:
            raise ValueError(f"storage.prefix {v!r} must not start or end with '/' nor contain '//'")
        return v

    @model_validator(mode="after")
    def _enabled_needs_bucket(self) -> "StorageConfig":
        if self.enabled and not self.bucket:
            raise ValueError("storage.enabled=true needs storage.bucket")
        return self


class TrackingConfig(Section):
    """MLflow tracking. `uri` None → $MLFLOW_TRACKING_URI, else SQLite in the repo."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "deepresearch"


class PipelineConfig(Section):
    """The whole pipeline, one section per stage."""

    name: str = "tiny"
    world: WorldConfig = WorldConfig()
    search: SearchConfig = SearchConfig()
    agent: AgentConfig = AgentConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    capabilities: CapabilitiesConfig = CapabilitiesConfig()
    quality: QualityConfig = QualityConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    judge: JudgeConfig = JudgeConfig()
    rl: RLConfig = RLConfig()
    evaluation: EvalConfig = EvalConfig()
    infra: InfraConfig = InfraConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()

    _pipeline_hash: str = PrivateAttr("")  # set on a stage's view: the hash of the whole pipeline config

    @property
    def hash(self) -> str:
        """Stable digest of the resolved config (tracking, infra, storage excluded: they do not change results).

        A stage's view (`StageConfig.view`) answers with the hash of the pipeline config it was cut from."""
        if self._pipeline_hash:
            return self._pipeline_hash
        payload = {k: v for k, v in _declared_dump(self).items() if k not in RUN_SECTIONS}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the form passed between Flyte tasks."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PipelineConfig":
        return cls.model_validate_json(text)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", _declared_dump(self))
        return out


# ---- what each stage reads: the config part of its cache key --------------------------------------------
#
# A stage's Flyte task takes a `StageConfig` holding only the config it reads (`STAGE_INPUTS`), plus its
# upstream artifacts and a `RunContext` (parent run, execution id, tracking and storage) that Flyte leaves
# out of the cache key. So changing `rl.actor_lr` re-runs PPO and evaluation only, `training.sft.lr` SFT and
# what follows it, and `tracking.uri` or `infra.*` nothing. `StageConfig.view` turns it back into the
# `PipelineConfig` the library takes, in which reading anything the stage did not declare raises.

STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "world": ("world", "search"),
    "synthesis": ("search", "agent", "synthesis", "capabilities"),
    "quality": ("quality",),
    "base": ("model",),
    # mid1 asks reading questions about training-side entities only (synthesis' entity split); every
    # training stage adds its share of the capability datasets (`capabilities.<name>.<stage>`)
    "mid1": ("training.mid1", "synthesis.heldout_fraction", "synthesis.split_seed", "capabilities"),
    "mid2": ("training.mid2", "capabilities"),
    "sft": ("training.sft", "training.sft_deep_search_ratio", "capabilities"),
    "judge_data": ("judge.n_tasks", "judge.reports_per_task", "judge.heldout_fraction", "judge.seed", "synthesis"),
    "judge": ("judge.max_len", "judge.train", "judge.evidence_lines", "judge.mark_matches"),
    "rl": ("rl", "agent", "search", "synthesis", "training.sft", "training.sft_deep_search_ratio"),
    "evaluation": ("evaluation", "agent", "search", "synthesis"),
}
# sections that never change what a stage produces: never part of a cache key
RUN_SECTIONS = ("tracking", "infra", "storage")


class Undeclared:
    """Stands in a stage's view for config the stage did not declare in `STAGE_INPUTS`: reading it raises,
    since a value missing from the cache key would let a changed setting hand back a stale output."""

    def __init__(self, path: str, stage: str):
        self._path, self._stage = path, stage

    def __getattr__(self, name: str):
        if name.startswith("__"):  # copy, pickle and friends probe dunders: answer as a plain object would
            raise AttributeError(name)
        raise ConfigError(
            f"stage {self._stage!r} read {self._path}.{name}, which is not in its cache key; add "
            f"{self._path!r} to STAGE_INPUTS[{self._stage!r}] in deepresearch/config.py"
        )

    def __repr__(self) -> str:
        return f"<{self._path}: not an input of stage {self._stage!r}>"


def _declared_dump(model: BaseModel) -> dict[str, Any]:
    """model_dump(mode="json") of a config or a stage's view, leaving out what the stage did not declare."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Undeclared):
            continue
        out[name] = _declared_dump(value) if isinstance(value, BaseModel) else to_jsonable_python(value)
    return out


class RunContext(Section):
    """How a stage is tracked: never part of a cache key (a stage task lists it in `ignored_inputs`)."""

    parent_run_id: str = ""  # the pipeline's MLflow parent run ("" = the stage's run is a top-level run)
    execution_id: str = "local"  # the workflow execution, tagged on every run (`mark_failed` closes them)
    pipeline: str = "tiny"  # PipelineConfig.name
    config_hash: str = ""  # PipelineConfig.hash of the whole config
    tracking: TrackingConfig = TrackingConfig()
    storage: StorageConfig = StorageConfig()

    @classmethod
    def of(cls, cfg: PipelineConfig, parent_run_id: str = "", execution_id: str = "local") -> "RunContext":
        return cls(parent_run_id=parent_run_id, execution_id=execution_id, pipeline=cfg.name,
                   config_hash=cfg.hash, tracking=cfg.tracking, storage=cfg.storage)


class StageConfig(Section):
    """The config one stage reads (`STAGE_INPUTS[stage]`), a typed Flyte input and so its cache key.

    A section the stage does not read is None; of a section it reads in part, the other fields keep their
    defaults (so they never vary the key) and are undeclared in its `view`."""

    stage: str
    world: WorldConfig | None = None
    search: SearchConfig | None = None
    agent: AgentConfig | None = None
    synthesis: SynthesisConfig | None = None
    capabilities: CapabilitiesConfig | None = None
    quality: QualityConfig | None = None
    model: ModelConfig | None = None
    training: TrainingConfig | None = None
    judge: JudgeConfig | None = None
    rl: RLConfig | None = None
    evaluation: EvalConfig | None = None

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, v: str) -> str:
        if v not in STAGE_INPUTS:
            raise ValueError(f"unknown stage {v!r}; valid: {', '.join(STAGE_INPUTS)}")
        return v

    @staticmethod
    def _declared(stage: str, section: str) -> set[str] | None:
        """None: the whole section; else the fields declared (empty: none)."""
        paths = STAGE_INPUTS[stage]
        if section in paths:
            return None
        return {p.split(".", 1)[1] for p in paths if p.startswith(section + ".")}

    @classmethod
    def of(cls, cfg: PipelineConfig, stage: str) -> "StageConfig":
        """The part of `cfg` that `stage` reads."""
        if stage not in STAGE_INPUTS:
            raise ConfigError(f"unknown stage {stage!r}; valid: {', '.join(STAGE_INPUTS)}")
        values: dict[str, Any] = {}
        for section in cls.model_fields:
            if section == "stage":
                continue
            fields = cls._declared(stage, section)
            given = getattr(cfg, section)
            if fields is None:
                values[section] = given
            elif fields:
                values[section] = type(given)(**{f: getattr(given, f) for f in fields})
        return cls(stage=stage, **values)

    def view(self, run: RunContext | None = None) -> PipelineConfig:
        """The PipelineConfig the library's stage function takes: this stage's inputs, `run`'s tracking and
        storage; every other setting raises ConfigError when read."""
        run = run or RunContext()
        values: dict[str, Any] = {"name": run.pipeline, "tracking": run.tracking, "storage": run.storage}
        for section in PipelineConfig.model_fields:
            if section in values:
                continue
            if section not in type(self).model_fields:  # infra, and any section a stage never reads
                values[section] = Undeclared(section, self.stage)
                continue
            fields = self._declared(self.stage, section)
            given = getattr(self, section)
            if fields is None:
                values[section] = given
            elif not fields:
                values[section] = Undeclared(section, self.stage)
            else:
                values[section] = type(given).model_construct(**{
                    f: getattr(given, f) if f in fields else Undeclared(f"{section}.{f}", self.stage)
                    for f in type(given).model_fields
                })
        view = PipelineConfig.model_construct(**values)
        view._pipeline_hash = run.config_hash
        return view


def fresh_data_overrides(cfg: PipelineConfig, kickoff: datetime) -> list[str]:
    """Overrides that give a scheduled run fresh data: the world and synthesis seeds become the
    kickoff's ISO year and week (e.g. 202647), so each weekly run builds a new world and new tasks."""
    year, week, _ = kickoff.isocalendar()
    seed = year * 100 + week
    out = [f"synthesis.seed={seed}"]
    if cfg.world.source == "synthetic":  # a Wikidata5m dump is fixed; only its tasks are fresh
        out.append(f"world.seed={seed}")
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.field=value")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {item!r} has an empty field name")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with dotted `a.b.c=value` overrides applied (values parsed as YAML)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return data


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (check the spelling against deepresearch/config.py)")
        else:
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Validate a plain dict into a PipelineConfig; errors name `source` and each bad field."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


class _DuplicateKey(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error, not "last one wins"."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges may override on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config (default: configs/tiny.yaml) and apply dotted overrides.

    Args:
        path: YAML file; relative paths are resolved against the working directory, then the repo.
        overrides: `section.field=value` strings; values are parsed as YAML scalars/lists.
    Returns:
        The validated, frozen PipelineConfig.
    Raises:
        ConfigError: missing or empty file, malformed YAML, a key given twice, unknown key or bad value
            (file and field named).
    """
    p = Path(path) if path is not None else DEFAULT_CONFIG
    if not p.exists() and not p.is_absolute() and (REPO_ROOT / p).exists():
        p = REPO_ROOT / p
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (pass --config configs/tiny.yaml or a path to a YAML file)")
    try:
        data = yaml.load(p.read_text(), Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"config file {p}: {e}; keep one (YAML would silently use the last)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if data is None:
        # an empty file would silently mean every built-in default, a different pipeline than intended
        raise ConfigError(
            f"config file {p} is empty; give the settings to change (e.g. start from configs/tiny.yaml), "
            "or pass --config configs/tiny.yaml"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(data).__name__}")
    overrides = list(overrides or [])
    data = apply_overrides(data, overrides)
    source = str(p) + (f" (with overrides {overrides})" if overrides else "")
    return config_from_dict(data, source)


def resolve_repo_path(path: str | Path) -> Path:
    """A path from config: absolute as is, relative to the working directory if it exists, else the repo."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p
