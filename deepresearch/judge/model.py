"""The rubric judge: a Qwen2 sequence classifier, (report, rubric item) → satisfied / partially / not.

    model = build_judge_model(tokenizer, cfg.model)            # fresh, or judge_from_backbone(path)
    enc = [encode_judge_example(tokenizer, ex, max_len=512) for ex in examples]
    loss_sum, n = judge_loss_fn(model, collate_judge(enc, tokenizer.pad_token_id))
    judge = Judge(model, tokenizer, max_len=512)
    judge.label(report, task.rubrics)                          # ["satisfied", "not", ...]
    judge.reward(report, task.rubrics)                         # judge.reward.report_reward of those

Input text (one item at a time, as the paper's judge sees it):
    <rubric>{criterion}</rubric>\\n<report>{report}</report>[eos]
where (criterion, report) is `judge.evidence.judge_view` of the item and the report: the whole
report by default; with `evidence_lines` the headings and the lines that match the item, with
`mark_matches` shared and missing words marked (the tiny config uses both; README, "Rubric judge").
When it does not fit in `max_len` tokens, the report is cut from the left (its beginning goes)
and the criterion is always kept whole. The eos token is appended when it differs from the pad
token: the classifier reads the logits at the last non-pad token, so that token is the same
for every input. Label ids follow `LABELS`: satisfied 0, partially 1, not 2.

torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from deepresearch.io import atomic_dir
from deepresearch.judge.data import JudgeExample
from deepresearch.judge.evidence import judge_view
from deepresearch.judge.reward import report_reward
from deepresearch.synthesis.schema import LABELS, Label, RubricItem

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LABEL2ID: dict[str, int] = {lab: i for i, lab in enumerate(LABELS)}
JUDGE_META = "judge.json"


class BackboneSizes(Protocol):
    """What `build_judge_model` reads (deepresearch.config.ModelConfig has these fields)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rope_theta: float
    seed: int


# ---- model ---------------------------------------------------------------------------------------
def _label_config() -> dict[str, Any]:
    return {
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": dict(LABEL2ID),
        "problem_type": "single_label_classification",
    }


def build_judge_model(tokenizer: PreTrainedTokenizerBase, sizes: BackboneSizes) -> PreTrainedModel:
    """A randomly initialised Qwen2ForSequenceClassification (3 labels) sized like the policy.

    Args:
        tokenizer: gives the vocabulary size and the pad token id (required).
        sizes: backbone sizes, e.g. `cfg.model`; `sizes.seed` seeds the initialisation.
    Returns:
        The model (fp32, train mode off), `config.pad_token_id` set.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    if tokenizer.pad_token_id is None:
        raise ValueError("the judge's tokenizer needs a pad token (the classifier pools the last non-pad token)")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_key_value_heads,
        max_position_embeddings=sizes.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(sizes.rope_theta)},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=False,
        **_label_config(),
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(sizes.seed)
        model = Qwen2ForSequenceClassification(config)
    return model.eval()


def judge_from_backbone(path: str | Path, *, pad_token_id: int, seed: int = 0) -> PreTrainedModel:
    """A judge initialised from a policy checkpoint (a Hugging Face Qwen2 directory); the score head is new.

    Args:
        path: checkpoint directory (e.g. the SFT policy), loadable by transformers.
        pad_token_id: the tokenizer's pad token id.
        seed: seeds the new head's initialisation (the caller's RNG is left as it was), so that the same
            backbone and seed give the same judge in any process.
    """
    import torch
    from transformers import Qwen2ForSequenceClassification

    from deepresearch.console import fresh_head, quiet

    quiet()
    with fresh_head("score."), torch.random.fork_rng(devices=[]):  # the head's "MISSING" report is the point
        torch.manual_seed(seed)
        model = Qwen2ForSequenceClassification.from_pretrained(
            str(path), pad_token_id=pad_token_id, use_cache=False, **_label_config()
        )
    return model.eval()


# ---- encoding ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeEncoding:
    """One encoded (report, criterion) pair."""

    input_ids: tuple[int, ...]  # (T,) T ≤ max_len
    label: int  # LABEL2ID of the label, or -1 when unlabelled (prediction)


@dataclass(frozen=True)
class JudgeBatch:
    """A right-padded batch for the judge."""

    input_ids: torch.Tensor  # (B, T) int64, padded with pad_token_id
    attention_mask: torch.Tensor  # (B, T) int64, 1 on real tokens
    labels: torch.Tensor  # (B,) int64 label ids (-1 when unlabelled)

    def to(self, device: Any) -> "JudgeBatch":
        return JudgeBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def judge_text(criterion: str, report: str) -> str:
    """The judge's input text before tokenization (no truncation)."""
    return f"<rubric>{criterion}</rubric>\n<report>{report}</report>"


