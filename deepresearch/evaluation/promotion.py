"""The evaluation stage with promotion against the champion: what the Flyte task and `deepresearch evaluate` run.

    out = evaluation_stage(cfg, world_dir, {"base": d0, "mid-trained": d1, "sft": d2, "rl": d3, "expert": "expert"},
                           out_dir, judge_dir=judge, candidate="rl", baseline="sft", parent_run_id=parent)
    out.policy.promoted, out.policy.reasons, out.judge.promoted

1. The champion. When the registry has a `champion` of the policy whose tokenizer has the candidate's
   vocabulary (the same token → id map), it is downloaded and evaluated as "champion" on the same
   held-out tasks as the run's checkpoints, its paired difference with the candidate included. A
   champion of another vocabulary (the tiny tokenizer is trained on each run's world) cannot be
   compared on token-level terms and is not evaluated; the decision says so.
2. The policy decision (`decide_policy`, pure): the candidate (the RL policy) is promoted only if
     - it clears the floors `evaluation.min_well_formed_rate` and `evaluation.min_compliance`;
     - it is at least as good as the baseline (SFT) on `evaluation.gate_metric` (point estimates);
     - it is not worse than the baseline on any of `evaluation.guard_metrics` (EM, compliance,
       well-formed): no paired difference candidate − baseline whose interval lies entirely below 0;
     - when a comparable champion was evaluated, it beats it on the gate metric: the mean paired
       difference is positive and its paired-bootstrap interval excludes a loss (low end ≥ 0).
3. The judge decision (`decide_judge`, pure): promoted only if its macro-F1 against the ground-truth
   labels of the evaluation's own reports reaches `evaluation.min_judge_macro_f1`.
4. Both versions are registered from the LoggedModels their training runs logged (so a version's
   source run is the run that trained it, and its lineage is that checkpoint's); `champion` moves per
   the decisions, the old champion kept as `challenger` (`tracking.registry.promote`); the report says
   what was decided. A checkpoint no run logged as a model is not registered, and the report says why.
Without tracking (or without the candidate among the checkpoints) nothing is registered; the
decision is still computed and reported.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deepresearch.config import EvalConfig, PipelineConfig, TrackingConfig
from deepresearch.evaluation.metrics import CheckpointMetrics, Difference, JudgeAgreement, consecutive_pairs
from deepresearch.evaluation.run import Evaluation
from deepresearch.tracking.registry import PromotionDecision

CHAMPION = "champion"  # the name the current champion is evaluated under
POLICY, JUDGE = "policy", "judge"  # registered model names


class ChampionCheck(BaseModel):
    """The registry's champion and whether it can be evaluated beside the run's checkpoints."""

    version: str | None  # None: no champion yet
    path: Path | None  # its downloaded checkpoint, when comparable
    note: str  # what was found, for the decision's reasons


class Verdict(BaseModel):
    """A promotion decision before it is applied to the registry."""

    model_config = ConfigDict(frozen=True)

    promoted: bool
    reasons: list[str]
    metrics: dict[str, float]


class StageOutcome(BaseModel):
    """What the evaluation stage measured and decided."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    evaluation: Evaluation
    policy: Verdict | None  # None without a candidate
    judge: Verdict | None  # None without a judge
    policy_version: PromotionDecision | None = None  # as applied to the registry (tracking on)
    judge_version: PromotionDecision | None = None
    run_id: str
    seconds: float


def same_vocabulary(a: Path, b: Path) -> bool:
    """Whether two checkpoints' tokenizers map the same tokens to the same ids."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(a)).get_vocab() == AutoTokenizer.from_pretrained(str(b)).get_vocab()


def fetch_champion(cfg: TrackingConfig, candidate_dir: Path, dst: Path, *, name: str = POLICY) -> ChampionCheck:
    """Download the current champion of `name` under `dst` if it exists and shares the candidate's vocabulary."""
    from deepresearch.tracking.registry import current_version, download_version

    version = current_version(cfg, name)
    if version is None:
        return ChampionCheck(version=None, path=None, note=f"no {name} champion yet")
    path = download_version(cfg, name, version, dst)
    if not same_vocabulary(path, candidate_dir):
        return ChampionCheck(version=version, path=None,
                             note=f"champion v{version} has another tokenizer vocabulary: not comparable, not evaluated")
    return ChampionCheck(version=version, path=path, note=f"champion v{version} evaluated on the same held-out tasks")


