"""A quiet console: third-party messages known to be harmless here, silenced where they arise.

Each is silenced by a filter for exactly that message on the logger (or warnings category) that emits
it, or by the library's own switch — never by hiding all warnings or a whole library's log. `quiet()`
is idempotent; the library calls it where the noisy package is used (loading and saving checkpoints,
joining the DeepSpeed process group, evaluation, Ray rollout actors), so a Flyte task, a CLI command,
a torchrun worker and a Ray actor are quiet alike.

| message | from | why it is harmless here |
|---|---|---|
| "Loading weights" / "Writing model shards" bars | transformers | checkpoints load and save in seconds; stages report their own progress |
| "Setting accelerator to CPU ..." | DeepSpeed | the project picks the device itself (`training.distributed.on_gpu`) |
| "No CUDA runtime is found ..." | torch.utils.cpp_extension | DeepSpeed's CPU ops need no CUDA |
| "DeepSpeed ... built successfully" | DeepSpeed (a print) | the shared-memory allreduce op compiled; a failure still raises |
| "`torch.distributed.all_gather_into_tensor` is deprecated" | torch, called by DeepSpeed | DeepSpeed's choice of collective, not ours |
| "... LOAD REPORT ... score.weight MISSING" | transformers | a head the stage creates on purpose (`fresh_head`) |
| "Token authentication is enabled for this Ray cluster ..." | Ray | its default for a new local cluster, kept |
| "Generated new authentication token and saved to ..." | Ray | the token of that default, in ~/.ray |
| "Started a local Ray instance. View the dashboard at ..." | Ray | a local instance for the rollout actors (no dashboard is started: `include_dashboard=False`) |

Elsewhere, at their own source: the Flyte Deck's dependency tab that runs `python -m pip`, which a uv
environment lacks ("No module named pip"): `tasks.model.evaluate` lists its Deck fields without it;
MLflow's "Creating initial MLflow database tables..." / "Updating database tables" on a fresh store:
`tracking.quiet_mlflow`, wherever the project opens a store. Not silenced, as it cannot be from the
workflow: pyflyte's own last line for a local run, the workflow's outputs (`click.echo(outputs)`).

    from deepresearch.console import quiet, fresh_head
    quiet()
    with fresh_head("score."):
        model = Qwen2ForSequenceClassification.from_pretrained(policy_dir)
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import warnings
from typing import Iterator

# What the filters below drop (tests/test_console.py asserts none reaches a stage's output).
NOISE = (
    "Loading weights",
    "Writing model shards",
    "Setting accelerator to CPU",
    "No CUDA runtime is found",
    "built successfully",
    "all_gather_into_tensor",
    "LOAD REPORT",
    "Token authentication is enabled",
    "Generated new authentication token",
    "Started a local Ray instance",
    "No module named pip",
    "Creating initial MLflow database tables",
    "Updating database tables",
)


class _Drop(logging.Filter):
    """Drops the records of one logger whose message starts with one known text."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _add_filter(logger_name: str, prefix: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _Drop) and f.prefix == prefix for f in logger.filters):
        logger.addFilter(_Drop(prefix))


def quiet() -> None:
    """Silence the known, harmless messages of the table above in this process (idempotent)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' own bars only; Hub download bars stay
    _add_filter("DeepSpeed", "Setting accelerator to CPU")  # logged when deepspeed is first imported
    _add_filter("torch.utils.cpp_extension", "No CUDA runtime is found")
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
                            category=FutureWarning)
    _add_filter("ray._private.authentication.authentication_token_setup",
                "Token authentication is enabled for this Ray cluster")
    _add_filter("ray._private.authentication.authentication_token_setup", "Generated new authentication token")
    _add_filter("ray._private.worker", "Started a local Ray instance")


class _LineFilter(io.TextIOBase):
    """A text stream that passes everything to `target` but the whole lines matching `pattern`."""

    def __init__(self, target, pattern: re.Pattern):
        self.target, self.pattern, self.pending = target, pattern, ""

    def write(self, s: str) -> int:
        self.pending += s
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not self.pattern.search(line):
                self.target.write(line + "\n")
        return len(s)

    def flush(self) -> None:
        if self.pending and not self.pattern.search(self.pending):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


@contextlib.contextmanager
def without_prints(pattern: str) -> Iterator[None]:
    """Drop the lines matching `pattern` that Python code prints to stdout meanwhile (a library that
    `print`s a known notice, e.g. DeepSpeed's "... built successfully"); everything else passes."""
    stream = _LineFilter(sys.stdout, re.compile(pattern))
    with contextlib.redirect_stdout(stream):
        try:
            yield
        finally:
            stream.flush()


class _FreshHead(logging.Filter):
    """Drops a transformers LOAD REPORT whose every row is a MISSING key under the expected prefixes."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "LOAD REPORT" not in msg:
            return True
        rows = [[c.strip() for c in line.split("|")] for line in msg.splitlines()[1:] if "|" in line]
        rows = [r for r in rows if len(r) >= 2 and r[0] not in ("Key", "") and not set(r[0]) <= {"-", "+"}]
        expected = bool(rows) and all(r[1] == "MISSING" and r[0].startswith(self.prefixes) for r in rows)
        return not expected


@contextlib.contextmanager
def fresh_head(*prefixes: str) -> Iterator[None]:
    """While loading a backbone into a model with a head the caller creates on purpose (the judge's
    `score`), drop transformers' report that exactly those weights are new; any other load problem
    (an unexpected or mismatched key, another missing one) is still reported."""
    logger = logging.getLogger("transformers.modeling_utils")
    f = _FreshHead(tuple(prefixes))
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)
