"""Evaluation: every checkpoint plays the same held-out tasks with the real tools; intervals, probe, report.

    ev = evaluate(cfg, world_dir, {"base": d0, "mid-trained": d1, "sft": d2, "rl": d3, "expert": "expert"},
                  out_dir, judge_dir=judge)
    ev.checkpoints      # CheckpointMetrics per checkpoint, each metric with its bootstrap interval
    ev.differences      # paired differences of consecutive checkpoints (mid − base, SFT − mid, RL − SFT, ...)
    ev.probe            # teacher-forced next-action probe of each checkpoint on held-out expert trajectories

1. Tasks: `synthesis.split.heldout_tasks` — `evaluation.n_deep_search` + `n_deep_research` tasks whose
   targets are held-out entities, which no training task targets (the guarantee is stated there).
2. Episodes, under `agent.budget` (its `max_output_tokens` stops a checkpoint that writes junk). The
   scripted expert plays first (the reference row, and the trajectories the probe reads). Each HF
   checkpoint then gets one generation engine (`evaluation.engine`: transformers on CPU, vLLM on GPU),
   shared by at most `evaluation.max_concurrency` episodes running in threads, whose turns are decoded
   in batches (`generation.batching`); decoding is greedy at `evaluation.temperature` 0. A checkpoint with the
   previous one's architecture reuses its engine (new weights, cleared prefix cache). With
   `evaluation.checkpoint_processes` > 1 (transformers engine), that many checkpoints play at once, each
   in a spawned process of its own (`_play_and_probe`), and probe there too: one process decodes on
   about one core.
3. Scores, from the tested metric functions, every result keyed by task id: `evaluate_deep_search`
   (EM, F1), `evaluate_compliance` (ResearchRubrics compliance, ground-truth labels and the judge's),
   the PPO reward of each episode (`judge.reward.score_trajectories`), `cost_summary`. Only an episode's own
   final answer counts (a reply forced by the budget does not).
4. Intervals (`metrics.summarize`): a percentile bootstrap over tasks for every metric of every
   checkpoint, and a paired bootstrap of each pair's difference (`pairs`, default consecutive ones).
5. The probe (`probe.next_action_probe`): every HF checkpoint, teacher-forced on up to
   `evaluation.probe_episodes` held-out expert trajectories per capability, cut at
   `evaluation.probe_max_tokens` (one forward pass each).
6. Elo, the judge's agreement with ground truth, the report (markdown + HTML + plots), episodes.jsonl,
   heldout_tasks.jsonl, MLflow metrics (`eval/<checkpoint>/<metric>` with `_ci_low`/`_ci_high`,
   `eval/diff/<a>_vs_<b>/<metric>`, `probe/<checkpoint>/<kind>`), and the tables printed at the end.
"""

from __future__ import annotations

import contextlib
import gc
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict

from deepresearch.config import EvalConfig, PipelineConfig
from deepresearch.evaluation.metrics import CheckpointMetrics, Difference, EpisodeRecord, JudgeAgreement
from deepresearch.evaluation.probe import ProbeScore
from deepresearch.evaluation.report import EvalResults

if TYPE_CHECKING:
    from deepresearch.agent.schema import Trajectory
    from deepresearch.generation.engine import EngineOptions, GenerationEngine
    from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask

EXPERT = "expert"  # a checkpoint spec naming the scripted expert (a reference, not a model)
ALL = "all"  # the probe row over both capabilities


