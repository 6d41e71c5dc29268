"""A quiet console: a small training stage, run the way the pipeline runs it, prints none of the known
third-party noise (`deepresearch.console.NOISE`) — and the stage's own work still shows."""

import json
import logging
import subprocess
import sys
from pathlib import Path

from deepresearch.console import NOISE
from tests.conftest import SMALL, requires_sandbox

# The judge stage from the shipped tiny base: it loads a checkpoint (transformers' "Loading weights"),
# puts a new score head on it (its LOAD REPORT), joins DeepSpeed on CPU (accelerator, CUDA and shm-op
# notices), takes optimizer steps (the all_gather FutureWarning) and saves ("Writing model shards").
# In a fresh interpreter: most of the noise comes once per process, at import.
STAGE = """
import json, sys
from pathlib import Path
from deepresearch.config import load_config
from deepresearch.judge.data import build_judge_dataset
from deepresearch.stages import train_stage

world, out, overrides = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
cfg = load_config("configs/tiny.yaml", overrides)
build_judge_dataset(cfg, world, out / "judge_data", n_tasks=2)
res = train_stage(cfg, "judge", init_model=Path("registry/models/tiny-base"), data=out / "judge_data",
                  out=out / "judge", progress=False)
print("STAGE DONE", res.steps, res.path)
"""