def encode_judge_input(
    tokenizer: PreTrainedTokenizerBase,
    criterion: str,
    report: str,
    max_len: int,
    *,
    evidence_lines: int = 0,
    mark_matches: bool = False,
) -> list[int]:
    """Token ids of `judge_text(*judge_view(criterion, report, ...))`, the report cut from the left to fit `max_len`.

    Args:
        evidence_lines, mark_matches: what the judge reads of the report (`judge.evidence.judge_view`);
            the defaults read it whole and unmarked.
    Raises:
        ValueError: if the criterion alone (with the tags) does not fit in `max_len`.
    """
    criterion, report = judge_view(criterion, report, evidence_lines=evidence_lines, mark_matches=mark_matches)
    prefix = tokenizer.encode(f"<rubric>{criterion}</rubric>\n<report>", add_special_tokens=False)
    suffix = tokenizer.encode("</report>", add_special_tokens=False)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos is not None and eos != pad:
        suffix = suffix + [eos]
    budget = max_len - len(prefix) - len(suffix)
    if budget < 0:
        raise ValueError(
            f"rubric criterion of {len(prefix)} tokens does not fit in judge.max_len={max_len} "
            f"(criterion: {criterion[:80]!r}...); raise judge.max_len"
        )
    body = tokenizer.encode(report, add_special_tokens=False) if budget else []
    if len(body) > budget:
        body = body[len(body) - budget :]  # keep the end of the report
    return prefix + body + suffix


def encode_judge_example(
    tokenizer: PreTrainedTokenizerBase, ex: JudgeExample, max_len: int, *, evidence_lines: int = 0, mark_matches: bool = False
) -> JudgeEncoding:
    """Encode a labelled example (see `encode_judge_input`)."""
    if ex.label not in LABEL2ID:
        raise ValueError(f"example {ex.report_id or ex.sample_id}: unknown label {ex.label!r}")
    ids = encode_judge_input(tokenizer, ex.criterion, ex.report, max_len,
                             evidence_lines=evidence_lines, mark_matches=mark_matches)
    return JudgeEncoding(tuple(ids), LABEL2ID[ex.label])


def collate_judge(encodings: Sequence[JudgeEncoding], pad_token_id: int) -> JudgeBatch:
    """Right-pad encodings into a JudgeBatch."""
    import torch

    if not encodings:
        raise ValueError("cannot collate an empty list of judge encodings")
    T = max(len(e.input_ids) for e in encodings)
    ids = torch.full((len(encodings), T), pad_token_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(encodings), T), dtype=torch.long)  # (B, T)
    for i, e in enumerate(encodings):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[i, : len(e.input_ids)] = 1
    labels = torch.tensor([e.label for e in encodings], dtype=torch.long)  # (B,)
    return JudgeBatch(ids, mask, labels)