class Evaluation(BaseModel):
    """What `evaluate` measured."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    checkpoints: list[CheckpointMetrics]  # in the order given
    differences: list[Difference]
    # checkpoint → "all" | capability → span kind → score (HF checkpoints only)
    probe: dict[str, dict[str, dict[str, ProbeScore]]]
    judge_agreement: JudgeAgreement | None
    records: list[EpisodeRecord]  # one per (checkpoint, task)
    results: EvalResults  # what the report shows
    report: Path

    def by_name(self) -> dict[str, CheckpointMetrics]:
        return {m.name: m for m in self.checkpoints}


# ---- episodes ------------------------------------------------------------------------------------
def engine_options(ev: EvalConfig) -> "EngineOptions":
    """How the evaluation's generation engine is built: vLLM on the GPU in bf16, transformers on the CPU
    with a prefix cache that holds every concurrent episode (else each turn would prefill its whole context)."""
    from deepresearch.generation.engine import EngineOptions

    if ev.engine == "vllm":
        return EngineOptions(device="cuda", dtype="bfloat16", seed=ev.seed)
    return EngineOptions(device="cpu", seed=ev.seed, prefix_cache_entries=max(64, 2 * ev.max_concurrency))


def _architecture(model_dir: Path) -> dict:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return {k: v for k, v in cfg.items() if k not in ("_name_or_path", "transformers_version")}


class _Engines:
    """One generation engine at a time. A checkpoint of the previous one's architecture reuses it with its
    own weights (`load_weights`, which clears the prefix cache): starting and freeing a vLLM engine is
    what costs."""

    def __init__(self, ev: EvalConfig):
        self.ev = ev
        self.engine: GenerationEngine | None = None
        self.arch: dict | None = None

    def get(self, model_dir: Path) -> "GenerationEngine":
        from deepresearch.generation.engine import make_engine

        arch = _architecture(model_dir)
        if self.engine is not None and arch == self.arch:
            self.engine.load_weights(model_dir)
            return self.engine
        self.close()
        self.engine, self.arch = make_engine(self.ev.engine, model_dir, engine_options(self.ev)), arch
        return self.engine

    def close(self) -> None:
        self.engine = self.arch = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def play(cfg: PipelineConfig, policy, task, search, *, seed: str) -> tuple["Trajectory", float]:
    """One episode (`agent.episode.play_episode`) of `policy` on `task`; returns (trajectory, wall seconds)."""
    from deepresearch.agent.episode import play_episode

    t0 = time.perf_counter()
    traj = play_episode(policy, task, cfg.agent, search, seed=seed)
    return traj, time.perf_counter() - t0


def workers(ev: EvalConfig, n_tasks: int) -> int:
    """Episodes played at once: `evaluation.max_concurrency`, at most one per task."""
    return min(ev.max_concurrency, n_tasks)


def play_all(
    cfg: PipelineConfig,
    tasks: Sequence[Any],
    search: Any,
    new_policy: Callable[[], Any],
    *,
    batcher: Any = None,
    on_done: Callable[[], None] = lambda: None,
) -> dict[str, tuple["Trajectory", float]]:
    """Every task once, at most `evaluation.max_concurrency` at a time; task id → (trajectory, wall s).

    Each worker thread holds one policy and, with a `batcher` (built for `workers(...)` clients), stays
    one of its clients until the tasks run out, so the batch keeps its width while tasks remain.
    """
    n_workers = workers(cfg.evaluation, len(tasks))
    todo = iter(tasks)
    lock = threading.Lock()
    out: dict[str, tuple[Trajectory, float]] = {}

    def worker(_: int) -> None:
        policy = new_policy()
        with batcher.client() if batcher is not None else contextlib.nullcontext():
            while True:
                with lock:
                    task = next(todo, None)
                if task is None:
                    return
                out[task.task_id] = play(cfg, policy, task, search, seed=f"eval:{cfg.evaluation.seed}:{task.task_id}")
                on_done()

    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="eval") as pool:
        list(pool.map(worker, range(n_workers)))
    return out


def _play_checkpoint(cfg, spec, tasks, search, world, engines: _Engines, on_done) -> dict[str, tuple]:
    """`play_all` for a checkpoint spec: the scripted expert, or an HF directory behind a batching engine."""
    if spec == EXPERT:
        from deepresearch.agent.policies.scripted import ScriptedExpert

        return play_all(cfg, tasks, search, lambda: ScriptedExpert(cfg.agent, world), on_done=on_done)
    from transformers import AutoTokenizer

    from deepresearch.agent.policies.hf import HFPolicy
    from deepresearch.generation.batching import BatchingEngine

    ev = cfg.evaluation
    tokenizer = AutoTokenizer.from_pretrained(str(spec))
    batcher = BatchingEngine(engines.get(Path(spec)), clients=workers(ev, len(tasks)),
                              slice_tokens=ev.slice_tokens)
    return play_all(
        cfg, tasks, search,
        lambda: HFPolicy(tokenizer, batcher, max_new_tokens=ev.max_new_tokens, temperature=ev.temperature),
        batcher=batcher, on_done=on_done,
    )


def _play_and_probe(
    cfg: PipelineConfig, world_dir: Path, spec: str, tasks: Sequence[Any], expert: dict[str, list["Trajectory"]],
) -> tuple[dict[str, tuple["Trajectory", float]], dict[str, dict[str, ProbeScore]]]:
    """One HF checkpoint in a process of its own: its episodes on `tasks` and its probe on `expert`'s
    trajectories (none: no probe). The body of a `checkpoint_processes` worker."""
    import torch

    from deepresearch.console import quiet
    from deepresearch.search.backend import open_backend
    from deepresearch.world.schema import World

    quiet()
    torch.set_num_threads(cfg.evaluation.torch_threads)
    engines = _Engines(cfg.evaluation)
    try:
        played = _play_checkpoint(cfg, spec, tasks, open_backend(cfg.search, world_dir), World.load(world_dir),
                                  engines, on_done=lambda: None)
    finally:
        engines.close()
    probe = probe_checkpoint(Path(spec), expert, max_tokens=cfg.evaluation.probe_max_tokens) if expert else {}
    return played, probe


def _play_in_processes(cfg, world_dir, specs: dict[str, Any], tasks, expert, n_procs: int, played: dict,
                       probe: dict, *, done: Callable[[str], Any]) -> None:
    """`_play_and_probe` for every checkpoint in `specs`, `n_procs` spawned processes at a time; fills
    `played` and `probe` by name and calls `done(name)` as each finishes (a process that fails raises here)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=n_procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_play_and_probe, cfg, Path(world_dir), str(spec), tasks, expert): name
                   for name, spec in specs.items()}
        for future in as_completed(futures):
            name = futures[future]
            try:
                played[name], checkpoint_probe = future.result()
            except BrokenProcessPool as e:
                unplayed = [n for n in specs if n not in played]
                raise RuntimeError(
                    f"evaluation: a checkpoint's process died (killed, or out of memory) with {unplayed} not yet "
                    "played; rerun with evaluation.checkpoint_processes=1 to play them in this process"
                ) from e
            if checkpoint_probe:
                probe[name] = checkpoint_probe
            done(name)


