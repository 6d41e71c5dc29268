"""Packing, document-aware masks and the stage datasets (deepresearch.training.{packing,data}).

    uv run pytest tests/test_packing.py -q

The central check: a packed row of two documents gives the same logits (fp32, atol 1e-5) as each
document run alone, for sdpa and eager attention, so nothing attends across documents and positions
restart per document.
"""

from __future__ import annotations

import shutil

import pytest

from deepresearch.config import ModelConfig
from deepresearch.modeling.chat import EncodedSample

IGNORE = -100
SMALL_MODEL = ModelConfig(
    vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
)


def S(ids: list[int], mask: list[int]) -> EncodedSample:
    return EncodedSample(input_ids=ids, loss_mask=mask)


# ---- packing by hand ------------------------------------------------------------------------------


def test_pack_first_fit_decreasing_by_hand():
    from deepresearch.training.packing import pack

    a = S([1, 2, 3], [0, 1, 1])
    b = S([4, 5], [1, 1])
    c = S([6, 7, 8, 9], [0, 0, 1, 1])
    # Longest first: c opens row 0 (2 left); a (3) does not fit, opens row 1 (3 left); b (2) fills row 0.
    row0, row1 = pack([a, b, c], seq_len=6, pad_id=0)
    assert row0.input_ids.tolist() == [6, 7, 8, 9, 4, 5]
    # Labels aligned with input_ids (the loss shifts): c's 8 and 9 are targets; b's first token 4 is
    # not (so c's last token 9 never predicts it), b's 5 is.
    assert row0.labels.tolist() == [IGNORE, IGNORE, 8, 9, IGNORE, 5]
    assert row0.position_ids.tolist() == [0, 1, 2, 3, 0, 1]
    assert row0.segment_ids.tolist() == [1, 1, 1, 1, 2, 2]
    assert row1.input_ids.tolist() == [1, 2, 3, 0, 0, 0]
    assert row1.labels.tolist() == [IGNORE, 2, 3, IGNORE, IGNORE, IGNORE]
    assert row1.position_ids.tolist() == [0, 1, 2, 0, 1, 2]  # the padding run counts from 0 too
    assert row1.segment_ids.tolist() == [1, 1, 1, 0, 0, 0]


def test_long_samples_split_into_overlapping_chunks_with_each_target_once():
    from deepresearch.training.packing import pack, split_long

    doc = S(list(range(100, 110)), [1] * 10)
    chunks = split_long(doc, 4)
    assert [c.input_ids for c in chunks] == [[100, 101, 102, 103], [103, 104, 105, 106], [106, 107, 108, 109]]
    rows = pack([doc], seq_len=4, pad_id=0)
    assert [r.position_ids.tolist() for r in rows] == [[0, 1, 2, 3]] * 3  # each chunk is a document
    targets = sorted(t for r in rows for t in r.labels.tolist() if t != IGNORE)
    assert targets == list(range(101, 110))  # every token but the first predicted exactly once


def test_chunks_without_targets_are_dropped():
    from deepresearch.training.packing import pack

    prompt_only = S([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 1])  # first chunk [1,2,3,4] has no target
    rows = pack([prompt_only, S([7], [1])], seq_len=4, pad_id=0)
    assert [r.input_ids.tolist() for r in rows] == [[4, 5, 6, 0]]
    assert rows[0].labels.tolist() == [IGNORE, 5, 6, IGNORE]


def test_pack_is_deterministic_and_fills_rows():
    import random

    from deepresearch.training.packing import pack

    rng = random.Random(0)
    samples = [
        S([rng.randrange(1, 50) for _ in range(n)], [1] * n)
        for n in (rng.randrange(2, 30) for _ in range(60))
    ]
    a, b = pack(samples, 32, 0), pack(samples, 32, 0)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.input_ids.tolist() == y.input_ids.tolist() and x.labels.tolist() == y.labels.tolist()
    assert sum(len(s) for s in samples) <= 32 * len(a) < sum(len(s) for s in samples) + 32 * 4
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        pack(samples, 1, 0)


def test_collate_stacks_rows():
    from deepresearch.training.packing import collate, pack

    rows = pack([S([1, 2, 3], [1, 1, 1]), S([4, 5, 6], [1, 1, 1])], seq_len=4, pad_id=0)
    batch = collate(rows)
    assert batch.input_ids.shape == batch.labels.shape == batch.position_ids.shape == (2, 4)
    assert batch.n_targets == 4