# ---- loss and prediction -------------------------------------------------------------------------
def judge_loss_fn(model: torch.nn.Module, batch: JudgeBatch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch and the number of examples (a training-loop loss hook).

    The loop divides Σ loss_sum by Σ n over micro-batches (and ranks), so every example weighs the
    same however the batch is split.

    Args:
        model: a sequence classifier with `num_labels == 3`.
        batch: labels must all be valid ids (no -1).
    Returns:
        (loss_sum: scalar fp32 tensor, n: the batch size).
    """
    import torch.nn.functional as F

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, 3)
    loss_sum = F.cross_entropy(logits.float(), batch.labels, reduction="sum")
    return loss_sum, int(batch.labels.shape[0])


def predict(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    *,
    max_len: int = 512,
    batch_size: int = 16,
    evidence_lines: int = 0,
    mark_matches: bool = False,
) -> list[Label]:
    """Labels for (report, criterion) pairs: the argmax class, in input order.

    Args:
        model: the judge (its device is used; it is put in eval mode).
        tokenizer: the judge's tokenizer (pad token required).
        pairs: (report, criterion) tuples.
        max_len: token budget per input (see `encode_judge_input`).
        batch_size: inputs per forward pass.
        evidence_lines, mark_matches: what the judge reads of each report; as in training.
    """
    import torch

    if not pairs:
        return []
    device = next(model.parameters()).device
    model.eval()
    encs = [
        JudgeEncoding(tuple(encode_judge_input(tokenizer, c, r, max_len, evidence_lines=evidence_lines,
                                               mark_matches=mark_matches)), -1)
        for r, c in pairs
    ]
    # Batch inputs of similar length together; restore the input order at the end.
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].input_ids))
    out: list[Label | None] = [None] * len(encs)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = collate_judge([encs[i] for i in idx], tokenizer.pad_token_id).to(device)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, 3)
            for i, k in zip(idx, logits.argmax(-1).tolist()):
                out[i] = LABELS[k]
    return [lab for lab in out if lab is not None]


# ---- metrics -------------------------------------------------------------------------------------
def _check_labels(name: str, labels: Sequence[str]) -> None:
    bad = sorted({lab for lab in labels if lab not in LABEL2ID})
    if bad:
        raise ValueError(f"{name} has unknown labels {bad}; expected {', '.join(LABELS)}")


def confusion(y_true: Sequence[str], y_pred: Sequence[str]) -> list[list[int]]:
    """3×3 confusion matrix (`sklearn.metrics.confusion_matrix`): row = true label, column = predicted
    label, both in `LABELS` order."""
    from sklearn.metrics import confusion_matrix

    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    _check_labels("y_true", y_true)
    _check_labels("y_pred", y_pred)
    return confusion_matrix(list(y_true), list(y_pred), labels=list(LABELS)).tolist()


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 (`sklearn.metrics.f1_score`, average="macro") over the classes
    that occur in y_true or y_pred.

    F1_c = 2·TP / (2·TP + FP + FN); a class absent from both lists has no F1 and is skipped
    (so a perfect prediction scores 1.0 even when a class never occurs).
    """
    from sklearn.metrics import f1_score

    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    _check_labels("y_true", y_true)
    _check_labels("y_pred", y_pred)
    present = [lab for lab in LABELS if lab in set(y_true) | set(y_pred)]
    if not present:
        return 0.0
    return float(f1_score(list(y_true), list(y_pred), labels=present, average="macro", zero_division=0.0))


@dataclass(frozen=True)
class JudgeMetrics:
    """Agreement of the judge with ground-truth labels."""

    n: int
    accuracy: float
    macro_f1: float
    confusion: list[list[int]]  # rows true, columns predicted, LABELS order


def evaluate_judge(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[JudgeExample],
    *,
    max_len: int = 512,
    batch_size: int = 16,
    evidence_lines: int = 0,
    mark_matches: bool = False,
) -> JudgeMetrics:
    """Predict every example and compare with its label."""
    pred = predict(model, tokenizer, [(ex.report, ex.criterion) for ex in examples], max_len=max_len,
                   batch_size=batch_size, evidence_lines=evidence_lines, mark_matches=mark_matches)
    true = [ex.label for ex in examples]
    acc = sum(t == p for t, p in zip(true, pred)) / len(true) if true else 0.0
    return JudgeMetrics(len(true), acc, macro_f1(true, pred), confusion(true, pred))


# ---- the judge used for RL rewards and evaluation ------------------------------------------------
class Judge:
    """Labels a report's rubric items and turns the labels into the RL reward.

        judge = Judge.load("out/judge/model")
        labels = judge.label(report, task.rubrics)
        r = judge.reward(report, task.rubrics)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_len: int,
        batch_size: int = 16,
        evidence_lines: int = 0,
        mark_matches: bool = False,
    ):
        if tokenizer.pad_token_id is None:
            raise ValueError("the judge's tokenizer needs a pad token")
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        # what it reads of a report (judge.evidence.judge_view): saved with it, as it was trained
        self.evidence_lines = evidence_lines
        self.mark_matches = mark_matches

    def label_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Label]:
        """Labels for (report, criterion) pairs; batch many reports in one call."""
        return predict(self.model, self.tokenizer, pairs, max_len=self.max_len, batch_size=self.batch_size,
                       evidence_lines=self.evidence_lines, mark_matches=self.mark_matches)

    def label(self, report: str, items: Sequence[RubricItem]) -> list[Label]:
        """One label per rubric item (penalty items: "satisfied" = triggered)."""
        return self.label_pairs([(report, it.criterion) for it in items])

    def reward(self, report: str, items: Sequence[RubricItem]) -> float:
        """`report_reward` of the judge's labels (see judge.reward)."""
        return report_reward(self.label(report, items), [it.weight for it in items])

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write model, tokenizer, judge.json (labels, max_len, what it reads) and a model card (README.md)
        to `path`, replacing it atomically.

        Args:
            metadata: how it was trained, for the card (`model_card_text`: steps, config_hash,
                mlflow_run_id, data digests); its stage is "judge".
        """
        from deepresearch.console import quiet
        from deepresearch.modeling.checkpoint import model_card_text

        quiet()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            meta = {"max_len": self.max_len, "labels": list(LABELS), "evidence_lines": self.evidence_lines,
                    "mark_matches": self.mark_matches}
            (tmp / JUDGE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            info = {"num_parameters": sum(p.numel() for p in self.model.parameters()), "vocab_size": len(self.tokenizer),
                    "metadata": {**(metadata or {}), "stage": "judge", "labels": list(LABELS)}}
            (tmp / "README.md").write_text(model_card_text(info))
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", batch_size: int = 16) -> "Judge":
        """Load a directory written by `save` (or by the judge training stage, with a judge.json).

        A judge.json without `evidence_lines` / `mark_matches` (written before they existed) is a judge
        trained on whole, unmarked reports, and reads them so.
        """
        from transformers import AutoTokenizer, Qwen2ForSequenceClassification

        from deepresearch.console import quiet

        quiet()
        path = Path(path)
        meta_path = path / JUDGE_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} is not a judge directory: {JUDGE_META} is missing")
        meta = json.loads(meta_path.read_text())
        if meta.get("labels") != list(LABELS):
            raise ValueError(f"{meta_path}: labels {meta.get('labels')} differ from this code's {list(LABELS)}")
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = Qwen2ForSequenceClassification.from_pretrained(str(path)).to(device).eval()
        return cls(model, tokenizer, max_len=int(meta["max_len"]), batch_size=batch_size,
                   evidence_lines=int(meta.get("evidence_lines", 0)), mark_matches=bool(meta.get("mark_matches", False)))
