"""Training data of the three language-model stages, and a resumable packed dataset.

    corpus = tokenizer_corpus(world_dir, datasets_dir)                  # texts the BPE is trained on
    mid1 = midtrain1_samples(world_dir, datasets_dir, tok)              # pages read actively + reports, no tools
    mid2 = midtrain2_samples(datasets_dir, tok)                         # whole tool-call trajectories
    sft = sft_samples(datasets_dir, tok, deep_search_ratio=0.5, seed=0) # Deep Search : Deep Research mix
    data = PackedDataset.from_samples(sft, seq_len=512, pad_id=tok.pad_token_id, seed=0, micro_batch_size=4)
    for micro in data.micro_batches(step, rank=rank, world_size=ws, micro_batch_size=4, grad_accum_steps=2):
        ...
    data.batch_at(index, rank, world_size)   # the same schedule, as training.loop.train consumes it

DATASETS is the quality-gated layout (deepresearch.quality.gate):
    DATASETS/deep_search/{tasks,trajectories}.jsonl
    DATASETS/deep_research/{tasks,trajectories}.jsonl
Every source reads files in their stored order, so it is a pure function of its inputs.

Data order is a pure function of (seed, epoch): the rows form an endless stream, epoch e being the
permutation `epoch_order(e)`, and optimizer step s takes stream positions [s*G, (s+1)*G) with
G = world_size * micro_batch_size * grad_accum_steps. Resuming at step N therefore yields exactly the
batches N, N+1, ... of an uninterrupted run (no repeat, no skip); a step may straddle two epochs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from deepresearch.agent.schema import Trajectory, parse_assistant
from deepresearch.errors import DeepResearchError, WorldError
from deepresearch.modeling.chat import EncodedSample, encode_messages, encode_text, render_messages
from deepresearch.training.packing import IGNORE_INDEX, PackedBatch, PackedSequence, pack
from deepresearch.world.schema import Document

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

DEEP_SEARCH = "deep_search"
DEEP_RESEARCH = "deep_research"
DATASET_NAMES = (DEEP_SEARCH, DEEP_RESEARCH)
TRAJECTORIES_FILE = "trajectories.jsonl"


class TrainingDataError(DeepResearchError):
    """Training inputs are missing or malformed, or a requested mix cannot be drawn (names the path or values)."""


# ---- sources ------------------------------------------------------------------------------------


def document_text(doc: Document) -> str:
    """A world page as plain text: its title, then its paragraphs separated by blank lines."""
    return "\n\n".join([doc.title, *doc.paragraphs])


def iter_documents(world_dir: str | Path) -> Iterator[Document]:
    """The world's documents in stored (doc_id) order, streamed from documents.jsonl.

    Raises:
        WorldError: the world directory or its documents.jsonl is missing, or a line is malformed.
    """
    world_dir = Path(world_dir)
    path = world_dir / "documents.jsonl"
    if not path.is_file():
        raise WorldError(
            f"{world_dir} is not a world directory (documents.jsonl missing); "
            f"build one with `deepresearch world build --out {world_dir}`"
        )
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Document.model_validate_json(line)
            except ValidationError as e:
                raise WorldError(f"{path}:{lineno}: malformed Document: {e.errors()[0]['msg']}") from e


def read_trajectories(datasets_dir: str | Path, name: str) -> list[Trajectory]:
    """The trajectories of one dataset (`deep_search` or `deep_research`) in file order.

    Raises:
        TrainingDataError: the file is missing (the layout is named) or a line is not a Trajectory (file:line).
    """
    path = Path(datasets_dir) / name / TRAJECTORIES_FILE
    if not path.is_file():
        raise TrainingDataError(
            f"missing {path}: expected the quality-gated layout DATASETS/{{{','.join(DATASET_NAMES)}}}/"
            f"{TRAJECTORIES_FILE} (run `deepresearch quality --out {Path(datasets_dir)}` first)"
        )
    out: list[Trajectory] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Trajectory.model_validate_json(line))
            except ValidationError as e:
                raise TrainingDataError(
                    f"{path}:{lineno}: malformed Trajectory: {e.errors()[0]['msg']}"
                ) from e
    return out


def final_report(traj: Trajectory) -> str:
    """The final answer of a trajectory (`traj.answer`, else the last assistant turn's <answer>, else "")."""
    if traj.answer is not None:
        return traj.answer
    for m in reversed(traj.messages):
        if m.role == "assistant":
            return parse_assistant(m.content).answer or ""
    return ""


def tokenizer_corpus(world_dir: str | Path, datasets_dir: str | Path) -> Iterator[str]:
    """Texts the tokenizer is trained on: every world document, then every trajectory as rendered by
    the chat template (so role names and tool-response framing are in the corpus too).

    Args:
        world_dir: a world directory.
        datasets_dir: the quality-gated datasets.
    Returns:
        An iterator of texts in a fixed order.
    """
    for doc in iter_documents(world_dir):
        yield document_text(doc)
    for name in DATASET_NAMES:
        for traj in read_trajectories(datasets_dir, name):
            yield render_messages(traj.messages)


def midtrain1_samples(
    world_dir: str | Path,
    datasets_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    *,
    seed: int = 0,
    ask_about: set[str] | None = None,
) -> list[EncodedSample]:
    """Mid-training stage 1 (no tools): the world's pages read actively, and the Deep Research reports.

    Every page of the world once, as the web tool renders it, either alone or followed by a reading
    question answered from it (a fact, the result a description points to, a two-hop chain): the
    `deepresearch.synthesis.reading.world_texts` mix (the base's pretraining texts), here over the
    pipeline's own world, so the model learns this world's pages the way it will meet them and keeps
    reading rather than guessing.

    Args:
        world_dir: a world directory.
        datasets_dir: the quality-gated datasets (only deep_research is read).
        tokenizer: the policy's tokenizer.
        seed: which reading question each page gets.
        ask_about: the entity ids a reading question may be about (the pipeline passes the training side
            of `synthesis.split`, so no question targets a held-out entity); None: every entity.
    Returns:
        One `encode_text` sample per page, then per non-empty report (loss on every token).
    """
    import random as _random

    from deepresearch.synthesis.reading import world_texts
    from deepresearch.world.schema import World

    world = World.load(Path(world_dir))
    texts = world_texts(world, _random.Random(f"mid1:{seed}"), ask_about=ask_about)
    samples = [encode_text(tokenizer, text) for text in texts]
    for traj in read_trajectories(datasets_dir, DEEP_RESEARCH):
        report = final_report(traj)
        if report.strip():
            samples.append(encode_text(tokenizer, report))
    return samples


def midtrain2_samples(
    datasets_dir: str | Path, tokenizer: PreTrainedTokenizerFast, *, observation_loss: bool = True
) -> list[EncodedSample]:
    """Mid-training stage 2: every trajectory of both datasets, whole, with its tool calls and results.

    Args:
        datasets_dir: the quality-gated datasets.
        tokenizer: the policy's tokenizer.
        observation_loss: loss on the whole interaction (task, tool calls, tool results), as a language
            model of agent episodes (`training.mid2.observation_loss`); else on the assistant turns only.
    Returns:
        `encode_messages` samples, deep_search first, each in file order. The system prompt (the same in
        every episode) and the assistant turns whose calls failed carry no loss.
    """
    return [
        encode_messages(tokenizer, traj.messages, mask_failed_turns=True, observation_loss=observation_loss)
        for name in DATASET_NAMES
        for traj in read_trajectories(datasets_dir, name)
    ]


def own_datasets(stage: str, deep_search_ratio: float) -> tuple[str, ...]:
    """The quality-gated datasets a language-model stage's own samples come from (the capability datasets
    its mix adds on top: `training.mixes`): mid1 the Deep Research reports (beside the world's pages),
    mid2 both datasets, SFT those its Deep Search ratio (`training.sft_deep_search_ratio`) takes from."""
    if stage == "mid1":
        return (DEEP_RESEARCH,)
    if stage == "sft":
        return tuple(name for name, share in ((DEEP_SEARCH, deep_search_ratio), (DEEP_RESEARCH, 1.0 - deep_search_ratio))
                     if share > 0)
    return DATASET_NAMES


def sft_mix_counts(n_deep_search: int, n_deep_research: int, deep_search_ratio: float) -> tuple[int, int]:
    """How many trajectories of each kind make the largest mix with the given Deep Search fraction.

    The abundant kind is subsampled; nothing is repeated. E.g. (10, 4, 0.5) -> (4, 4);
    (10, 4, 0.75) -> (10, 3) (10 / 0.75 = 13.3 rows at most, of which 10 Deep Search).

    Args:
        n_deep_search: available Deep Search trajectories.
        n_deep_research: available Deep Research trajectories.
        deep_search_ratio: wanted fraction of Deep Search, in [0, 1].
    Returns:
        (k_deep_search, k_deep_research).
    """
    if not 0.0 <= deep_search_ratio <= 1.0:
        raise ValueError(f"deep_search_ratio must be in [0, 1], got {deep_search_ratio}")
    if deep_search_ratio == 0.0:
        return 0, n_deep_research
    if deep_search_ratio == 1.0:
        return n_deep_search, 0
    total = int(min(n_deep_search / deep_search_ratio, n_deep_research / (1.0 - deep_search_ratio)) + 1e-9)
    k_ds = min(n_deep_search, round(deep_search_ratio * total))
    return k_ds, min(n_deep_research, total - k_ds)


def sft_samples(
    datasets_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    deep_search_ratio: float,
    seed: int,
) -> list[EncodedSample]:
    """SFT data: a Deep Search : Deep Research mix at `deep_search_ratio`, loss on assistant tokens only
    (not on turns whose tool calls failed: those stay as context before their recovery).

    Which trajectories of the abundant kind are kept is drawn with `seed`; the result lists the kept
    Deep Search trajectories, then the Deep Research ones, each in file order.

    Args:
        datasets_dir: the quality-gated datasets.
        tokenizer: the policy's tokenizer.
        deep_search_ratio: `training.sft_deep_search_ratio`.
        seed: `training.sft.seed`.
    Returns:
        The encoded samples.
    Raises:
        TrainingDataError: the ratio asks for a kind of which there is none, so the mix would be empty.
    """
    ds = read_trajectories(datasets_dir, DEEP_SEARCH)
    dr = read_trajectories(datasets_dir, DEEP_RESEARCH)
    k_ds, k_dr = sft_mix_counts(len(ds), len(dr), deep_search_ratio)
    if k_ds + k_dr == 0:
        raise TrainingDataError(
            f"SFT mix is empty: deep_search_ratio={deep_search_ratio} with {len(ds)} Deep Search and "
            f"{len(dr)} Deep Research trajectories in {datasets_dir}; synthesize more data or change "
            "training.sft_deep_search_ratio"
        )
    rng = random.Random(seed)
    keep_ds = sorted(rng.sample(range(len(ds)), k_ds))
    keep_dr = sorted(rng.sample(range(len(dr)), k_dr))
    chosen = [ds[i] for i in keep_ds] + [dr[i] for i in keep_dr]
    return [encode_messages(tokenizer, traj.messages, mask_failed_turns=True) for traj in chosen]


# ---- packed, resumable dataset -------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(json.dumps(["packed-dataset", seed, epoch]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class PackedDataset:
    """Packed rows plus the deterministic schedule that deals them out by (step, rank).

    Two equivalent views of one schedule: `batch(step, rank=, world_size=, micro_batch_size=,
    grad_accum_steps=, micro_step=)`, and `batch_at(index, rank, world_size)`, the
    `deepresearch.training.loop.StepDataset` protocol, where index = step * grad_accum_steps + micro_step
    counts micro-batches over the whole run and rows per micro-batch are fixed at construction.

    Args:
        sequences: packed rows of equal length.
        seed: shuffling seed; epoch e's order is `epoch_order(e)`, a function of (seed, e) only.
        micro_batch_size: rows per micro-batch served by `batch_at` (`cfg.micro_batch_size`).
    """

    def __init__(self, sequences: Sequence[PackedSequence], seed: int, *, micro_batch_size: int = 1):
        import torch

        if micro_batch_size < 1:
            raise ValueError(f"PackedDataset: micro_batch_size must be >= 1, got {micro_batch_size}")
        self.micro_batch_size = micro_batch_size

        if not sequences:
            raise TrainingDataError(
                "PackedDataset: no packed sequences (every sample was empty or had no targets)"
            )
        self.seed = seed
        self.input_ids = torch.stack([s.input_ids for s in sequences])  # (N, T)
        self.labels = torch.stack([s.labels for s in sequences])  # (N, T)
        self.position_ids = torch.stack([s.position_ids for s in sequences])  # (N, T)
        self.segment_ids = torch.stack([s.segment_ids for s in sequences])  # (N, T)
        self._orders: dict[int, list[int]] = {}

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[EncodedSample],
        *,
        seq_len: int,
        pad_id: int,
        seed: int,
        micro_batch_size: int = 1,
        pack_documents: bool = True,
    ) -> "PackedDataset":
        """Pack `samples` (`packing.pack`) and hold the rows (arguments as in `__init__` and `pack`)."""
        return cls(pack(samples, seq_len, pad_id, pack_documents=pack_documents), seed,
                   micro_batch_size=micro_batch_size)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def n_targets(self) -> int:
        """Loss-bearing positions over all rows (tokens per epoch)."""
        return int((self.labels != IGNORE_INDEX).sum())

    def epoch_order(self, epoch: int) -> list[int]:
        """The permutation of row indices used in `epoch` (cached)."""
        if epoch not in self._orders:
            order = list(range(len(self)))
            random.Random(_epoch_seed(self.seed, epoch)).shuffle(order)
            if len(self._orders) >= 4:  # steps move forward: only the latest epochs are ever asked for
                self._orders.pop(next(iter(self._orders)))
            self._orders[epoch] = order
        return self._orders[epoch]

    @staticmethod
    def global_batch_size(*, world_size: int, micro_batch_size: int, grad_accum_steps: int = 1) -> int:
        """Rows consumed per optimizer step across all ranks."""
        return world_size * micro_batch_size * grad_accum_steps

    def indices(
        self,
        step: int,
        *,
        rank: int,
        world_size: int,
        micro_batch_size: int,
        grad_accum_steps: int = 1,
        micro_step: int = 0,
    ) -> list[int]:
        """Row indices of one rank's micro-batch `micro_step` of optimizer step `step`.

        Args:
            step: the optimizer step (0-based; the one a resumed run starts at).
            rank: this process, in [0, world_size).
            world_size: number of data-parallel processes.
            micro_batch_size: rows per process per micro-step.
            grad_accum_steps: micro-steps per optimizer step.
            micro_step: which micro-step of the step, in [0, grad_accum_steps).
        Returns:
            `micro_batch_size` row indices.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        if not 0 <= micro_step < grad_accum_steps:
            raise ValueError(f"micro_step {micro_step} is outside [0, {grad_accum_steps})")
        if step < 0 or micro_batch_size < 1:
            raise ValueError(f"step must be >= 0 and micro_batch_size >= 1 (got {step}, {micro_batch_size})")
        g = self.global_batch_size(
            world_size=world_size, micro_batch_size=micro_batch_size, grad_accum_steps=grad_accum_steps
        )
        start = step * g + (micro_step * world_size + rank) * micro_batch_size
        n = len(self)
        return [self.epoch_order(p // n)[p % n] for p in range(start, start + micro_batch_size)]

    def batch(
        self,
        step: int,
        *,
        rank: int,
        world_size: int,
        micro_batch_size: int,
        grad_accum_steps: int = 1,
        micro_step: int = 0,
    ) -> PackedBatch:
        """The PackedBatch of `indices(...)` (same arguments)."""
        idx = self.indices(
            step,
            rank=rank,
            world_size=world_size,
            micro_batch_size=micro_batch_size,
            grad_accum_steps=grad_accum_steps,
            micro_step=micro_step,
        )
        return self._gather(idx)

    def batch_at(self, index: int, rank: int, world_size: int) -> PackedBatch:
        """Micro-batch `index` (0, 1, 2, ... over the whole run) of `rank`: the training loop's protocol.

        Equal to `batch(index // G, micro_step=index % G, ...)` for any grad_accum_steps G, because the
        stream position of a micro-batch depends only on index * world_size + rank, less the trailing
        columns that are padding in every row (`PackedBatch.trimmed`).
        """
        return self.batch(
            index, rank=rank, world_size=world_size, micro_batch_size=self.micro_batch_size
        ).trimmed()  # columns that are padding in every row cost attention and teach nothing

    def micro_batches(
        self, step: int, *, rank: int, world_size: int, micro_batch_size: int, grad_accum_steps: int = 1
    ) -> list[PackedBatch]:
        """All of one rank's micro-batches for optimizer step `step`, in accumulation order."""
        return [
            self.batch(
                step,
                rank=rank,
                world_size=world_size,
                micro_batch_size=micro_batch_size,
                grad_accum_steps=grad_accum_steps,
                micro_step=k,
            )
            for k in range(grad_accum_steps)
        ]

    def iter_steps(
        self,
        start_step: int,
        end_step: int,
        *,
        rank: int,
        world_size: int,
        micro_batch_size: int,
        grad_accum_steps: int = 1,
    ) -> Iterator[tuple[int, list[PackedBatch]]]:
        """(step, micro-batches) for steps start_step .. end_step - 1; resume by passing the next step."""
        for step in range(start_step, end_step):
            yield (
                step,
                self.micro_batches(
                    step,
                    rank=rank,
                    world_size=world_size,
                    micro_batch_size=micro_batch_size,
                    grad_accum_steps=grad_accum_steps,
                ),
            )

    def epoch_at(
        self, step: int, *, world_size: int, micro_batch_size: int, grad_accum_steps: int = 1
    ) -> float:
        """Fractional epoch reached at the start of `step` (for logging)."""
        g = self.global_batch_size(
            world_size=world_size, micro_batch_size=micro_batch_size, grad_accum_steps=grad_accum_steps
        )
        return step * g / len(self)

    def _gather(self, idx: list[int]) -> PackedBatch:
        import torch

        index = torch.tensor(idx, dtype=torch.long)  # (B,)
        return PackedBatch(
            input_ids=self.input_ids[index],  # (B, T)
            labels=self.labels[index],  # (B, T)
            position_ids=self.position_ids[index],  # (B, T)
            segment_ids=self.segment_ids[index],  # (B, T)
        )