def decide_policy(
    metrics: Mapping[str, CheckpointMetrics],
    differences: Sequence[Difference],
    ev: EvalConfig,
    *,
    candidate: str,
    baseline: str,
    champion: str | None,
    champion_note: str = "",
) -> Verdict:
    """Whether `candidate` should become the champion (see the module docstring, step 2).

    Args:
        metrics: checkpoint name → its metrics (the candidate, the baseline and the champion among them).
        differences: paired differences; (candidate, baseline) on the guard metrics and (candidate,
            champion) on the gate metric are used.
        ev: the evaluation section (gate metric, floors).
        candidate, baseline: checkpoint names (e.g. "rl", "sft").
        champion: the name the champion was evaluated under, or None when it was not.
        champion_note: why not, or what it is (goes into the reasons).
    """
    gate = ev.gate_metric
    c = metrics[candidate]
    reasons: list[str] = []
    ok = True
    figures: dict[str, float] = {}
    for key, floor in (("well_formed_rate", ev.min_well_formed_rate), ("compliance", ev.min_compliance)):
        value = getattr(c, key)
        if value is None or value < floor:
            ok = False
            reasons.append(f"{key} {value} is below the floor {floor}")
        else:
            figures[key] = value
            reasons.append(f"{key} {value:.4f} clears the floor {floor}")
    mine = getattr(c, gate)
    if mine is None:
        return Verdict(promoted=False, metrics=figures,
                       reasons=[*reasons, f"{gate} was not measured for {candidate} (a judge is needed for it)"])
    figures[gate] = mine
    if baseline not in metrics or getattr(metrics[baseline], gate) is None:
        ok = False
        reasons.append(f"{gate} of the baseline {baseline!r} was not measured: cannot check the candidate against it")
    else:
        theirs = getattr(metrics[baseline], gate)
        figures[f"{gate}_{baseline}"] = theirs
        if mine < theirs:
            ok = False
            reasons.append(f"{gate} {mine:.4f} is below {baseline}'s {theirs:.4f}")
        else:
            reasons.append(f"{gate} {mine:.4f} is at least {baseline}'s {theirs:.4f}")
    paired = {(d.a, d.b, d.metric): d for d in differences}
    for key in ev.guard_metrics:
        d = paired.get((candidate, baseline, key))
        if d is None:
            reasons.append(f"{key} of {candidate} − {baseline} has no paired difference (not measured): not checked")
            continue
        span = f"{d.value:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}]"
        figures.update({f"{key}_vs_{baseline}": d.value, f"{key}_vs_{baseline}_ci_high": d.ci_high})
        if d.ci_high < 0:
            ok = False
            reasons.append(f"{key} is worse than {baseline}'s: paired difference {span} lies below 0")
        else:
            reasons.append(f"{key} is not significantly worse than {baseline}'s: paired difference {span}")
    if champion is None:
        reasons.append(f"{champion_note or 'no champion evaluated'}: decided on the floors and {baseline} alone")
    else:
        d = paired.get((candidate, champion, gate))
        if d is None:
            raise ValueError(f"no paired difference {candidate} − {champion} of {gate}: evaluate with that pair")
        figures.update({f"{gate}_vs_champion": d.value, f"{gate}_vs_champion_ci_low": d.ci_low,
                        f"{gate}_vs_champion_ci_high": d.ci_high})
        span = f"{d.value:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}]"
        if d.value > 0 and d.ci_low >= 0:
            reasons.append(f"{gate} beats the {champion_note or 'champion'}: paired difference {span} excludes a loss")
        else:
            ok = False
            reasons.append(f"{gate} does not beat the {champion_note or 'champion'}: paired difference {span}")
    return Verdict(promoted=ok, reasons=reasons, metrics=figures)


def decide_judge(agreement: JudgeAgreement | None, ev: EvalConfig) -> Verdict:
    """Whether the judge should become the champion: macro-F1 against ground truth ≥ `min_judge_macro_f1`."""
    if agreement is None:
        return Verdict(promoted=False, metrics={},
                       reasons=["no report of the evaluation could be graded: the judge's agreement is unknown"])
    f1, floor = agreement.macro_f1, ev.min_judge_macro_f1
    verb = "reaches" if f1 >= floor else "is below"
    return Verdict(promoted=f1 >= floor, metrics={"macro_f1": f1, "accuracy": agreement.accuracy},
                   reasons=[f"macro-F1 {f1:.4f} against ground truth on {agreement.items} rubric items {verb} {floor}"])


