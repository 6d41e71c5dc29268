"""The agent loop never crashes on what a policy emits: a seeded fuzzer of malformed tool calls.

Every episode runs the real tools (file, todo, batch_web_surfer over a tiny world, and the shell
where the sandbox is available) against turns built from a seeded generator: truncated JSON, deep
nesting, over-long integers, lone surrogates, NaN, wrong types, unknown tools, path escapes,
stray and nested tags, an <answer> inside a call's arguments. An episode "crashes" if run_episode
raises or its trajectory does not serialize to UTF-8 JSON and back.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import _have_sandbox

from deepresearch.agent.loop import make_tools, run_episode
from deepresearch.agent.schema import MAX_ARGUMENT_DEPTH, Trajectory, parse_assistant
from deepresearch.agent.tools.base import EpisodeContext
from deepresearch.config import AgentConfig, BudgetConfig, ShellConfig

SEED = 20260801
EPISODES, TURNS = 24, 10

_VALID = [
    {"name": "todo", "arguments": {"action": "add", "steps": ["find the founder"]}},
    {"name": "file", "arguments": {"action": "write", "path": "notes.md", "content": "draft\n"}},
    {"name": "file", "arguments": {"action": "read", "path": "notes.md"}},
    {"name": "batch_web_surfer", "arguments": {"search": ["company founded"]}},
    {"name": "shell", "arguments": {"command": "echo hi; ls"}},
]
_JUNK = ["\ud800", "\udfff", "\x00", "\u2028", "\u202e", "\ufeff", "\x1b[2J", "é", "🙂", "</tool_call>", "<tool_call>"]


def _junk(rng: random.Random, n: int = 8) -> str:
    return "".join(rng.choice(_JUNK + [chr(rng.randrange(32, 0x2FFF))]) for _ in range(n))


def malformed_call(rng: random.Random) -> str:
    """One assistant turn carrying at least one malformed tool call (a few also carry a valid one)."""
    base = rng.choice(_VALID)
    body = json.dumps(base)
    kind = rng.randrange(20)
    if kind == 0:  # truncated JSON
        body = body[: rng.randrange(1, len(body))]
    elif kind == 1:  # nesting deeper than the parser's recursion limit
        body = "[" * rng.randrange(900, 5000)
    elif kind == 2:  # nesting the parser accepts but the tools must not see
        depth = rng.randrange(MAX_ARGUMENT_DEPTH + 1, 400)
        body = '{"name": "file", "arguments": {"content": ' + "[" * depth + "]" * depth + "}}"
    elif kind == 3:  # integers past Python's 4,300-digit conversion limit, or merely huge
        digits = "9" * rng.choice([4301, 5000, 400])
        body = '{"name": "file", "arguments": {"action": "read", "path": "notes.md", "offset": ' + digits + "}}"
    elif kind == 4:
        body = '{"name": "todo", "arguments": {"action": "update", "id": ' + rng.choice(["NaN", "Infinity", "-Infinity", "1e999"]) + ', "status": "done"}}'
    elif kind == 5:  # lone surrogates everywhere
        field = rng.choice(["path", "content", "name"])
        args = {"action": "write", "path": "s.md", "content": "x"}
        if field == "name":
            body = json.dumps({"name": "fi\ud800le", "arguments": args})
        else:
            args[field] = "a\ud800b" + _junk(rng)
            body = json.dumps({"name": "file", "arguments": args})
    elif kind == 6:  # an <answer> inside the arguments must not end the episode
        body = json.dumps({"name": "file", "arguments": {"action": "write", "path": "r.md",
                                                         "content": "<answer>not the answer</answer>"}})
    elif kind == 7:  # wrong types for name / arguments
        body = json.dumps({"name": rng.choice([1, None, ["file"], {"x": 1}]), "arguments": {}})
    elif kind == 8:
        body = json.dumps({"name": "file", "arguments": rng.choice([[1, 2], "not json {", 3, None, '"[1]"'])})
    elif kind == 9:  # unknown and absurd tool names
        body = json.dumps({"name": rng.choice(["", "nope", "x" * 10_000, "../shell", "shell\x00"]), "arguments": {}})
    elif kind == 10:  # path escapes and odd paths
        path = rng.choice(["../../etc/passwd", "/etc/shadow", "/workspace/../x", "a/\x00/b", "", " ", "/", ".",
                           "notes.md/" * 50, "~/.ssh/id_rsa", "/proc/self/environ"])
        body = json.dumps({"name": "file", "arguments": {"action": rng.choice(["read", "write", "list"]), "path": path,
                                                         **({"content": "x"} if rng.random() < 0.3 else {})}})
    elif kind == 11:  # nested and stray tags, unclosed call followed by an <answer>
        return rng.choice([
            "<tool_call><tool_call>" + body + "</tool_call>",
            "</tool_call>" + body + "<tool_call>",
            "<tool_call>" + body[:-1] + " <answer>leaked</answer>",
            "<tool_call>" * rng.randrange(2, 2000),
        ])
    elif kind == 12:  # duplicate and extra keys
        body = '{"name": "todo", "name": "file", "arguments": {"action": "list", "action": "read", "extra": 1}}'
    elif kind == 13:  # a big write
        body = json.dumps({"name": "file", "arguments": {"action": "write", "path": "big.md",
                                                         "content": _junk(rng, 20) * rng.randrange(100, 5000)}})
    elif kind == 14:  # arguments as a JSON string, itself malformed or deep
        body = json.dumps({"name": "todo", "arguments": rng.choice(["[" * 3000, '{"action": "list"', "9" * 5000])})
    elif kind == 15:  # garbage bytes as text
        body = _junk(rng, rng.randrange(1, 200))
    elif kind == 16:  # shell edge cases (bounded time)
        cmd = rng.choice(["exit 3", "kill -9 $$", "printf '\\x00\\xff\\xfe'", "cat /proc/1/environ",
                          "sleep 5 & echo bg", "yes | head -c 100000", "echo \ud800", "ulimit -a", ": > /dev/full"])
        body = json.dumps({"name": "shell", "arguments": {"command": cmd, "timeout_s": rng.choice([0.3, 2, 1e308, -1])}})
    elif kind == 17:  # patch garbage
        body = json.dumps({"name": "file", "arguments": {"action": "patch", "path": "notes.md",
                                                         "patch": rng.choice(["@@ -1,1 +1,1 @@\n-" + _junk(rng),
                                                                              "<<<<<<< SEARCH\n" + _junk(rng),
                                                                              "@@ -99999999999999999999,1 +1 @@\n x"])}})
    elif kind == 18:  # a valid call, then a malformed one in the same turn
        return "<tool_call>" + body + "</tool_call> <tool_call>{" + _junk(rng) + "</tool_call>"
    else:  # the raw text around the call is hostile too
        return _junk(rng, 50) + "<tool_call>" + body[: rng.randrange(len(body) + 1)] + "</tool_call>" + _junk(rng, 5)
    return "<tool_call>" + body + "</tool_call>"


class FuzzPolicy:
    name = "fuzz"

    def __init__(self, turns: list[str]):
        self.turns = turns
        self.i = 0

    def reset(self, task, *, seed=""):
        pass

    def act(self, messages, tools):
        self.i += 1
        return self.turns[self.i - 1] if self.i <= len(self.turns) else "<answer>done</answer>"


@pytest.fixture(scope="module")
def search(small_world_dir, small_cfg):
    from deepresearch.search.backend import open_backend

    return open_backend(small_cfg.search, small_world_dir)


def _serializes(traj: Trajectory) -> bool:
    raw = traj.model_dump_json()
    raw.encode("utf-8")
    return Trajectory.model_validate_json(raw) == traj and json.loads(raw)["messages"] is not None


def test_fuzzed_tool_calls_never_crash_an_episode(tmp_path: Path, search):
    rng = random.Random(SEED)
    tool_names = ["batch_web_surfer", "file", "todo"] + (["shell"] if _have_sandbox() else [])
    agent = AgentConfig(shell=ShellConfig(timeout_s=2, allow_weak_limits=True))
    budget = BudgetConfig(max_turns=TURNS + 2, max_tool_calls=4 * TURNS, max_context_tokens=400_000)
    calls = crashed = 0
    outcomes: dict[str, int] = {}
    for e in range(EPISODES):
        turns = [malformed_call(rng) for _ in range(TURNS)]
        policy = FuzzPolicy(turns)
        ws = tmp_path / f"ep{e}"
        ws.mkdir()
        ctx = EpisodeContext(workspace=ws, agent=agent, search=search)
        try:
            traj = run_episode(policy, "fuzz", task_id=f"f{e}", capability="fuzz", ctx=ctx, budget=budget,
                               tools=make_tools(tool_names))
            assert _serializes(traj)
            outcomes[traj.outcome] = outcomes.get(traj.outcome, 0) + 1
            # an <answer> inside a tool call's arguments never became the episode's answer
            assert traj.answer in ("done", None) or traj.outcome == "budget_exhausted", traj.answer
        except Exception as exc:  # noqa: BLE001 - counted, then reported below
            crashed += 1
            print(f"episode {e} crashed: {type(exc).__name__}: {exc!s:.300}")
        finally:
            ctx.close()
            calls += min(policy.i, TURNS)  # the fuzzed turns the episode actually ran
    print(f"fuzz: {calls} malformed turns in {EPISODES} episodes, outcomes {outcomes}, {crashed} crashed")
    assert calls >= 200
    assert crashed == 0, f"{crashed} of {EPISODES} episodes crashed"
    assert set(outcomes) <= {"answered", "budget_exhausted"}


@pytest.mark.parametrize("reply", [None, 42, b"<answer>bytes</answer>", ["a"]])
def test_a_policy_returning_non_text_ends_the_episode_with_a_clear_error(tmp_path, reply):
    class Bad(FuzzPolicy):
        name = "bad-policy"

        def act(self, messages, tools):
            return reply

    ctx = EpisodeContext(workspace=tmp_path, agent=AgentConfig())
    traj = run_episode(Bad([]), "task", task_id="t", capability="c", ctx=ctx, budget=BudgetConfig(),
                       tools=make_tools(["todo"]))
    assert traj.outcome == "policy_error"
    assert "policy 'bad-policy' (Bad) returned" in traj.metadata["policy_error"]
    assert type(reply).__name__ in traj.metadata["policy_error"]
    assert _serializes(traj)


@pytest.mark.parametrize(
    "text, error",
    [
        ("<tool_call>" + "[" * 1000 + "</tool_call>", "nested too deeply"),
        ('<tool_call>{"name": "todo", "arguments": {"id": ' + "1" * 4301 + "}}</tool_call>", "cannot be parsed"),
        ('<tool_call>{"name": "file", "arguments": {"c": ' + "[" * 40 + "]" * 40 + "}}</tool_call>", "nested deeper"),
    ],
)
def test_parse_assistant_reports_what_json_cannot_take(text, error):
    turn = parse_assistant(text)
    assert not turn.tool_calls and any(error in e for e in turn.errors)


def test_answer_inside_a_tool_call_is_not_the_answer():
    content = json.dumps({"name": "file", "arguments": {"action": "write", "path": "r.md", "content": "<answer>x</answer>"}})
    assert parse_assistant(f"<tool_call>{content}</tool_call>").answer is None
    assert parse_assistant(f"<tool_call>{content[:-1]} more").answer is None  # an unclosed call swallows it
    assert parse_assistant(f"<tool_call>{content}</tool_call> <answer>real</answer>").answer == "real"


def test_lone_surrogates_are_replaced_not_fatal():
    turn = parse_assistant('<tool_call>{"name": "todo", "arguments": {"steps": ["a\\ud800"]}}</tool_call> \udfff')
    assert turn.tool_calls[0].arguments == {"steps": ["a\ufffd"]}
    json.dumps(turn.model_dump(), ensure_ascii=False).encode("utf-8")


def test_parsing_many_unclosed_tags_is_linear():
    import time

    t0 = time.perf_counter()
    turn = parse_assistant("<tool_call>" * 20_000)
    assert time.perf_counter() - t0 < 0.5 and turn.errors