def test_block_causal_mask_by_hand():
    import torch

    from deepresearch.training.packing import block_causal_mask

    mask = block_causal_mask(torch.tensor([[1, 1, 2, 2, 0]]))
    assert mask.shape == (1, 1, 5, 5) and mask.dtype == torch.float32
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],  # document 2 does not see document 1
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],  # padding sees only padding: no fully masked row
    ]
    assert mask[0, 0, 2, 0] == torch.finfo(torch.float32).min
    assert block_causal_mask(torch.tensor([[1, 0]]), dtype=torch.bfloat16).dtype == torch.bfloat16


# ---- packed logits == separate logits -------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    from deepresearch.modeling.model import build_tiny_model
    from deepresearch.modeling.tokenizer import train_tokenizer

    tok = train_tokenizer(["Widelt Company was founded in 1987 by Decae Pibosk."] * 4, SMALL_MODEL)
    return build_tiny_model(SMALL_MODEL, tok)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_document_alone(small_model, attn):
    import torch

    from deepresearch.training.packing import collate, forward_packed, pack

    small_model.set_attn_implementation(attn)
    gen = torch.Generator().manual_seed(0)
    vocab = small_model.config.vocab_size
    doc1 = torch.randint(0, vocab, (9,), generator=gen).tolist()
    doc2 = torch.randint(0, vocab, (6,), generator=gen).tolist()
    (row,) = pack([S(doc1, [1] * 9), S(doc2, [1] * 6)], seq_len=20, pad_id=0)
    assert row.segment_ids.tolist() == [1] * 9 + [2] * 6 + [0] * 5
    with torch.no_grad():
        packed = forward_packed(small_model, collate([row]))[0]  # (T, V)
        alone1 = small_model(input_ids=torch.tensor([doc1])).logits[0]  # (9, V)
        alone2 = small_model(input_ids=torch.tensor([doc2])).logits[0]  # (6, V)
        naive = small_model(input_ids=row.input_ids[None]).logits[0]  # no mask, no position reset
    torch.testing.assert_close(packed[:9], alone1, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed[9:15], alone2, atol=1e-5, rtol=0)
    assert torch.isfinite(packed).all()  # padding rows too
    # The shifted loss over the row is the sum of each document's own loss (8 + 5 targets).
    ce = torch.nn.functional.cross_entropy
    packed_loss = ce(packed[:-1], row.labels[1:], ignore_index=IGNORE, reduction="sum")
    separate = ce(alone1[:-1], torch.tensor(doc1[1:]), reduction="sum") + ce(
        alone2[:-1], torch.tensor(doc2[1:]), reduction="sum"
    )
    torch.testing.assert_close(packed_loss, separate, atol=1e-4, rtol=0)
    assert int((row.labels != IGNORE).sum()) == 8 + 5
    # The check has teeth: without the mask, document 2 sees document 1.
    assert not torch.allclose(naive[9:15], alone2, atol=1e-3)


def test_forward_packed_on_a_batch_of_rows(small_model):
    import torch

    from deepresearch.training.packing import collate, forward_packed, pack

    small_model.set_attn_implementation("sdpa")
    docs = [S(list(range(10 + i, 15 + 2 * i)), [1] * (5 + i)) for i in range(5)]
    rows = pack(docs, seq_len=16, pad_id=0)
    batch = collate(rows)
    with torch.no_grad():
        logits = forward_packed(small_model, batch)  # (B, T, V)
        for b, row in enumerate(rows):
            for seg in range(1, int(row.segment_ids.max()) + 1):
                pos = (row.segment_ids == seg).nonzero().flatten()
                alone = small_model(input_ids=row.input_ids[pos][None]).logits[0]
                torch.testing.assert_close(logits[b, pos], alone, atol=1e-5, rtol=0)


def test_rows_of_one_document_skip_the_mask_and_give_the_same_logits(small_model):
    import torch

    from deepresearch.training.packing import (
        block_causal_mask,
        collate,
        forward_packed,
        pack,
        single_document_rows,
    )

    small_model.set_attn_implementation("sdpa")
    gen = torch.Generator().manual_seed(1)
    long_doc = torch.randint(0, small_model.config.vocab_size, (30,), generator=gen).tolist()
    rows = pack([S(long_doc, [1] * 30)], seq_len=16, pad_id=0)  # a 16-token chunk, then 15 + padding
    assert [r.segment_ids.tolist() for r in rows] == [[1] * 16, [1] * 15 + [0]]
    batch = collate(rows)
    assert single_document_rows(batch.segment_ids)
    assert not single_document_rows(torch.tensor([[1, 1, 2, 0]]))  # two documents
    assert not single_document_rows(torch.tensor([[0, 1, 1, 1]]))  # not from position 0
    with torch.no_grad():
        fast = forward_packed(small_model, batch)  # no mask: causal attention
        masked = small_model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                             attention_mask=block_causal_mask(batch.segment_ids)).logits
    real = batch.segment_ids == 1
    torch.testing.assert_close(fast[real], masked[real], atol=1e-5, rtol=0)