# ---- scores --------------------------------------------------------------------------------------
def score_checkpoint(
    name: str,
    ds: Sequence["DeepSearchTask"],
    dr: Sequence["ResearchTask"],
    played: dict[str, tuple["Trajectory", float]],
    judge: Any = None,
) -> tuple[list[EpisodeRecord], list[tuple[list[str], list[str]]]]:
    """Score one checkpoint's episodes with the metric functions, joined by task id.

    Returns:
        (one record per task, in task order; per research report with an answer, its (ground-truth
        labels, judge labels) — empty without a judge).
    """
    from deepresearch.evaluation.accuracy import evaluate_deep_search
    from deepresearch.evaluation.compliance import GroundTruthLabeler, evaluate_compliance
    from deepresearch.judge.reward import final_answer, score_trajectories

    tasks = [*ds, *dr]
    missing = [t.task_id for t in tasks if t.task_id not in played]
    if missing:
        raise ValueError(f"checkpoint {name!r} has no episode for {len(missing)} task(s): {missing[:5]}")
    answers = {t.task_id: final_answer(played[t.task_id][0]) for t in tasks}
    accuracy = {p.task_id: p for p in evaluate_deep_search(ds, answers).per_task} if ds else {}
    truth = {p.sample_id: p for p in evaluate_compliance(dr, answers, GroundTruthLabeler()).per_task} if dr else {}
    judged = {p.sample_id: p for p in evaluate_compliance(dr, answers, judge).per_task} if dr and judge else {}
    rewards = {}
    if judge is not None:
        rewards = dict(zip([t.task_id for t in tasks],
                           score_trajectories(tasks, [played[t.task_id][0] for t in tasks], judge)))
    records = []
    for t in tasks:
        traj, wall = played[t.task_id]
        acc, gt, jd = accuracy.get(t.task_id), truth.get(t.task_id), judged.get(t.task_id)
        records.append(EpisodeRecord(
            checkpoint=name, task_id=t.task_id, capability=t.capability, outcome=traj.outcome,
            well_formed=answers[t.task_id] is not None and traj.tool_errors == 0,
            tool_calls=traj.tool_calls, tool_errors=traj.tool_errors, tokens=traj.tokens,
            output_tokens=int(traj.metadata.get("output_tokens", 0)), wall_s=round(wall, 3),
            answer=answers[t.task_id],
            exact_match=acc.exact_match if acc else None, f1=acc.f1 if acc else None,
            compliance=gt.score if gt else None, compliance_binary=gt.binary_score if gt else None,
            judge_compliance=jd.score if jd else None, reward=rewards.get(t.task_id),
        ))
    pairs = [(list(truth[i].labels), list(judged[i].labels)) for i in judged if judged[i].labels]
    return records, pairs


