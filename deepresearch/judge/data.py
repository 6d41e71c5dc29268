"""Judge training data: reports of controlled quality, labelled per rubric item by construction.

    world = World.load(Path("out/world"))
    tasks = synthesize_research(world, 20, seed=11)
    examples = judge_examples(world, tasks, reports_per_task=4, seed=0)
    train, heldout = split_by_task(examples, heldout_fraction=0.2, seed=0)
    write_examples(Path("out/judge/train.jsonl"), train)

or, as one stage: `build_judge_dataset(cfg, world_dir, out_dir)` writes
    out_dir/train.jsonl  out_dir/heldout.jsonl  out_dir/manifest.json (class balance, agreement)

How a report of controlled quality is made. `expert_report` writes what the scripted expert
writes (the same sections and sentences as `ScriptedExpert._research`, built straight from the
world, without running an episode: deterministic and fast). Variant 0 of a task is that report;
variant v > 0 applies seeded corruptions, more of them as v grows (severity v / reports_per_task):

    omit       every line that states a fact's value is dropped            → fact "not"
    uncite     the \\cite{} of every line stating the value is removed      → fact "partially"
    wrong      the value is replaced by a wrong one (shifted number, or
               another entity's value / name of the same kind)              → fact "not"
    stale      the low-authority value is asserted as fact in place of the
               correct one and its verification note is dropped             → penalty "satisfied"
                                                                              (triggered), fact "not",
                                                                              conflict "not"
    reject     the verification note names the stale value only to reject
               it, without the authoritative one                            → conflict "partially"
    headings   all but 0-2 section headings removed (content kept)          → structure "not"/"partially"
    uncite_all every citation removed                                       → citation "not"

Each corruption records the label it intends for the items it targets (`ReportVariant.intended`);
the label written to the data is always the ground truth `check_label(item.check, report)`, and
the manifest reports how often the two agree (1.0 on the synthetic worlds; a test checks it).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from deepresearch.io import atomic_dir, atomic_write_text, file_sha256
from deepresearch.synthesis.phrasing import (
    REFUTATION_MARKERS,
)
from deepresearch.synthesis.report import plan_report, render_report
from deepresearch.synthesis.rubrics import check_label
from deepresearch.synthesis.schema import LABELS, Label, ResearchTask
from deepresearch.world.schema import World

if TYPE_CHECKING:
    from deepresearch.config import PipelineConfig

JUDGE_DATA_SCHEMA_VERSION = 1
# the directory's two datasets, as MLflow records them (name → file): what the judge trains on, what it is scored on
JUDGE_FILES = {"judge_train": "train.jsonl", "judge_heldout": "heldout.jsonl"}
_CITE_RE = re.compile(r"\s*\\cite\{[^}]*\}")


class JudgeExample(BaseModel):
    """One (report, rubric item) pair with its ground-truth label (penalties: satisfied = triggered)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_id: str  # the research task; the train/held-out split is by this id
    report: str
    criterion: str
    axis: str
    weight: float  # negative = penalty item
    label: Label
    report_id: str = ""  # "<sample_id>/v<variant>": groups the items of one report (for rewards)


@dataclass(frozen=True)
class ReportVariant:
    """A report of controlled quality for one task, with what its corruptions meant to do."""

    sample_id: str
    variant: int  # 0 = the expert report
    report: str
    corruptions: tuple[str, ...]  # e.g. ("omit:3", "headings:1")
    intended: dict[int, Label] = field(default_factory=dict)  # rubric item index -> intended label

    @property
    def report_id(self) -> str:
        return f"{self.sample_id}/v{self.variant}"


# ---- the expert report ---------------------------------------------------------------------------
def expert_report(world: World, entity_id: str) -> str:
    """The report the scripted expert writes about `entity_id` (deepresearch.synthesis.report), with the
    entity's highest-authority page as reference (the expert picks it from search results, which rank it first).

    Args:
        world: the research world.
        entity_id: the entity the report is about (`ResearchTask.about`).
    Returns:
        Markdown: title, Overview, Key facts, Relations, Source verification, References.
    """
    return render_report(plan_report(world, entity_id))