# ---- stage datasets -------------------------------------------------------------------------------


# `data_dirs` (tests/conftest.py): the session's tiny world and its quality-gated datasets


@pytest.fixture(scope="session")
def tokenizer(data_dirs):
    from deepresearch.modeling.tokenizer import train_tokenizer
    from deepresearch.training.data import tokenizer_corpus

    return train_tokenizer(tokenizer_corpus(*data_dirs), ModelConfig(vocab_size=1024))


def test_tokenizer_corpus_is_documents_then_rendered_trajectories(data_dirs):
    from deepresearch.modeling.chat import render_messages
    from deepresearch.training.data import document_text, iter_documents, read_trajectories, tokenizer_corpus

    corpus = list(tokenizer_corpus(*data_dirs))
    assert corpus == list(tokenizer_corpus(*data_dirs))
    docs = list(iter_documents(data_dirs[0]))
    trajs = read_trajectories(data_dirs[1], "deep_search") + read_trajectories(data_dirs[1], "deep_research")
    assert corpus == [document_text(d) for d in docs] + [render_messages(t.messages) for t in trajs]
    assert corpus[0].startswith(docs[0].title + "\n\n" + docs[0].paragraphs[0])


def test_midtrain1_is_pages_read_and_reports_as_text(data_dirs, tokenizer):
    from deepresearch.agent.tools.web import render_page
    from deepresearch.training.data import final_report, iter_documents, midtrain1_samples, read_trajectories

    samples = midtrain1_samples(*data_dirs, tokenizer)
    assert [s.input_ids for s in samples] == [s.input_ids for s in midtrain1_samples(*data_dirs, tokenizer)]
    docs = [d for d in iter_documents(data_dirs[0]) if d.about is not None]
    reports = [final_report(t) for t in read_trajectories(data_dirs[1], "deep_research")]
    assert len(samples) == len(docs) + len(reports) and all(reports)
    texts = [tokenizer.decode(s.input_ids[:-1]) for s in samples[: len(docs)]]
    # every page is read once (whole, as the web tool renders it, or as a search hit to pick), and most
    # texts end with a question answered from them
    for d, text in zip(docs, texts):
        assert text.startswith(render_page(d)) or (text.startswith("search: ") and f"[{d.doc_id}]" in text)
    assert sum("\nQ: " in t for t in texts) > len(docs) / 2
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert all(s.input_ids[-1] == eot and all(s.loss_mask) for s in samples)
    assert tokenizer.decode(samples[-1].input_ids) == reports[-1] + "<|endoftext|>"
    assert "<tool_call>" not in "".join(tokenizer.decode(s.input_ids) for s in samples)


def test_midtrain2_is_every_trajectory_trained_on_all_but_the_system_prompt(data_dirs, tokenizer):
    from deepresearch.modeling.chat import encode_messages, failed_turns, to_chat_dicts
    from deepresearch.training.data import midtrain2_samples, read_trajectories

    trajs = read_trajectories(data_dirs[1], "deep_search") + read_trajectories(data_dirs[1], "deep_research")
    samples = midtrain2_samples(data_dirs[1], tokenizer)
    assert len(samples) == len(trajs)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for s, t in zip(samples, trajs):
        assert s.input_ids == tokenizer.apply_chat_template(
            to_chat_dicts(t.messages), tokenize=True, return_dict=False
        )
        system = encode_messages(tokenizer, t.messages[:1])
        assert sum(s.loss_mask[: len(system.input_ids)]) == 0  # the shared system prompt is never a target
        # every later turn is a target (user, tool results, assistant) except failed assistant turns
        # (consecutive tool results render as one turn)
        n_turns = sum(1 for i, m in enumerate(t.messages) if i > 0 and (m.role != "tool" or t.messages[i - 1].role != "tool"))
        n_trained = n_turns - len(failed_turns(t.messages))
        assert sum(1 for i, m in zip(s.input_ids, s.loss_mask) if m and i == im_end) == n_trained