def judge_agreement(pairs: Sequence[tuple[list[str], list[str]]]) -> JudgeAgreement | None:
    """The judge's labels against the ground truth's over every (report, item) of `pairs`; None if empty."""
    from deepresearch.judge.model import confusion, macro_f1

    truth = [x for gt, _ in pairs for x in gt]
    pred = [x for _, jd in pairs for x in jd]
    if not truth:
        return None
    return JudgeAgreement(items=len(truth), reports=len(pairs), accuracy=sum(a == b for a, b in zip(truth, pred)) / len(truth),
                          macro_f1=macro_f1(truth, pred), confusion=confusion(truth, pred))


# ---- probe ---------------------------------------------------------------------------------------
def probe_checkpoint(model_dir: Path, expert: dict[str, list["Trajectory"]], *, max_tokens: int) -> dict[str, dict[str, ProbeScore]]:
    """`next_action_probe` of one checkpoint on expert trajectories per capability, and their sum ("all")."""
    import torch

    from deepresearch.evaluation.probe import combine, next_action_probe
    from deepresearch.modeling.checkpoint import load_checkpoint

    model, tokenizer = load_checkpoint(model_dir)
    if torch.cuda.is_available():
        model.to("cuda")
    try:
        out = {cap: next_action_probe(model, tokenizer, trajs, max_tokens=max_tokens) for cap, trajs in expert.items()}
    finally:
        del model
        gc.collect()
    out[ALL] = combine(list(out.values()))
    return out


# ---- the stage -----------------------------------------------------------------------------------
def evaluate(
    cfg: PipelineConfig,
    world_dir: Path,
    checkpoints: dict[str, Any],
    out_dir: Path,
    *,
    judge_dir: Path | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    curves: dict[str, list[tuple[float, float]]] | None = None,
    tracker: Any = None,
    progress: bool = True,
    notes: Sequence[str] = (),
) -> Evaluation:
    """Evaluate each checkpoint (name → HF dir, or "expert") on the held-out tasks; write the report.

    Args:
        cfg: the pipeline config (evaluation, agent, synthesis, search sections).
        world_dir: the world the tasks come from.
        checkpoints: name → HF checkpoint directory or "expert", in reporting order.
        out_dir: report directory (report.md/.html, plots, results.json, episodes.jsonl, heldout_tasks.jsonl).
        judge_dir: the trained judge: judge compliance, the PPO reward and the judge's agreement need it.
        pairs: (a, b) checkpoint pairs whose paired difference a − b is reported; default consecutive ones.
        curves: training curves to plot in the report.
        tracker: an MLflow run (`tracking.stage_run`) to log metrics, inputs and the report to.
        notes: extra lines for the report.
    """
    import torch

    ev = cfg.evaluation
    if not checkpoints:
        raise ValueError("nothing to evaluate: give at least one checkpoint")
    threads = torch.get_num_threads()
    torch.set_num_threads(ev.torch_threads)
    try:
        return _evaluate(cfg, world_dir, checkpoints, out_dir, judge_dir=judge_dir, pairs=pairs, curves=curves,
                         tracker=tracker, progress=progress, notes=notes)
    finally:
        torch.set_num_threads(threads)