def evaluation_stage(
    cfg: PipelineConfig,
    world_dir: Path,
    checkpoints: dict[str, Any],
    out_dir: Path,
    *,
    judge_dir: Path | None = None,
    candidate: str | None = "rl",
    baseline: str = "sft",
    parent_run_id: str = "",
    execution_id: str = "local",
    curves: dict[str, list[tuple[float, float]]] | None = None,
    progress: bool = True,
) -> StageOutcome:
    """Evaluate, compare with the champion, register and promote — one tracked stage run.

    Args:
        checkpoints: name → HF checkpoint directory or "expert", in pipeline order.
        candidate: the checkpoint that may become the policy champion (None or absent: no promotion).
        baseline: the checkpoint the candidate must at least match (SFT).
        parent_run_id, execution_id: the pipeline run this stage belongs to.
    """
    from deepresearch.evaluation.report import write_report
    from deepresearch.evaluation.run import evaluate
    from deepresearch.tracking import stage_run
    from deepresearch.tracking.models import ModelNotLoggedError
    from deepresearch.tracking.registry import promote, register_model

    if CHAMPION in checkpoints:
        raise ValueError(f"{CHAMPION!r} names the registry's champion here; call the checkpoint something else")
    if candidate is not None and candidate not in checkpoints:
        candidate = None
    t0 = time.perf_counter()
    with stage_run(cfg, parent_run_id, "evaluation", flyte_execution_id=execution_id) as run, \
            tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        tracked = bool(run.run_id)
        specs, pairs = dict(checkpoints), consecutive_pairs(list(checkpoints))
        if candidate is not None and baseline in checkpoints and (candidate, baseline) not in pairs:
            pairs.append((candidate, baseline))  # the guard metrics' paired differences
        champ = ChampionCheck(version=None, path=None, note="no registry (tracking is off)")
        if tracked and candidate is not None:
            champ = fetch_champion(cfg.tracking, Path(checkpoints[candidate]), Path(tmp))
            if champ.path is not None:
                specs[CHAMPION] = champ.path
                pairs.append((candidate, CHAMPION))
        ev = evaluate(cfg, Path(world_dir), specs, Path(out_dir), judge_dir=judge_dir, pairs=pairs, curves=curves,
                      tracker=run if tracked else None, progress=progress)
        by = ev.by_name()
        policy = judge = None
        if candidate is not None:
            policy = decide_policy(by, ev.differences, cfg.evaluation, candidate=candidate, baseline=baseline,
                                   champion=CHAMPION if champ.path is not None else None, champion_note=champ.note)
        if judge_dir is not None:
            judge = decide_judge(ev.judge_agreement, cfg.evaluation)
        applied: dict[str, PromotionDecision] = {}
        unregistered: list[str] = []
        if tracked:
            for name, verdict, path in ((POLICY, policy, candidate and checkpoints[candidate]), (JUDGE, judge, judge_dir)):
                if verdict is None:
                    continue
                try:
                    version = register_model(cfg.tracking, name, Path(path))
                except ModelNotLoggedError as e:
                    unregistered.append(f"{name} not registered: {e}")
                    continue
                applied[name] = promote(cfg.tracking, name, version, promoted=verdict.promoted,
                                        reasons=verdict.reasons, metrics=verdict.metrics)
                run.log_dict(applied[name].model_dump(mode="json"), f"promotion_{name}.json")
        notes = [
            f"{name} {'v' + applied[name].version + ' ' if name in applied else ''}"
            f"{'promoted to champion' if v.promoted else 'not promoted'}: " + "; ".join(v.reasons)
            for name, v in ((POLICY, policy), (JUDGE, judge)) if v is not None
        ] + unregistered
        results = ev.results.model_copy(update={
            "champion": candidate if policy is not None and policy.promoted else None,
            "decisions": notes,  # the report's lead
        })
        write_report(results, Path(out_dir))  # the report again, now with the decisions
        if tracked:
            run.log_artifact(Path(out_dir))
        for line in notes:
            print(line)
    return StageOutcome(evaluation=ev.model_copy(update={"results": results}), policy=policy, judge=judge,
                        policy_version=applied.get(POLICY), judge_version=applied.get(JUDGE),
                        run_id=run.run_id or "", seconds=time.perf_counter() - t0)