# ---- corruptions (pure functions over report lines) ---------------------------------------------
def _mentions(line: str, values: Iterable[str]) -> bool:
    """Whole-token, case-insensitive match, as `synthesis.rubrics` matches values."""
    return any(re.search(rf"(?<![\w]){re.escape(v)}(?![\w])", line, flags=re.IGNORECASE) for v in values)


def _replace(line: str, values: Sequence[str], new: str) -> str:
    # Longest spelling first so "4,200" is replaced whole before "4200" is tried.
    for v in sorted(values, key=len, reverse=True):
        line = re.sub(rf"(?<![\w]){re.escape(v)}(?![\w])", new.replace("\\", r"\\"), line, flags=re.IGNORECASE)
    return line


def _is_refuting(line: str) -> bool:
    return any(m in line.lower() for m in REFUTATION_MARKERS)


def omit_value(lines: list[str], values: Sequence[str]) -> list[str]:
    """Drop every line that mentions one of `values` (headings are kept)."""
    return [ln for ln in lines if ln.lstrip().startswith("#") or not _mentions(ln, values)]


def uncite_value(lines: list[str], values: Sequence[str]) -> list[str]:
    """Remove the citations of every line that mentions one of `values`."""
    return [_CITE_RE.sub("", ln) if _mentions(ln, values) else ln for ln in lines]


def replace_value(lines: list[str], values: Sequence[str], new: str) -> list[str]:
    """Replace every mention of `values` by `new` (a wrong value asserted with the same citations)."""
    return [_replace(ln, values, new) if _mentions(ln, values) else ln for ln in lines]


def assert_stale(lines: list[str], correct: Sequence[str], stale: str) -> list[str]:
    """Drop the verification notes on the attribute, then assert `stale` wherever the correct value was.

    Every note that rejects a value in favour of `correct` (or rejects `stale`) goes: a report that
    asserts the stale value has not verified that attribute against any source.
    """
    kept = [ln for ln in lines if not (_is_refuting(ln) and _mentions(ln, [stale, *correct]))]
    return replace_value(kept, correct, stale)


def reject_only(lines: list[str], stale: str, correct: Sequence[str]) -> list[str]:
    """Verification notes on `stale` keep the rejection but lose the authoritative value."""
    out = []
    for ln in lines:
        if _mentions(ln, [stale]) and _is_refuting(ln) and _mentions(ln, correct):
            ln = ln.split(", which", 1)[0] + ", which is outdated and not used."
        out.append(ln)
    return out


def strip_headings(lines: list[str], keep: int) -> list[str]:
    """Keep the title and the first `keep` section headings ("## "); later headings are removed."""
    out, seen = [], 0
    for ln in lines:
        if ln.startswith("## "):
            seen += 1
            if seen > keep:
                continue
        out.append(ln)
    return out


def uncite_all(lines: list[str]) -> list[str]:
    """Remove every citation."""
    return [_CITE_RE.sub("", ln) for ln in lines]


# ---- variants ------------------------------------------------------------------------------------
def _wrong_alternatives(world: World, entity_id: str) -> dict[str, list[str]]:
    """For each categorical attribute value and related entity's name: wrong values of the same kind."""
    e = world.entities[entity_id]
    out: dict[str, list[str]] = {}
    for attr, v in e.attributes.items():
        if not isinstance(v, int) and not str(v).isdigit():
            pool = {str(o.attributes[attr]) for o in world.entities.values() if attr in o.attributes}
            out[str(v)] = sorted(pool - {str(v)})
    for t in world.out_edges(entity_id):
        tail = world.entities.get(t.tail)
        if tail is not None:
            pool = {o.name for o in world.entities.values() if o.type == tail.type and o.id != tail.id}
            out[tail.name] = sorted(pool)
    return out