def test_midtrain2_without_observation_loss_trains_the_assistant_turns_only(data_dirs, tokenizer):
    from deepresearch.config import ConfigError, load_config
    from deepresearch.modeling.chat import encode_messages
    from deepresearch.training.data import midtrain2_samples, read_trajectories

    trajs = read_trajectories(data_dirs[1], "deep_search") + read_trajectories(data_dirs[1], "deep_research")
    whole = midtrain2_samples(data_dirs[1], tokenizer)
    turns = midtrain2_samples(data_dirs[1], tokenizer, observation_loss=False)
    for w, a, t in zip(whole, turns, trajs):
        assert a.input_ids == w.input_ids and a.loss_mask == encode_messages(tokenizer, t.messages, mask_failed_turns=True).loss_mask
        assert sum(a.loss_mask) < sum(w.loss_mask)
    # the config: mid2 trains on observations unless told not to (tiny.yaml: measured, it does not); SFT
    # and mid1 never do
    assert load_config("configs/paper.yaml").training.observation_loss("mid2")
    assert not load_config(None).training.observation_loss("mid2")
    assert not load_config("configs/paper.yaml").training.observation_loss("sft")
    with pytest.raises(ConfigError, match="only mid2 trains on tool observations"):
        load_config(None, ["training.sft.observation_loss=true"])