@requires_sandbox
def test_a_training_stage_prints_no_known_noise(small_world_dir, tmp_path):
    overrides = SMALL + [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "judge.train.max_steps=2",
                         "judge.train.nproc_per_node=1", "judge.max_len=128"]
    proc = subprocess.run([sys.executable, "-c", STAGE, str(small_world_dir), str(tmp_path), json.dumps(overrides)],
                          capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    done = next(line.split() for line in proc.stdout.splitlines() if line.startswith("STAGE DONE"))
    assert done[2] == "2" and (Path(done[3]) / "config.json").is_file()  # the stage's work is there
    card = (Path(done[3]) / "README.md").read_text()  # with its model card: stage, inputs, run
    assert "# deepresearch `judge` checkpoint" in card and "- input `judge_data`: `" in card
    assert "- MLflow run: `" in card and "- config hash: `" in card
    noise = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert not noise, "\n".join(noise)


def test_the_evaluation_deck_has_no_dependency_tab():
    """flytekit's "Dependencies" tab runs `python -m pip`, which the uv environment lacks ("No module named pip")."""
    from flytekit.deck import DeckField

    from tasks.model import evaluate

    assert evaluate.enable_deck and DeckField.DEPENDENCIES not in evaluate.deck_fields


def test_the_summary_ends_with_where_things_are(capsys, tmp_path):
    """The last lines a run prints: the report (its HTML is the Deck), MLflow, and the `mlflow ui` command."""
    from deepresearch.config import load_config
    from deepresearch.summary import render_summary, stage_record

    cfg = load_config("configs/tiny.yaml", [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    text = render_summary(
        cfg, parent_run_id="p1", world_dir="/w", datasets_dir="/d", execution_id="local",
        stage_summaries=[stage_record("world", 1.0, execution_id="local", parent_run_id="p1", produced="a world"),
                         stage_record("evaluation", 2.0, execution_id="local", parent_run_id="p1",
                                      produced="2 checkpoints", report="/r/report.md")],
        stage_run_ids=["r1", "r2"],
    )
    printed = capsys.readouterr().out.rstrip().splitlines()
    assert printed[-1] == f"browse:   mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db"
    assert printed[-3].startswith("report:   /r/report.md") and "Deck" in printed[-3]
    assert "- report:   /r/report.md" in text and "| evaluation | 2.0 | 2 checkpoints | r2 |" in text


def test_a_cached_stage_keeps_its_record_and_its_row_says_cached(tmp_path):
    """A cache hit hands on the record of the execution that produced it: its row keeps that execution's
    seconds and run, marked "(cached)". Another parent run alone is enough (two local executions in one
    process share an execution id), and a record from before records named their execution is cached too."""
    from deepresearch.config import load_config
    from deepresearch.summary import cached, render_summary, stage_record

    cfg = load_config("configs/tiny.yaml", ["tracking.enabled=false"])
    records = [stage_record("world", 3.0, execution_id="ex-1", parent_run_id="p1", produced="a world"),
               stage_record("synthesis", 4.0, execution_id="ex-2", parent_run_id="p2", produced="tasks"),
               stage_record("quality", 5.0, execution_id="ex-2", parent_run_id="p1", produced="gated")]
    text = render_summary(cfg, parent_run_id="p2", world_dir="/w", datasets_dir="/d", execution_id="ex-2",
                          stage_summaries=records, stage_run_ids=["r1", "r2", "r3"])
    assert "| world | 3.0 | (cached) a world | r1 |" in text
    assert "| synthesis | 4.0 | tasks | r2 |" in text
    assert "| quality | 5.0 | (cached) gated | r3 |" in text
    assert cached({"stage": "world", "seconds": 1.0}, "ex-2", "p2")


def test_fresh_head_hides_the_report_of_that_head_only():
    """The judge's new `score` head is expected: its LOAD REPORT goes. A report about anything else stays."""
    import logging

    from transformers import Qwen2ForSequenceClassification

    from deepresearch.console import fresh_head

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # what passes the logger's filters
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(handler)
    try:
        with fresh_head("score."):
            Qwen2ForSequenceClassification.from_pretrained("registry/models/tiny-base", num_labels=3)
        assert not [r for r in records if "LOAD REPORT" in r.getMessage()]
        with fresh_head("classifier."):  # not the head this load creates
            Qwen2ForSequenceClassification.from_pretrained("registry/models/tiny-base", num_labels=3)
        assert [r for r in records if "LOAD REPORT" in r.getMessage() and "score.weight" in r.getMessage()]
    finally:
        logger.removeHandler(handler)


class _Records(logging.Handler):
    """Keeps the records that pass a logger's level and filters."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_ray_notices_of_a_new_local_instance_are_dropped():
    """Ray's INFO lines when `ensure_ray` starts a local instance: the token it generated, the instance's start
    (with a dashboard URL though none is started). Other messages of the same loggers still pass."""
    from deepresearch.console import quiet

    quiet()
    for name, noise in (
        ("ray._private.authentication.authentication_token_setup",
         "Generated new authentication token and saved to /root/.ray/auth_token"),
        ("ray._private.worker", "Started a local Ray instance. View the dashboard at %s%s"),
    ):
        logger, seen = logging.getLogger(name), _Records()
        logger.addHandler(seen)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            logger.info(noise, "http://127.0.0.1:8265", "")
            logger.info("Connected to Ray cluster.")
        finally:
            logger.removeHandler(seen)
            logger.setLevel(level)
        assert [r.getMessage() for r in seen.records] == ["Connected to Ray cluster."], name
        assert any(noise.startswith(n) for n in NOISE)


def test_a_fresh_mlflow_store_is_opened_without_its_table_notices(tmp_path):
    """MLflow logs "Creating initial MLflow database tables..." and "Updating database tables" at INFO when it
    first opens a SQLite store; every way the project opens one (a stage's client, the registry, lineage) keeps
    them below WARNING, even after MLflow's own logger setup put `mlflow` back at INFO."""
    import mlflow  # noqa: F401 - its import configures the `mlflow` logger (INFO)

    from deepresearch.config import load_config
    from deepresearch.tracking import _client
    from deepresearch.tracking.lineage import LineageError, trace
    from deepresearch.tracking.registry import _client as registry_client

    logger, seen = logging.getLogger("mlflow.store.db.utils"), _Records()
    logger.addHandler(seen)
    try:
        for i, open_store in enumerate((
            lambda cfg: _client(cfg.tracking),
            lambda cfg: registry_client(cfg.tracking).search_registered_models(),
            lambda cfg: trace("0123abcd", cfg.tracking),
        )):
            logging.getLogger("mlflow").setLevel(logging.INFO)  # as a process that just imported mlflow
            logger.setLevel(logging.NOTSET)
            cfg = load_config("configs/tiny.yaml", [f"tracking.uri=sqlite:///{tmp_path}/fresh{i}.db"])
            try:
                open_store(cfg)
            except LineageError:
                pass  # no such run: the store was opened all the same
            assert (tmp_path / f"fresh{i}.db").is_file()
    finally:
        logger.removeHandler(seen)
    assert not [r.getMessage() for r in seen.records if r.levelno < logging.WARNING]
