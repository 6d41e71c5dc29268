"""The capability datasets' share of each language-model stage's mix (`capabilities.<name>.{mid1,mid2,sft}`).

    extra, counts = capability_samples(cfg, "sft", datasets_dir, tok, n_base=len(samples), seed=0)

The stage's own data (`training.data`: world pages and reports for mid1, the deep-search and
deep-research trajectories for mid2 and SFT) is kept whole; a dataset with share s takes
round(s * n_base / (1 - S)) rows on top of it (S: the stage's shares added up), so in the final mix
it is a fraction s, as configured, unless it has fewer rows (then all of them; nothing repeats).
Rows are drawn with `seed` and kept in file order. What each stage reads of a dataset:

    mid1   text: a query_report pair as "Query: ...\n\nReport: ...", an episode's prompt and final answer
    mid2   whole episodes, loss on observations too unless `training.mid2.observation_loss` is false
    sft    episodes, loss on the assistant turns only (as `sft_samples`)

A dataset missing from DATASETS (a layout gated before it existed, or n: 0) contributes nothing.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from deepresearch.training.data import TrainingDataError, final_report, read_trajectories

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from deepresearch.config import PipelineConfig
    from deepresearch.modeling.chat import EncodedSample


def mix_count(share: float, total_share: float, n_base: int, available: int) -> int:
    """Rows a dataset adds so that it is `share` of the final mix (at most `available`).

    E.g. share 0.05 of a mix whose shares add up to 0.2, on 152 base rows: 0.05 * 152 / 0.8 = 9.5 → 10.
    """
    if share <= 0 or n_base <= 0:
        return 0
    return min(available, int(share * n_base / (1.0 - total_share) + 0.5))


def _texts(datasets_dir: Path, name: str) -> list[str]:
    if name == "query_report":
        from deepresearch.quality.gate import read_jsonl
        from deepresearch.synthesis.capability_schema import QueryReportPair
        from deepresearch.synthesis.query_report import pair_text

        return [pair_text(p) for p in read_jsonl(datasets_dir / name / "tasks.jsonl", QueryReportPair)]
    out = []
    for t in read_trajectories(datasets_dir, name):
        prompt = next((m.content for m in t.messages if m.role == "user"), "")
        report = final_report(t)
        if report.strip():
            out.append(f"{prompt}\n\n{report}")
    return out


def capability_samples(
    cfg: PipelineConfig, stage: str, datasets_dir: str | Path, tokenizer: PreTrainedTokenizerFast, *, n_base: int,
    seed: int,
) -> tuple[list[EncodedSample], dict[str, int]]:
    """The capability rows of `stage`'s mix (see the module docstring) and how many each dataset gave."""
    from deepresearch.modeling.chat import encode_messages, encode_text
    from deepresearch.synthesis.capability_schema import TEXT_ONLY

    if stage not in ("mid1", "mid2", "sft"):
        raise TrainingDataError(f"capability mixes exist for mid1, mid2 and sft, not {stage!r}")
    datasets_dir = Path(datasets_dir)
    shares = {name: getattr(c, stage) for name, c in cfg.capabilities.datasets().items() if getattr(c, stage) > 0}
    total = sum(shares.values())
    samples: list[EncodedSample] = []
    counts: dict[str, int] = {}
    for name, share in shares.items():
        if not (datasets_dir / name / "tasks.jsonl").is_file():
            continue
        if stage == "mid1":
            rows = _texts(datasets_dir, name)
        elif name in TEXT_ONLY:
            raise TrainingDataError(f"capabilities.{name}.{stage}: {name} has no episodes, only mid1 can use it")
        else:
            rows = read_trajectories(datasets_dir, name)
        k = mix_count(share, total, n_base, len(rows))
        keep = sorted(random.Random(f"mix:{stage}:{name}:{seed}").sample(range(len(rows)), k))
        for i in keep:
            row = rows[i]
            if stage == "mid1":
                samples.append(encode_text(tokenizer, row))  # type: ignore[arg-type]
            else:
                samples.append(encode_messages(tokenizer, row.messages, mask_failed_turns=True,  # type: ignore[union-attr]
                                               observation_loss=cfg.training.observation_loss(stage)))
        counts[name] = k
    return samples, counts