def test_sft_mix_counts_by_hand():
    from deepresearch.training.data import sft_mix_counts

    assert sft_mix_counts(10, 4, 0.5) == (4, 4)
    assert sft_mix_counts(10, 4, 0.75) == (10, 3)  # at most 13.3 rows: 10 Deep Search + 3
    assert sft_mix_counts(3, 10, 0.5) == (3, 3)
    assert sft_mix_counts(10, 4, 0.0) == (0, 4)
    assert sft_mix_counts(10, 4, 1.0) == (10, 0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sft_mix_counts(1, 1, 1.5)


def test_sft_samples_mix_by_ratio_deterministically(data_dirs, tokenizer, tmp_path):
    from deepresearch.training.data import TrainingDataError, read_trajectories, sft_samples

    n_ds = len(read_trajectories(data_dirs[1], "deep_search"))
    n_dr = len(read_trajectories(data_dirs[1], "deep_research"))
    assert (n_ds, n_dr) == (6, 4)  # SMALL's 6 and 4 tasks, one attempt each, all kept by the gates
    half = sft_samples(data_dirs[1], tokenizer, deep_search_ratio=0.5, seed=0)
    assert len(half) == 8  # 4 + 4
    again = sft_samples(data_dirs[1], tokenizer, deep_search_ratio=0.5, seed=0)
    assert [s.input_ids for s in half] == [s.input_ids for s in again]
    other = sft_samples(data_dirs[1], tokenizer, deep_search_ratio=0.5, seed=1)
    assert [s.input_ids for s in half] != [s.input_ids for s in other]
    assert len(sft_samples(data_dirs[1], tokenizer, deep_search_ratio=0.0, seed=0)) == n_dr

    no_search = tmp_path / "datasets"
    shutil.copytree(data_dirs[1], no_search)
    (no_search / "deep_search" / "trajectories.jsonl").write_text("")
    with pytest.raises(TrainingDataError, match="SFT mix is empty: deep_search_ratio=1.0"):
        sft_samples(no_search, tokenizer, deep_search_ratio=1.0, seed=0)


def test_missing_or_malformed_datasets_are_named(data_dirs, tmp_path):
    from deepresearch.errors import WorldError
    from deepresearch.training.data import TrainingDataError, iter_documents, read_trajectories

    with pytest.raises(TrainingDataError, match=r"expected the quality-gated layout DATASETS/\{deep_search"):
        read_trajectories(tmp_path, "deep_search")
    (tmp_path / "deep_search").mkdir()
    (tmp_path / "deep_search" / "trajectories.jsonl").write_text('{"trajectory_id": "t"}\n')
    with pytest.raises(TrainingDataError, match=r"trajectories.jsonl:1: malformed Trajectory"):
        read_trajectories(tmp_path, "deep_search")
    with pytest.raises(WorldError, match="documents.jsonl missing"):
        next(iter_documents(tmp_path))


# ---- resumable order ------------------------------------------------------------------------------


def _dataset(n_rows: int, seed: int):
    from deepresearch.training.data import PackedDataset

    # One sample per row: 7 tokens in rows of 8, row r's tokens all equal to r + 1.
    samples = [S([r + 1] * 7, [1] * 7) for r in range(n_rows)]
    return PackedDataset.from_samples(samples, seq_len=8, pad_id=0, seed=seed)


def test_packed_dataset_order_is_a_function_of_seed_and_epoch():
    data = _dataset(10, seed=3)
    assert sorted(data.epoch_order(0)) == list(range(10))
    assert data.epoch_order(0) == _dataset(10, seed=3).epoch_order(0)
    assert data.epoch_order(0) != data.epoch_order(1)
    assert data.epoch_order(0) != _dataset(10, seed=4).epoch_order(0)


def test_steps_cover_each_epoch_exactly_once_across_ranks_and_micro_steps():
    data = _dataset(10, seed=0)
    kw = dict(world_size=2, micro_batch_size=2, grad_accum_steps=2)  # 8 rows per step
    seen = [
        i
        for step in range(5)  # 40 rows = 4 epochs, steps straddling epoch boundaries
        for micro in range(2)
        for rank in range(2)
        for i in data.indices(step, rank=rank, micro_step=micro, **kw)
    ]
    for epoch in range(4):
        assert seen[10 * epoch : 10 * epoch + 10] == data.epoch_order(epoch)
    assert data.epoch_at(5, **kw) == 4.0
    with pytest.raises(ValueError, match="rank 2 is outside"):
        data.indices(0, rank=2, world_size=2, micro_batch_size=1)


def test_resuming_at_step_n_gives_exactly_the_remaining_batches():
    import torch

    kw = dict(rank=1, world_size=2, micro_batch_size=3, grad_accum_steps=2)
    full = [(s, [b.input_ids for b in mbs]) for s, mbs in _dataset(7, seed=5).iter_steps(0, 9, **kw)]
    resumed = [(s, [b.input_ids for b in mbs]) for s, mbs in _dataset(7, seed=5).iter_steps(4, 9, **kw)]
    assert [s for s, _ in resumed] == [4, 5, 6, 7, 8]
    for (s1, a), (s2, b) in zip(full[4:], resumed):
        assert s1 == s2 and all(torch.equal(x, y) for x, y in zip(a, b))
    # The batch holds the rows its indices name.
    data = _dataset(7, seed=5)
    batch = data.batch(2, micro_step=1, **kw)
    idx = data.indices(2, micro_step=1, **kw)
    assert batch.input_ids.shape == (3, 8)
    assert batch.input_ids[:, 0].tolist() == [i + 1 for i in idx]


def test_batch_at_is_the_same_schedule_for_the_training_loop():
    import torch

    from deepresearch.training.data import PackedDataset

    samples = [S([r + 1] * 7, [1] * 7) for r in range(9)]
    data = PackedDataset.from_samples(samples, seq_len=8, pad_id=0, seed=2, micro_batch_size=2)
    G = 3  # grad_accum_steps: training.loop asks for micro-batch index = step * G + m
    for step in range(4):
        for m in range(G):
            for rank in range(2):
                a = data.batch_at(step * G + m, rank, 2)
                b = data.batch(
                    step, rank=rank, world_size=2, micro_batch_size=2, grad_accum_steps=G, micro_step=m
                )
                b = b.trimmed()  # batch_at leaves out the columns that are padding in every row
                assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


def test_unpacked_rows_are_trimmed_to_their_document_and_score_the_same():
    """pack_documents=False gives one document per row; batch_at cuts the padding every row shares, and
    the loss over the cut batch equals the loss over the padded one (padding is never a target)."""
    import torch

    from deepresearch.training.data import PackedDataset
    from deepresearch.training.loop import lm_loss_sum

    samples = [S(list(range(1, n + 1)), [1] * n) for n in (5, 9, 3)]
    data = PackedDataset.from_samples(samples, seq_len=12, pad_id=0, seed=0, micro_batch_size=1,
                                      pack_documents=False)
    assert len(data) == 3 and bool((data.segment_ids.max(dim=1).values == 1).all())  # one document per row
    widths = sorted(data.batch_at(i, 0, 1).input_ids.shape[1] for i in range(3))
    assert widths == [3, 5, 9]
    full = data.batch(0, rank=0, world_size=1, micro_batch_size=1)
    cut = data.batch_at(0, 0, 1)
    torch.manual_seed(0)
    logits = torch.randn(1, full.input_ids.shape[1], 16)
    assert torch.allclose(lm_loss_sum(logits, full)[0], lm_loss_sum(logits[:, : cut.input_ids.shape[1]], cut)[0])
