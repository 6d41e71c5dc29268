"""Pretraining the tiny base model: the tiny analog of Qwen2.5-Base, from generated text only.

    uv run python -m deepresearch.modeling.pretrain --out registry/models/tiny-base     # make base-model

The paper starts every run from a pretrained base model (Qwen2.5-32B-Base) that can already read:
copy a name or a number out of its context, find the passage a description points to. Those are
the skills a deep-search agent is made of, and a randomly initialised 1M-parameter model does not
have them: trained on the pipeline's own data it memorises the world's entity names instead of
reading them off the page, and it only starts to copy from context after ~400 optimizer steps of
reading questions, which the tiny pipeline's minutes cannot pay for (measured: README, "Learning
signal"). So the tiny base, like a real one, is pretrained once, outside the pipeline, and shipped
(`registry/base_models.yaml`: `tiny-base`); `make base-model` rebuilds it deterministically.

Nothing here is the pipeline's data. The corpus (`pretrain_corpus`) comes from `n_worlds` synthetic
worlds whose seeds no pipeline world uses (`AUX_SEED`+i), so their names are fresh and only reading
lowers the loss. Each text is one of (`synthesis.reading.world_texts`):

    page    an opened page, rendered as the web tool renders it
    fact    a page, then "Q: What is the founder of X?" and the value from the page
    pick    a search-result block for a description, then the doc id of the result it describes
    chain   two linked pages, a two-hop question, and the answer from the second page

No text is in the agent's chat/tool-call format: that is what mid-training and SFT teach. The
tokenizer, however, is trained on part of this corpus plus the rendered expert episodes of one more
synthetic world, as a real base's tokenizer has seen markup and JSON: otherwise the agent's episodes
would cost a fifth more tokens.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from deepresearch.config import ModelConfig, TrainStageConfig, WorldConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

AUX_SEED = 1_000_000  # pipeline worlds use small seeds or ISO year-weeks (e.g. 202648); these never collide
TOKENIZER_TEXTS = 10_000


def pretrain_corpus(n_worlds: int, entities_per_type: int, seed: int = 0) -> list[str]:
    """Texts from `n_worlds` fresh synthetic worlds (seeds AUX_SEED + seed * 1000 + i), in a fixed order."""
    from deepresearch.synthesis.reading import world_texts
    from deepresearch.world.generator import generate_world

    texts: list[str] = []
    for i in range(n_worlds):
        world_seed = AUX_SEED + seed * 1000 + i
        world = generate_world(WorldConfig(seed=world_seed, entities_per_type=entities_per_type))
        texts.extend(world_texts(world, random.Random(f"pretrain:{world_seed}")))
    return texts


def format_texts(entities_per_type: int, n_tasks: int, seed: int = 0) -> Iterator[str]:
    """Rendered expert episodes (chat template, tool calls, observations) of one more fresh world:
    tokenizer training text only, so the agent's format tokenizes compactly."""
    from deepresearch.agent.policies.scripted import ScriptedExpert
    from deepresearch.config import PipelineConfig
    from deepresearch.modeling.chat import render_messages
    from deepresearch.search.embedded import EmbeddedSearch, build_index
    from deepresearch.synthesis.run import run_task
    from deepresearch.synthesis.tasks import synthesize_deep_search, synthesize_research
    from deepresearch.world.generator import generate_world

    cfg = PipelineConfig(world=WorldConfig(seed=AUX_SEED + seed * 1000 + 999, entities_per_type=entities_per_type))
    world = generate_world(cfg.world)
    with tempfile.TemporaryDirectory(prefix="pretrain-world-") as tmp:
        world.save(Path(tmp))
        build_index(world, Path(tmp) / "index", cfg.search)
        search = EmbeddedSearch(cfg.search, Path(tmp), world=world)
        expert = ScriptedExpert(cfg.agent, world, tool_error_rate=0.1, detour_rate=0.3)
        tasks = [*synthesize_deep_search(world, n_tasks, min_hops=2, max_hops=3, seed=seed),
                 *synthesize_research(world, max(1, n_tasks // 4), seed=seed)]
        for task in tasks:
            yield render_messages(run_task(expert, task, cfg, search, attempt=0).messages)


def prepare(
    model_cfg: ModelConfig,
    *,
    n_worlds: int = 8,
    entities_per_type: int = 300,
    seed: int = 0,
    n_format_tasks: int = 300,
    progress: bool = True,
) -> tuple[PreTrainedTokenizerFast, list[str], dict]:
    """The pretraining corpus and the tokenizer trained for it: (tokenizer, texts, facts about them)."""
    from deepresearch.modeling.tokenizer import train_tokenizer

    t0 = time.perf_counter()
    texts = pretrain_corpus(n_worlds, entities_per_type, seed)
    if progress:
        print(f"pretraining corpus: {len(texts)} texts ({time.perf_counter() - t0:.1f} s)", flush=True)
    fmt = list(format_texts(max(entities_per_type // 2, 4), n_format_tasks, seed))
    if progress:
        print(f"tokenizer format texts: {len(fmt)} episodes ({time.perf_counter() - t0:.1f} s)", flush=True)
    # The first TOKENIZER_TEXTS texts are plenty for the merges of page text; beside them, the format
    # episodes weigh enough for the system prompt and tool calls to get merges of their own (measured:
    # a deep-search episode is 2.9K tokens instead of 3.5K with all texts and 75 episodes).
    tokenizer = train_tokenizer([*texts[:TOKENIZER_TEXTS], *fmt], model_cfg)
    info = {"texts": len(texts), "worlds": n_worlds, "entities_per_type": entities_per_type, "seed": seed,
            "format_episodes": len(fmt), "prepare_seconds": round(time.perf_counter() - t0, 1)}
    return tokenizer, texts, info


def train_base(
    model_cfg: ModelConfig,
    train_cfg: TrainStageConfig,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    out: Path,
    *,
    info: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train a freshly initialised tiny model on `texts` (loss on every token) through the pipeline's
    training loop, in this process (a DeepSpeed world of one, CPU or one GPU), and write the HF
    checkpoint with `info` and the run's figures as its metadata to `out`."""
    from deepresearch.modeling.chat import EncodedSample
    from deepresearch.modeling.checkpoint import load_checkpoint, save_checkpoint
    from deepresearch.modeling.model import build_tiny_model
    from deepresearch.training.data import PackedDataset
    from deepresearch.training.distributed import init_distributed
    from deepresearch.training.loop import train

    t0 = time.perf_counter()
    eos = tokenizer.eos_token_id
    encoded = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    samples = [EncodedSample(e.ids + [eos], [1] * (len(e.ids) + 1)) for e in encoded]
    data = PackedDataset.from_samples(samples, seq_len=train_cfg.seq_len, pad_id=tokenizer.pad_token_id,
                                      seed=train_cfg.seed, micro_batch_size=train_cfg.micro_batch_size)
    model = build_tiny_model(model_cfg, tokenizer)
    init_distributed()
    with tempfile.TemporaryDirectory(prefix="pretrain-run-") as run_dir:
        result = train(model.train(), data, train_cfg, Path(run_dir), stage="pretrain", progress=progress,
                       resume=False, save_fn=lambda m, d: save_checkpoint(m, tokenizer, d))
        facts = {
            "stage": "pretrain",
            **(info or {}),
            "tokens_per_epoch": data.n_targets,
            "steps": result.steps,
            "seq_len": train_cfg.seq_len,
            "micro_batch_size": train_cfg.micro_batch_size,
            "lr": train_cfg.lr,
            "first_loss": round(result.losses[0], 4),
            "final_loss": round(result.final_loss, 4),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "tokens_per_s": round(result.tokens_per_s),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
        }
        trained, _ = load_checkpoint(result.hf_dir)
        save_checkpoint(trained, tokenizer, out, metadata=facts)
    return facts


def pretrain(
    model_cfg: ModelConfig,
    train_cfg: TrainStageConfig,
    out: Path,
    *,
    n_worlds: int = 8,
    entities_per_type: int = 300,
    seed: int = 0,
    n_format_tasks: int = 300,
    progress: bool = True,
) -> dict:
    """`prepare` then `train_base`: the whole base model, written to `out`; returns its facts."""
    tokenizer, texts, info = prepare(model_cfg, n_worlds=n_worlds, entities_per_type=entities_per_type, seed=seed,
                                     n_format_tasks=n_format_tasks, progress=progress)
    return train_base(model_cfg, train_cfg, tokenizer, texts, out, info=info, progress=progress)


def main(argv: list[str] | None = None) -> None:
    """`python -m deepresearch.modeling.pretrain --out DIR [--steps N ...]`.

    `--prepare-only DIR` writes the tokenizer and the corpus (texts.jsonl.gz) to DIR and stops;
    `--prepared DIR` trains from such a directory (prepare on a CPU box, train on a GPU one).
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="the base checkpoint directory to write")
    ap.add_argument("--config", default=None, help="pipeline config whose `model` section sizes the base")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--worlds", type=int, default=8)
    ap.add_argument("--entities-per-type", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prepare-only", type=Path, default=None)
    ap.add_argument("--prepared", type=Path, default=None)
    args = ap.parse_args(argv)
    import gzip
    import json

    from deepresearch.config import load_config

    model_cfg = load_config(args.config).model.model_copy(update={"base": "tiny"})
    train_cfg = TrainStageConfig(seq_len=args.seq_len, micro_batch_size=args.micro_batch, max_steps=args.steps,
                                 lr=args.lr, warmup_steps=20, save_every=args.steps, zero_stage=0,
                                 nproc_per_node=1, seed=args.seed)
    if args.prepared is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(args.prepared))
        with gzip.open(args.prepared / "texts.jsonl.gz", "rt", encoding="utf-8") as f:
            texts = [json.loads(line) for line in f]
        info = json.loads((args.prepared / "prepare.json").read_text())
    else:
        tokenizer, texts, info = prepare(model_cfg, n_worlds=args.worlds, entities_per_type=args.entities_per_type,
                                         seed=args.seed)
    if args.prepare_only is not None:
        args.prepare_only.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(args.prepare_only))
        with gzip.open(args.prepare_only / "texts.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(t) + "\n" for t in texts)
        (args.prepare_only / "prepare.json").write_text(json.dumps(info))
        print(info)
        return
    if args.out is None:
        ap.error("--out is required unless --prepare-only is given")
    print(train_base(model_cfg, train_cfg, tokenizer, texts, args.out, info=info))


if __name__ == "__main__":
    main()