def _evaluate(cfg, world_dir, checkpoints, out_dir, *, judge_dir, pairs, curves, tracker, progress, notes) -> Evaluation:
    import time

    from rich.progress import Progress

    from deepresearch.console import quiet
    from deepresearch.evaluation.cost import cost_summary
    from deepresearch.evaluation.elo import elo_with_ci
    from deepresearch.evaluation.metrics import summarize
    from deepresearch.evaluation.report import CheckpointEval, write_report
    from deepresearch.search.backend import open_backend
    from deepresearch.synthesis.split import heldout_tasks
    from deepresearch.world.schema import World

    quiet()
    t0 = time.perf_counter()
    ev = cfg.evaluation
    world = World.load(world_dir)
    search = open_backend(cfg.search, world_dir)
    ds, dr = heldout_tasks(world, cfg.synthesis, ev)
    tasks = [*ds, *dr]
    judge = None
    if judge_dir is not None:
        from deepresearch.judge.model import Judge

        judge = Judge.load(judge_dir)

    # The expert plays first: its episodes are a reference row and the trajectories the probe reads.
    order = sorted(checkpoints, key=lambda n: checkpoints[n] != EXPERT)
    probe_tasks = [*ds[: ev.probe_episodes], *dr[: ev.probe_episodes]]
    hf = [n for n in checkpoints if checkpoints[n] != EXPERT]
    played: dict[str, dict[str, tuple[Trajectory, float]]] = {}
    probe: dict[str, dict[str, dict[str, ProbeScore]]] = {}
    engines = _Engines(ev)
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("evaluation", total=len(tasks) * len(checkpoints))

        def done(what: str) -> None:
            # a line per step as well as the bar: a log file or a Flyte task's output has no live bar
            if progress:
                bar.console.print(f"evaluation: {what} ({time.perf_counter() - t0:.0f} s)", highlight=False)

        def checkpoint_done(name: str) -> None:
            done(f"{name} played {len(tasks)} episodes, checkpoint {len(played)}/{len(order)}")

        for name in (n for n in order if checkpoints[n] == EXPERT):
            played[name] = _play_checkpoint(cfg, EXPERT, tasks, search, world, engines,
                                             on_done=lambda: bar.advance(job))
            checkpoint_done(name)
        expert: dict[str, list[Trajectory]] = {}  # the probe's reference, from the expert's held-out episodes
        if hf and probe_tasks:
            reference = next((played[n] for n in order if checkpoints[n] == EXPERT), None)
            if reference is None:  # no expert row asked for: play the probe's episodes only
                reference = _play_checkpoint(cfg, EXPERT, probe_tasks, search, world, engines, lambda: None)
            expert = {cap: [reference[t.task_id][0] for t in probe_tasks if t.capability == cap]
                      for cap in ("deep_search", "deep_research")}

        n_procs = min(ev.checkpoint_processes, len(hf)) if ev.engine == "transformers" else 1
        if n_procs > 1:
            def process_done(name: str) -> None:
                bar.advance(job, len(tasks))
                checkpoint_done(name)

            _play_in_processes(cfg, world_dir, {n: checkpoints[n] for n in hf}, tasks, expert, n_procs,
                               played, probe, done=process_done)
        else:
            for name in hf:
                played[name] = _play_checkpoint(cfg, checkpoints[name], tasks, search, world, engines,
                                                 on_done=lambda: bar.advance(job))
                checkpoint_done(name)
            engines.close()  # before the probe loads each checkpoint again (a vLLM engine holds GPU memory)
            for name in hf if expert else []:
                probe[name] = probe_checkpoint(Path(checkpoints[name]), expert, max_tokens=ev.probe_max_tokens)
        probe = {n: probe[n] for n in hf if n in probe}  # in reporting order, however the processes finished
        if probe:
            done(f"next-action probe of {len(probe)} checkpoints")

    records: list[EpisodeRecord] = []
    judged_pairs: list = []
    for name in checkpoints:
        recs, jp = score_checkpoint(name, ds, dr, played[name], judge)
        records += recs
        judged_pairs += jp
    agreement = judge_agreement(judged_pairs)
    metrics, diffs = summarize(records, list(checkpoints), pairs=pairs, n_resamples=ev.bootstrap,
                               confidence=ev.confidence, seed=ev.seed)

    # Elo: on every held-out task, the checkpoint with the higher score (F1 / compliance) wins.
    per_task = {n: {r.task_id: (r.f1 if r.capability == "deep_search" else r.compliance) or 0.0
                    for r in records if r.checkpoint == n} for n in checkpoints}
    elo = elo_with_ci(per_task, k=ev.elo_k, n_bootstrap=ev.elo_bootstrap, seed=ev.seed) if len(checkpoints) > 1 else []
    probe_rows = {f"{n} · {cap}" if cap != ALL else n: s for n, caps in probe.items() for cap, s in caps.items()}
    results = EvalResults(
        title=f"Evaluation — pipeline '{cfg.name}' (config {cfg.hash}): {len(ds)} deep-search + {len(dr)} "
        "deep-research held-out tasks",
        checkpoints=[
            CheckpointEval(
                name=m.name, compliance=m.compliance, compliance_binary=m.compliance_binary,
                exact_match=m.exact_match, f1=m.f1, intervals=m.intervals,
                cost=cost_summary([played[m.name][t.task_id][0] for t in tasks],
                                  wall_s=[played[m.name][t.task_id][1] for t in tasks]),
            )
            for m in metrics
        ],
        elo=elo,
        curves=curves or {},
        differences=diffs,
        probe=probe_rows,
        judge_agreement=agreement,
        confidence=ev.confidence,
        notes=[*notes, f"Held-out tasks target only held-out entities (synthesis.heldout_fraction "
               f"{cfg.synthesis.heldout_fraction}, split seed {cfg.synthesis.split_seed}); evaluation seed {ev.seed}. "
               "Wall seconds are per episode while sharing the model with the other episodes."],
    )
    out_dir = Path(out_dir)
    # the report and the episodes it summarizes: one version of the directory
    report = write_report(results, out_dir, files={
        "episodes.jsonl": "".join(r.model_dump_json() + "\n" for r in records),
        "heldout_tasks.jsonl": "".join(t.model_dump_json() + "\n" for t in tasks),
    })
    if tracker is not None:
        _log(tracker, cfg, world_dir, judge_dir, checkpoints, metrics, diffs, probe, elo, agreement, out_dir)
    # the tables are printed once, by the caller: the pipeline's summary, or `deepresearch evaluate`
    return Evaluation(checkpoints=metrics, differences=diffs, probe=probe, judge_agreement=agreement,
                      records=records, results=results, report=report)


