"""Sequence packing with document-aware masks: many short samples per fixed-length row, no attention
or loss across document boundaries.

    seqs = pack(samples, seq_len=cfg.training.sft.seq_len, pad_id=tokenizer.pad_token_id)
    batch = collate(seqs[:4])
    logits = forward_packed(model, batch)                      # (B, T, V)
    loss = cross_entropy(logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)

Packing is first-fit-decreasing over samples (longest first, ties in input order), so it is a pure
function of its input. A sample longer than `seq_len` is cut into chunks of `seq_len` tokens that
overlap by one token, so every target of the sample is predicted exactly once; each chunk is its own
document (positions restart at 0).

Labels follow the Hugging Face convention: aligned with `input_ids`, shifted by the loss (the logits
at t predict `labels[t + 1]`), as transformers' own `model(labels=...)` loss and
`deepresearch.training.loop.lm_loss_sum` do. `labels[t]` is `input_ids[t]` when token t is a target
(loss_mask 1), else -100. The first token of every document is -100 (nothing in its row predicts
it), so the last token of a document never predicts the next document's first token; padding is -100.

The attention mask is causal AND same-segment, as an additive float (B, 1, T, T) mask (0 = attend,
dtype-min = blocked). transformers 5 passes a 4D mask through unchanged (`masking_utils.
_preprocess_mask_arguments` returns early for 4D tensors); the eager kernel *adds* it to the scores
and sdpa takes a float mask as additive, so the float form is correct for both (a bool mask would be
added as 0/1 by eager). Padding is a segment of its own (id 0): real tokens never see it, and each
padding row attends to earlier padding, so no row is fully masked (no NaN). When every row of a batch
holds a single document from its first position (then only padding), plain causal attention is the
same thing for every real token, so `forward_packed` passes no mask and lets the kernel run causal
attention without materializing (B, 1, T, T): most rows are like that when long trajectories are cut
into `seq_len` chunks, and at long context the mask is a large part of the cost on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepresearch.modeling.chat import EncodedSample

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PackedSequence:
    """One packed row of `seq_len` tokens."""

    input_ids: torch.Tensor  # (T,) long token ids; padding = pad_id
    labels: torch.Tensor  # (T,) long input_ids where the token is a target, else IGNORE_INDEX (HF-aligned)
    position_ids: torch.Tensor  # (T,) long, restarting at 0 for every document (and for the padding run)
    segment_ids: torch.Tensor  # (T,) long, 1..n per document, 0 for padding


@dataclass(frozen=True)
class PackedBatch:
    """A micro-batch of packed rows."""

    input_ids: torch.Tensor  # (B, T) long token ids
    labels: (
        torch.Tensor
    )  # (B, T) long targets aligned with input_ids (logits at t predict t + 1), else IGNORE_INDEX
    position_ids: torch.Tensor  # (B, T) long positions within each document
    segment_ids: torch.Tensor  # (B, T) long document index in the row, 0 for padding

    @property
    def n_targets(self) -> int:
        """Number of positions with a loss target (for token-weighted averaging across ranks)."""
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> "PackedBatch":
        """The same batch on `device`."""
        return PackedBatch(
            *(t.to(device) for t in (self.input_ids, self.labels, self.position_ids, self.segment_ids))
        )

    def trimmed(self) -> "PackedBatch":
        """The batch without the columns that are padding in every row (trailing ones only).

        Rows of one document each (`pack(..., pack_documents=False)`) then cost their own length, not
        `seq_len`: attention is quadratic, so padding to a fixed length is the dearest compute there is.
        Logits and losses of the kept positions are unchanged (padding is never attended to or scored).
        """
        used = (self.segment_ids != 0).any(dim=0)  # (T,)
        n = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
        if n == self.input_ids.shape[1]:
            return self
        return PackedBatch(*(t[:, :n] for t in (self.input_ids, self.labels, self.position_ids, self.segment_ids)))


def split_long(sample: EncodedSample, seq_len: int) -> list[EncodedSample]:
    """Cut a sample into chunks of at most `seq_len` tokens overlapping by one token.

    Chunk k starts at k * (seq_len - 1): its first token is the previous chunk's last, which there
    was a target, and here is only context. A sample that fits is returned as is.

    Args:
        sample: the document.
        seq_len: the packed row length (>= 2).
    Returns:
        The chunks, in order.
    """
    n = len(sample)
    if n <= seq_len:
        return [sample]
    stride = seq_len - 1
    chunks = []
    for start in range(0, n - 1, stride):
        end = min(start + seq_len, n)
        chunks.append(EncodedSample(sample.input_ids[start:end], sample.loss_mask[start:end]))
        if end == n:
            break
    return chunks


class _FirstFit:
    """Bins of equal capacity; `place(size)` returns the lowest-index bin with room (a max segment tree)."""

    def __init__(self, n_bins: int, capacity: int):
        self.size = 1
        while self.size < max(1, n_bins):
            self.size *= 2
        self.tree = [capacity] * (2 * self.size)  # unopened bins are empty bins to the right

    def place(self, need: int) -> int:
        node = 1
        while node < self.size:
            node = 2 * node if self.tree[2 * node] >= need else 2 * node + 1
        self.tree[node] -= need
        leaf = node - self.size
        node //= 2
        while node:
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])
            node //= 2
        return leaf


def _row(docs: list[EncodedSample], seq_len: int, pad_id: int) -> PackedSequence:
    import torch

    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    segment_ids: list[int] = []
    for seg, doc in enumerate(docs, start=1):
        n = len(doc)
        input_ids += doc.input_ids
        labels.append(IGNORE_INDEX)  # a document's first token: nothing in this row predicts it
        labels += [tok if m else IGNORE_INDEX for tok, m in zip(doc.input_ids[1:], doc.loss_mask[1:])]
        position_ids += range(n)
        segment_ids += [seg] * n
    n_pad = seq_len - len(input_ids)
    input_ids += [pad_id] * n_pad
    labels += [IGNORE_INDEX] * n_pad
    position_ids += range(n_pad)
    segment_ids += [0] * n_pad
    return PackedSequence(
        input_ids=torch.tensor(input_ids, dtype=torch.long),  # (T,)
        labels=torch.tensor(labels, dtype=torch.long),  # (T,)
        position_ids=torch.tensor(position_ids, dtype=torch.long),  # (T,)
        segment_ids=torch.tensor(segment_ids, dtype=torch.long),  # (T,)
    )


def pack(
    samples: Sequence[EncodedSample], seq_len: int, pad_id: int, *, pack_documents: bool = True
) -> list[PackedSequence]:
    """Pack samples into rows of exactly `seq_len` tokens, first-fit-decreasing.

    Samples longer than `seq_len` are split first (`split_long`); chunks without a single loss target
    (e.g. a stretch of tool output) are dropped, since they would only cost compute.

    Args:
        samples: encoded documents, in a deterministic order.
        seq_len: tokens per row (>= 2).
        pad_id: token id of padding (its labels are IGNORE_INDEX whatever it is).
        pack_documents: False puts every chunk in a row of its own (padded; see `PackedBatch.trimmed`):
            for long documents of varied length, where a shared row would pay full-length attention.
    Returns:
        The rows, in the order their bins were opened; within a row, documents in placement order.
    """
    if seq_len < 2:
        raise ValueError(f"pack: seq_len must be >= 2 (one token and its target), got {seq_len}")
    chunks = [c for s in samples for c in split_long(s, seq_len) if c.n_targets > 0]
    if not pack_documents:
        return [_row([c], seq_len, pad_id) for c in chunks]
    order = sorted(range(len(chunks)), key=lambda i: (-len(chunks[i]), i))
    bins = _FirstFit(len(chunks), seq_len)
    rows: list[list[EncodedSample]] = []
    for i in order:
        b = bins.place(len(chunks[i]))
        if b == len(rows):
            rows.append([])
        rows[b].append(chunks[i])
    return [_row(docs, seq_len, pad_id) for docs in rows]


def collate(seqs: Sequence[PackedSequence]) -> PackedBatch:
    """Stack packed rows into a batch.

    Args:
        seqs: rows of equal length.
    Returns:
        The PackedBatch, (B, T) per field.
    """
    import torch

    if not seqs:
        raise ValueError("collate: no sequences")
    return PackedBatch(
        input_ids=torch.stack([s.input_ids for s in seqs]),  # (B, T)
        labels=torch.stack([s.labels for s in seqs]),  # (B, T)
        position_ids=torch.stack([s.position_ids for s in seqs]),  # (B, T)
        segment_ids=torch.stack([s.segment_ids for s in seqs]),  # (B, T)
    )


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Additive attention mask: query t sees key s iff s <= t and both are in the same segment.

    Args:
        segment_ids: (B, T) document index per position, 0 for padding.
        dtype: float dtype of the mask (the model's; default float32).
    Returns:
        (B, 1, T, T) float mask, 0 where attention is allowed and `finfo(dtype).min` where it is not.
    """
    import torch

    dtype = dtype or torch.float32
    T = segment_ids.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()  # (T, T)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T, T)
    allowed = (same & causal)[:, None]  # (B, 1, T, T)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)  # (B, 1, T, T)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def single_document_rows(segment_ids: torch.Tensor) -> bool:
    """True when every row is one document starting at position 0, followed by padding only."""
    return bool(
        (segment_ids[:, 0] == 1).all()
        and (segment_ids <= 1).all()
        and (segment_ids[:, 1:] <= segment_ids[:, :-1]).all()
    )


def forward_packed(model: PreTrainedModel, batch: PackedBatch) -> torch.Tensor:
    """Logits of a packed batch, documents isolated by `block_causal_mask` and per-document positions.

    With flash-attention kernels (which take no 4D mask) the mask is left out and transformers derives
    the document boundaries from the restarting `position_ids` (variable-length flash attention).

    Args:
        model: a causal LM (eager or sdpa attention on CPU; any on GPU), or a DeepSpeed engine around one.
        batch: the packed batch (moved to the model's device here).
    Returns:
        (B, T, V) logits; the logits at t score `batch.labels[:, t + 1]`.
    """
    param = next(model.parameters())
    batch = batch.to(param.device)
    # A DeepSpeed engine forwards attribute lookups to its module; read the config from either.
    config = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    if str(getattr(config, "_attn_implementation", "")).startswith("flash") or single_document_rows(batch.segment_ids):
        mask = None  # flash: boundaries from position_ids; one document per row: plain causal is exact
    else:
        mask = block_causal_mask(batch.segment_ids, dtype=param.dtype)  # (B, 1, T, T)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    return out.logits