def _wrong_value(rng: random.Random, value: str, alternatives: dict[str, list[str]], avoid: set[str]) -> str | None:
    """A wrong value of the same kind as `value` that no rubric item of the task mentions."""
    if value.replace(",", "").isdigit():
        n = int(value.replace(",", ""))
        for _ in range(20):
            cand = str(n + rng.choice((-1, 1)) * rng.randint(1, 9) * (1 if n < 3000 else max(1, n // 50)))
            if int(cand) > 0 and cand.lower() not in avoid:
                return cand
        return None
    options = [a for a in alternatives.get(value, []) if a.lower() not in avoid]
    return rng.choice(options) if options else None


def make_variants(world: World, task: ResearchTask, *, n: int, seed: int) -> list[ReportVariant]:
    """`n` reports for `task`: the expert report, then seeded corruptions of rising severity.

    Args:
        world: the world the task was synthesized from (`task.about` must be set).
        task: a research task whose rubric items carry checks.
        n: reports per task (variant 0 is the uncorrupted expert report).
        seed: with the task id and variant index, seeds every choice.
    Returns:
        `n` ReportVariants; same inputs → the same reports.
    """
    if task.about is None:
        raise ValueError(f"{task.sample_id}: judge data needs a synthetic task with `about` set")
    base = expert_report(world, task.about).splitlines()
    items = task.rubrics
    checks = [(i, it.check) for i, it in enumerate(items) if it.check is not None]
    avoid = {v.lower() for _, c in checks for v in [*c.values, *c.expected]}
    alternatives = _wrong_alternatives(world, task.about)
    facts = [(i, c) for i, c in checks if c.kind == "fact" and items[i].weight > 0]
    penalties = [(i, c) for i, c in checks if c.kind == "penalty"]
    conflicts = [(i, c) for i, c in checks if c.kind == "conflict"]
    structure = [i for i, c in checks if c.kind == "structure"]
    citation = [i for i, c in checks if c.kind == "citation"]

    out = [ReportVariant(task.sample_id, 0, "\n".join(base) + "\n", ())]
    for v in range(1, n):
        rng = random.Random(f"judge:{seed}:{task.sample_id}:{v}")
        severity = v / n
        lines = list(base)
        done: list[str] = []
        intended: dict[int, Label] = {}
        touched: set[str] = set()  # values already corrupted: one corruption per fact

        # A stale value asserted as fact: penalty triggered, the fact and its conflict item lost.
        for i, pen in penalties:
            if rng.random() >= severity / 2:
                continue
            stale = pen.values[0]
            conflict = next(((j, c) for j, c in conflicts if stale in c.values), None)
            if conflict is None or touched & {x.lower() for x in conflict[1].expected}:
                continue
            j, c = conflict
            lines = assert_stale(lines, c.expected, stale)
            touched |= {x.lower() for x in c.expected}
            intended[i] = "satisfied"
            # every conflict item on this attribute lost its verification note
            intended.update({k: "not" for k, kc in conflicts if set(kc.expected) == set(c.expected)})
            intended.update({f: "not" for f, fc in facts if set(fc.values) == set(c.expected)})
            done.append(f"stale:{i}")
        for j, c in conflicts:
            if j in intended or rng.random() >= severity / 2:
                continue
            lines = reject_only(lines, c.values[0], c.expected)
            intended[j] = "partially"
            done.append(f"reject:{j}")
        for i, c in facts:
            keys = {x.lower() for x in c.values}
            if keys & touched or rng.random() >= severity:
                continue
            # A value inside a heading (an event's name holds its year) cannot be omitted alone.
            in_heading = any(ln.lstrip().startswith("#") and _mentions(ln, c.values) for ln in lines)
            kind = rng.choice(("uncite", "wrong") if in_heading else ("omit", "uncite", "wrong"))
            if kind == "wrong":
                new = _wrong_value(rng, c.values[0], alternatives, avoid)
                if new is None:
                    kind = "omit"
                else:
                    lines = replace_value(lines, c.values, new)
                    avoid.add(new.lower())
            if kind == "omit":
                lines = omit_value(lines, c.values)
            elif kind == "uncite":
                lines = uncite_value(lines, c.values)
            touched |= keys
            intended[i] = "partially" if kind == "uncite" else "not"
            done.append(f"{kind}:{i}")
        if structure and rng.random() < severity:
            keep = rng.choice((0, 1, 2))
            lines = strip_headings(lines, keep)
            intended.update({s: "not" if keep == 0 else "partially" for s in structure})
            done.append(f"headings:{keep}")
        if citation and rng.random() < severity / 3:
            lines = uncite_all(lines)
            intended.update({c: "not" for c in citation})
            # every stated fact loses its citation; omitted or replaced ones stay "not"
            intended.update({i: "partially" for i, c in facts if intended.get(i) != "not"})
            done.append("uncite_all")
        out.append(ReportVariant(task.sample_id, v, "\n".join(lines) + "\n", tuple(done), intended))
    return out


def label_variant(task: ResearchTask, variant: ReportVariant) -> list[JudgeExample]:
    """One JudgeExample per rubric item of `task`, labelled by the ground-truth checker."""
    out = []
    for i, it in enumerate(task.rubrics):
        if it.check is None:
            raise ValueError(f"{task.sample_id}: rubric item {i} ({it.criterion!r}) has no check to label by")
        out.append(
            JudgeExample(
                sample_id=task.sample_id,
                report=variant.report,
                criterion=it.criterion,
                axis=it.axis,
                weight=it.weight,
                label=check_label(it.check, variant.report),
                report_id=variant.report_id,
            )
        )
    return out


def judge_examples(
    world: World, tasks: Sequence[ResearchTask], *, reports_per_task: int, seed: int
) -> list[JudgeExample]:
    """All (report, rubric item) examples for `tasks`: `reports_per_task` variants × rubric items."""
    out: list[JudgeExample] = []
    for task in tasks:
        for variant in make_variants(world, task, n=reports_per_task, seed=seed):
            out.extend(label_variant(task, variant))
    return out


def intended_agreement(tasks: Sequence[ResearchTask], variants: Sequence[ReportVariant]) -> tuple[int, int]:
    """(agreeing, total) over every intended label: how often a corruption did what it meant to."""
    by_id = {t.sample_id: t for t in tasks}
    agree = total = 0
    for v in variants:
        task = by_id[v.sample_id]
        for i, want in v.intended.items():
            check = task.rubrics[i].check
            assert check is not None
            total += 1
            agree += int(check_label(check, v.report) == want)
    return agree, total


# ---- split and statistics ------------------------------------------------------------------------
def split_by_task(
    examples: Sequence[JudgeExample], *, heldout_fraction: float, seed: int
) -> tuple[list[JudgeExample], list[JudgeExample]]:
    """Deterministic train / held-out split by task: a held-out task never appears in train.

    Tasks are ordered by sha256(f"{seed}:{sample_id}") and the first round(fraction · n) (at least
    one, at most n − 1) are held out, so the split does not depend on input order.

    Args:
        examples: judge examples of at least two tasks.
        heldout_fraction: fraction of tasks held out, in (0, 1).
        seed: changes which tasks are held out.
    Returns:
        (train, heldout), each in input order.
    """
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    ids = sorted({ex.sample_id for ex in examples})
    if len(ids) < 2:
        raise ValueError(f"a split by task needs at least 2 tasks, got {len(ids)}")
    ranked = sorted(ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    k = min(len(ids) - 1, max(1, round(heldout_fraction * len(ids))))
    held = set(ranked[:k])
    train = [ex for ex in examples if ex.sample_id not in held]
    heldout = [ex for ex in examples if ex.sample_id in held]
    return train, heldout


def class_balance(examples: Iterable[JudgeExample]) -> dict[str, dict[str, int]]:
    """Label counts overall, for positive items and for penalty items: {"all": {"satisfied": n, ...}, ...}."""
    counts: dict[str, Counter] = {"all": Counter(), "positive": Counter(), "penalty": Counter()}
    for ex in examples:
        counts["all"][ex.label] += 1
        counts["penalty" if ex.weight < 0 else "positive"][ex.label] += 1
    return {k: {lab: c[lab] for lab in LABELS} for k, c in counts.items()}


# ---- files ---------------------------------------------------------------------------------------
def write_examples(path: Path, examples: Iterable[JudgeExample]) -> None:
    """Write examples as jsonl (sorted keys), atomically."""
    text = "".join(json.dumps(ex.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) + "\n" for ex in examples)
    atomic_write_text(Path(path), text)


def read_examples(path: Path) -> list[JudgeExample]:
    """Read a jsonl file of JudgeExamples.

    Raises:
        ValueError: naming file:line for a malformed line or a label outside satisfied/partially/not.
    """
    path = Path(path)
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            label = obj.get("label")
            if label not in LABELS:
                raise ValueError(f"{path}:{lineno}: label {label!r} is not one of {', '.join(LABELS)}")
            try:
                out.append(JudgeExample.model_validate(obj))
            except ValidationError as e:
                raise ValueError(f"{path}:{lineno}: malformed JudgeExample: {e}") from None
    return out


def build_judge_dataset(
    cfg: PipelineConfig, world_dir: Path, out_dir: Path, *, n_tasks: int | None = None
) -> dict:
    """The judge-data stage: tasks from the world, controlled-quality reports, labelled examples, split.

    Tasks are the SFT's research tasks (`synthesis.split.training_tasks` with `synthesis.seed`): the
    judge learns to grade reports on them, never on a held-out entity the evaluation asks about.

    Args:
        cfg: the pipeline config (judge and synthesis sections are used).
        world_dir: a world directory.
        out_dir: replaced atomically by train.jsonl, heldout.jsonl and manifest.json.
        n_tasks: research tasks to use (default `judge.n_tasks`, or else `synthesis.n_deep_research`).
    Returns:
        The manifest: counts, class balance per split, held-out task ids, intended-label agreement,
        sha256 of each file.
    """
    from deepresearch.synthesis.split import training_tasks

    jc = cfg.judge
    world = World.load(Path(world_dir))
    _, tasks = training_tasks(world, cfg.synthesis, n_deep_search=0,
                              n_deep_research=n_tasks or jc.n_tasks or cfg.synthesis.n_deep_research,
                              seed=cfg.synthesis.seed)
    variants = [v for t in tasks for v in make_variants(world, t, n=jc.reports_per_task, seed=jc.seed)]
    by_id = {t.sample_id: t for t in tasks}
    examples = [ex for v in variants for ex in label_variant(by_id[v.sample_id], v)]
    train, heldout = split_by_task(examples, heldout_fraction=jc.heldout_fraction, seed=jc.seed)
    agree, total = intended_agreement(tasks, variants)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        write_examples(tmp / "train.jsonl", train)
        write_examples(tmp / "heldout.jsonl", heldout)
        manifest = {
            "stage": "judge_data",
            "schema_version": JUDGE_DATA_SCHEMA_VERSION,
            "config_hash": cfg.hash,
            "tasks": len(tasks),
            "reports": len(variants),
            "examples": {"train": len(train), "heldout": len(heldout)},
            "heldout_tasks": sorted({ex.sample_id for ex in heldout}),
            "class_balance": {"train": class_balance(train), "heldout": class_balance(heldout)},
            "intended_label_agreement": round(agree / total, 6) if total else 1.0,
            "sha256": {name: file_sha256(tmp / name) for name in ("train.jsonl", "heldout.jsonl")},
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
