"""Teacher-forced next-action probe: at each expert turn, does the model's greedy choice match the expert's?

    scores = next_action_probe(model, tokenizer, expert_trajectories)
    scores["search"].accuracy   # share of search calls whose query the model would write exactly

For every assistant turn of held-out expert trajectories, the model reads the expert's own prefix (the
conversation up to and including the text before a span) and is scored on spans of the turn: its
thought, each tool name, each call's arguments, the final answer and the whole turn. A span counts as
correct when the model's argmax equals the expert's token at every one of its positions, which is exactly
when greedy decoding from the same prefix would write that span. One forward pass per trajectory scores
every span of it, so the probe costs a fraction of a free-running evaluation and shows *where* a
checkpoint fails: which tool, which argument (the entity to search, the doc id copied from a result),
the answer. Failed turns of the data (injected tool errors) are skipped, as training skips them.

Span kinds (`KINDS`): `thought` (text before the first call), `tool` (a call's function name), `plan`
(arguments of todo add), `todo` (other todo arguments), `search` and `open` (batch_web_surfer arguments),
`file`, `shell`, `answer` (inside `<answer>`), and `turn` (the whole turn through `<|im_end|>`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepresearch.agent.schema import ANSWER_RE

if TYPE_CHECKING:
    from deepresearch.agent.schema import Trajectory

KINDS = ("thought", "tool", "plan", "todo", "search", "open", "file", "shell", "answer", "turn")
_NAME_RE = re.compile(r'^\{"name": "([^"]*)", "arguments": ')
# Calls as `ToolCall.render` writes them; only expert turns (well-formed by construction) are scanned.
_CALL_RE = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ProbeScore:
    """Exact-span accuracy of one kind."""

    kind: str
    n: int  # spans scored
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


def turn_spans(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) character spans of one assistant turn worth scoring (see the module docstring)."""
    spans: list[tuple[str, int, int]] = []
    first = min([m.start() for m in _CALL_RE.finditer(text)] + [m.start() for m in ANSWER_RE.finditer(text)]
                + [len(text)])
    thought = text[:first].rstrip()
    if thought.strip():
        spans.append(("thought", len(text[:first]) - len(text[:first].lstrip()), len(thought)))
    for m in _CALL_RE.finditer(text):
        body, at = m.group(1), m.start(1)
        named = _NAME_RE.match(body)
        if named is None or not body.endswith("}"):
            continue  # not the rendering of ToolCall.render: nothing to align arguments with
        name = named.group(1)
        spans.append(("tool", at + named.start(1), at + named.end(1)))
        args_start, args_end = at + named.end(), at + len(body) - 1
        try:
            args = json.loads(text[args_start:args_end])
        except json.JSONDecodeError:
            continue
        if name == "todo":
            kind = "plan" if isinstance(args, dict) and args.get("action") == "add" else "todo"
        elif name == "batch_web_surfer":
            kind = "open" if isinstance(args, dict) and args.get("open") and not args.get("search") else "search"
        else:
            kind = name if name in ("file", "shell") else "todo"
        spans.append((kind, args_start, args_end))
    for m in ANSWER_RE.finditer(text):
        spans.append(("answer", m.start(1), m.end(1)))
    return spans


def next_action_probe(
    model: Any, tokenizer: Any, trajectories: Sequence[Trajectory], *, max_tokens: int | None = None
) -> dict[str, ProbeScore]:
    """Score `model` on every span of every trainable assistant turn of `trajectories`.

    Args:
        model: a causal LM (HF) on CPU or GPU, in eval mode.
        tokenizer: its tokenizer (the chat template of `deepresearch.modeling.chat`).
        trajectories: expert trajectories the model was not trained on.
        max_tokens: a trajectory longer than this is cut (its later turns are not scored);
            default the model's context length.
    Returns:
        kind → ProbeScore, for every kind in `KINDS` (n = 0 where the trajectories have none).
    """
    import torch

    from deepresearch.modeling.chat import encode_assistant_spans

    limit = max_tokens or getattr(model.config, "max_position_embeddings", 1 << 30)
    device = next(model.parameters()).device
    n = {k: 0 for k in KINDS}
    ok = {k: 0 for k in KINDS}
    for traj in trajectories:
        sample, spans = encode_assistant_spans(tokenizer, traj.messages)
        ids = sample.input_ids[:limit]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]  # (T, V)
        # hit[t] for t >= 1: the model's argmax after ids[:t] is ids[t]
        hit = torch.ones(len(ids), dtype=torch.bool)
        hit[1:] = (logits[:-1].argmax(-1) == torch.tensor(ids[1:], device=device)).cpu()
        for span in spans:
            if not span.trainable:
                continue
            end = span.start + len(span.offsets)
            if end > len(ids):
                break
            text = traj.messages[span.message_index].content
            scored = [*turn_spans(text), ("turn", 0, len(text) + 1)]  # +1 reaches <|im_end|>
            for kind, a, b in scored:
                positions = [span.start + j for j, (s, e) in enumerate(span.offsets) if s < b and e > a]
                if not positions:
                    continue
                n[kind] += 1
                ok[kind] += int(bool(hit[positions].all()))
    return {k: ProbeScore(k, n[k], ok[k]) for k in KINDS}


def combine(scores: Sequence[dict[str, ProbeScore]]) -> dict[str, ProbeScore]:
    """Kind-wise sums of several probe results (e.g. deep search and deep research together)."""
    return {k: ProbeScore(k, sum(s[k].n for s in scores), sum(s[k].correct for s in scores)) for k in KINDS}


def probe_rows(scores: dict[str, dict[str, ProbeScore]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the probe table: one row per checkpoint, one column per kind that has spans."""
    kinds = [k for k in KINDS if any(s[k].n for s in scores.values())]
    rows = [[name, *(f"{100 * s[k].accuracy:.0f} %" if s[k].n else "—" for k in kinds)] for name, s in scores.items()]
    return ["checkpoint", *kinds], rows


def probe_table(scores: dict[str, dict[str, ProbeScore]]) -> str:
    """A markdown table: one row per checkpoint, one column per kind that has spans, accuracy in %."""
    header, rows = probe_rows(scores)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
