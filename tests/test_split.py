"""The held-out guarantee: no task the pipeline trains on shares a target entity or a question with an
evaluation task (synthesis/split.py), on the tiny config's own world and counts."""

import json

import pytest

from deepresearch.synthesis.split import (
    SplitError,
    check_disjoint,
    entity_split,
    heldout_tasks,
    is_heldout,
    task_target,
    task_text,
    training_tasks,
)
from deepresearch.synthesis.tasks import synthesize_deep_search
from deepresearch.world.schema import World
from tests.conftest import requires_sandbox


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """configs/tiny.yaml as it is, and its world."""
    from deepresearch.config import load_config
    from deepresearch.world.build import build_world

    cfg = load_config("configs/tiny.yaml", ["tracking.enabled=false"])
    out = tmp_path_factory.mktemp("tiny") / "world"
    build_world(cfg, out)
    return cfg, out, World.load(out)


def test_is_heldout_is_a_seeded_hash_of_the_id():
    ids = [f"E{i:06d}" for i in range(5000)]
    held = [i for i in ids if is_heldout(i, fraction=0.2, seed=0)]
    assert 0.18 < len(held) / len(ids) < 0.22
    assert held == [i for i in ids if is_heldout(i, fraction=0.2, seed=0)]  # a pure function of id and seed
    assert held != [i for i in ids if is_heldout(i, fraction=0.2, seed=1)]
    # a larger fraction only adds entities: the split is monotone in the fraction
    assert set(held) < {i for i in ids if is_heldout(i, fraction=0.3, seed=0)}


def test_tiny_run_trains_on_no_heldout_target_or_question(tiny, tmp_path):
    """Every training task of a tiny run (SFT data, PPO's pool, the judge's tasks) against the evaluation's."""
    from deepresearch.judge.data import build_judge_dataset, read_examples
    from deepresearch.rl.train import rl_task_pools

    cfg, world_dir, world = tiny
    syn, ev = cfg.synthesis, cfg.evaluation
    held_ds, held_dr = heldout_tasks(world, syn, ev)
    # the tiny config's held-out set is big enough to tell checkpoints apart, and its world supplies it
    assert (len(held_ds), len(held_dr)) == (ev.n_deep_search, ev.n_deep_research)
    assert ev.n_deep_search >= 100 and ev.n_deep_research >= 20
    held = [*held_ds, *held_dr]
    assert len({task_text(t) for t in held}) == len(held)  # distinct questions, never repeated

    split = entity_split(world, fraction=syn.heldout_fraction, seed=syn.split_seed)
    assert {task_target(t) for t in held} <= split.heldout

    sft_ds, sft_dr = training_tasks(world, syn, n_deep_search=syn.n_deep_search,
                                    n_deep_research=syn.n_deep_research, seed=syn.seed)
    rl_ds, rl_dr = rl_task_pools(cfg, world)
    build_judge_dataset(cfg, world_dir, tmp_path / "judge")
    judged = {ex.sample_id for f in ("train.jsonl", "heldout.jsonl") for ex in read_examples(tmp_path / "judge" / f)}
    # the judge grades reports on training-side research tasks (the SFT's, and more with judge.n_tasks)
    _, judge_dr = training_tasks(world, syn, n_deep_search=0,
                                 n_deep_research=cfg.judge.n_tasks or syn.n_deep_research, seed=syn.seed)
    assert judged == {t.sample_id for t in judge_dr} and {t.sample_id for t in sft_dr} <= judged
    from deepresearch.search.backend import open_backend
    from deepresearch.synthesis.capabilities import build_tasks

    capability_tasks, _ = build_tasks(cfg, world, open_backend(cfg.search, world_dir))  # planning, subgraph, ...
    train = [*sft_ds, *sft_dr, *judge_dr, *rl_ds, *rl_dr, *(t for ts in capability_tasks.values() for t in ts)]
    assert rl_ds and rl_dr and all(capability_tasks.values())
    assert not {task_target(t) for t in train} & {task_target(t) for t in held}
    assert not {task_text(t) for t in train} & {task_text(t) for t in held}
    check_disjoint(train, held)
    with pytest.raises(SplitError, match="targets entity"):
        check_disjoint([held_ds[0]], held)


@requires_sandbox
def test_synthesis_stage_writes_training_tasks_only(small_cfg, small_world_dir, tmp_path):
    from deepresearch.synthesis.run import synthesize

    world = World.load(small_world_dir)
    synthesize(small_cfg, small_world_dir, tmp_path / "raw", progress=False)
    split = entity_split(world, fraction=small_cfg.synthesis.heldout_fraction, seed=small_cfg.synthesis.split_seed)
    rows = [json.loads(line) for name in ("deep_search", "deep_research")
            for line in (tmp_path / "raw" / name / "tasks.jsonl").read_text().splitlines()]
    targets = [r["path"][-1] if "path" in r else r["about"] for r in rows]
    assert len(rows) == small_cfg.synthesis.n_deep_search + small_cfg.synthesis.n_deep_research
    assert targets and not set(targets) & split.heldout


def test_too_few_distinct_tasks_is_an_error_not_a_repeat(small_world_dir, small_cfg):
    world = World.load(small_world_dir)
    few = entity_split(world, fraction=0.05, seed=0).heldout
    with pytest.raises(ValueError, match=r"distinct deep-search questions ending at the \d+ allowed target"):
        synthesize_deep_search(world, 500, min_hops=2, max_hops=3, seed=0, targets=few)
    ev = small_cfg.evaluation.model_copy(update={"n_deep_search": 1, "n_deep_research": 500})
    with pytest.raises(ValueError, match="can carry a research task, 500 asked; grow the world"):
        heldout_tasks(world, small_cfg.synthesis, ev)


def test_mid1_asks_reading_questions_about_training_entities_only(tiny):
    """mid1 reads every page of the world (held-out ones too, as a pretraining corpus would) but its
    reading questions target training-side entities only: the pages a question is asked over, the result
    it asks to pick and the entity it answers with."""
    import random
    import re

    from deepresearch.synthesis.reading import world_texts

    cfg, _, world = tiny
    split = entity_split(world, fraction=cfg.synthesis.heldout_fraction, seed=cfg.synthesis.split_seed)
    held_names = {world.entities[e].name for e in split.heldout}
    texts = list(world_texts(world, random.Random(0), ask_about=set(split.train)))
    assert len(texts) == sum(1 for d in world.documents.values() if d.about is not None)
    asked = [t for t in texts if "\nQ: " in t]
    assert len(asked) > len(texts) // 3
    for t in asked:
        body, answer = t.rsplit("\nA: ", 1)
        if "\nQ: Which result is about" in body:
            assert world.documents[answer].about in split.train
            continue
        opened = re.findall(r"^open: \[([^\]]+)\]", body, flags=re.MULTILINE)
        assert opened and all(world.documents[d].about in split.train for d in opened), t
        assert answer not in held_names
    read = " ".join(texts)
    assert all(world.primary_doc(e).doc_id in read for e in split.heldout)  # their pages are read