def mlflow_metrics(
    metrics: Sequence[CheckpointMetrics],
    diffs: Sequence[Difference],
    probe: dict[str, dict[str, dict[str, ProbeScore]]],
) -> dict[str, float]:
    """The evaluation's MLflow metrics: eval/<checkpoint>/<metric>[_ci_low|_ci_high],
    eval/diff/<a>_vs_<b>/<metric>[_ci_low|_ci_high], probe/<checkpoint>/<kind> and
    probe/<checkpoint>/<capability>/<kind> (kinds with spans only)."""
    out: dict[str, float] = {}
    for m in metrics:
        out[f"eval/{m.name}/episodes"] = m.episodes
        for key, e in m.intervals.items():
            out[f"eval/{m.name}/{key}"] = e.value
            out[f"eval/{m.name}/{key}_ci_low"] = e.ci_low
            out[f"eval/{m.name}/{key}_ci_high"] = e.ci_high
    for d in diffs:
        out[f"eval/diff/{d.key}/{d.metric}"] = d.value
        out[f"eval/diff/{d.key}/{d.metric}_ci_low"] = d.ci_low
        out[f"eval/diff/{d.key}/{d.metric}_ci_high"] = d.ci_high
    for name, caps in probe.items():
        for cap, scores in caps.items():
            prefix = f"probe/{name}" if cap == ALL else f"probe/{name}/{cap}"
            out.update({f"{prefix}/{k}": s.accuracy for k, s in scores.items() if s.n})
    return out


def _log(tracker, cfg, world_dir, judge_dir, checkpoints, metrics, diffs, probe, elo, agreement, out_dir) -> None:
    from deepresearch.io import dir_digest
    from deepresearch.tracking.datasets import log_world

    # Lineage: the world is a dataset input; each evaluated checkpoint and the judge are model inputs
    # (their training runs' LoggedModels; the base checkpoint, which no run logs as a model, its files),
    # and each one's metrics are logged against its model id.
    log_world(tracker, Path(world_dir))
    judge_id = None
    if judge_dir is not None:
        judge_id = tracker.log_model_input(Path(judge_dir), name="judge", digest=dir_digest(judge_dir))
    model_ids = {name: tracker.log_model_input(Path(spec), name=f"checkpoint_{name}", digest=dir_digest(spec))
                 for name, spec in checkpoints.items() if spec != EXPERT}
    flat = mlflow_metrics(metrics, diffs, probe)
    for e in elo:
        flat.update({f"eval/{e.name}/elo": e.rating, f"eval/{e.name}/elo_ci_low": e.ci_low,
                     f"eval/{e.name}/elo_ci_high": e.ci_high})
    for name, model_id in model_ids.items():
        own = {k: v for k, v in flat.items() if k.startswith((f"eval/{name}/", f"probe/{name}/")) or k == f"probe/{name}"}
        if model_id and own:
            tracker.log_metrics(own, model_id=model_id)
            flat = {k: v for k, v in flat.items() if k not in own}
    tracker.log_metrics(flat)
    if agreement is not None:
        tracker.log_metrics({"eval/judge/macro_f1": agreement.macro_f1, "eval/judge/accuracy": agreement.accuracy,
                             "eval/judge/items": agreement.items}, model_id=judge_id)
        tracker.log_dict(agreement.model_dump(mode="json"), "judge_agreement.json")
    tracker.log_artifact(Path(out_dir))
