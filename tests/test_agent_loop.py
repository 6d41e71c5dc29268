"""The ReAct loop: parsing, error observations, budget enforcement (forced final answer)."""

from pathlib import Path
from typing import ClassVar

import pytest

from deepresearch.agent.loop import approx_tokens, run_episode
from deepresearch.agent.schema import ToolCall, extract_citations, parse_assistant
from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, get_tool, register_tool
from deepresearch.config import AgentConfig, BudgetConfig
from deepresearch.errors import ToolError


class EchoArgs(ToolArgs):
    text: str


class Echo(Tool):
    """A test tool (not registered) so the loop is tested apart from the real tools."""

    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "echo text back"
    Args: ClassVar[type[ToolArgs]] = EchoArgs

    def run(self, args: EchoArgs, ctx: EpisodeContext) -> str:
        if args.text == "boom":
            raise ToolError("boom requested")
        if args.text == "crash":
            raise RuntimeError("bug inside the tool")
        return args.text


class Replay:
    """A policy that replays fixed turns, then repeats the last one."""

    name = "replay"

    def __init__(self, turns):
        self.turns = list(turns)
        self.calls = 0
        self.seen = []

    def reset(self, task, *, seed=""):
        pass

    def act(self, messages, tools):
        self.seen.append(list(messages))
        turn = self.turns[min(self.calls, len(self.turns) - 1)]
        self.calls += 1
        return turn


def call(text):
    return ToolCall(name="echo", arguments={"text": text}).render()


def episode(policy, tmp_path: Path, budget=BudgetConfig(), **kw):
    ctx = EpisodeContext(workspace=tmp_path, agent=AgentConfig())
    return run_episode(policy, "do it", task_id="t", capability="test", ctx=ctx, budget=budget,
                       tools={"echo": Echo()}, **kw)


def test_parse_assistant_calls_answer_and_errors():
    text = 'thinking <tool_call>{"name": "echo", "arguments": {"text": "a"}}</tool_call>' \
           '<tool_call>{"name": "echo", "arguments": {"text": </tool_call>'
    p = parse_assistant(text)
    assert [c.arguments for c in p.tool_calls] == [{"text": "a"}]
    assert len(p.errors) == 1 and "not valid JSON" in p.errors[0]
    assert p.answer is None and p.thought == "thinking"
    assert parse_assistant("x <answer> final \\cite{D1} </answer>").answer == "final \\cite{D1}"
    assert "not closed" in parse_assistant('<tool_call>{"name": "echo"').errors[0]
    assert parse_assistant('<tool_call>["echo"]</tool_call>').errors


def test_extract_citations_dedup_and_multi():
    assert extract_citations("a \\cite{D1} b \\cite{D2, D1} c \\cite{}") == ["D1", "D2"]


def test_tool_call_then_answer(tmp_path):
    traj = episode(Replay([call("hello"), "<answer>done \\cite{D7}</answer>"]), tmp_path)
    assert traj.outcome == "answered" and traj.answer == "done \\cite{D7}"
    assert traj.tool_calls == 1 and traj.tool_errors == 0 and traj.turns == 2
    tool_msgs = [m for m in traj.messages if m.role == "tool"]
    assert tool_msgs[0].content == "hello" and tool_msgs[0].name == "echo"
    assert traj.citations == ["D7"]


def test_errors_become_observations_and_episode_continues(tmp_path):
    turns = [
        '<tool_call>{"name": "echo", "arguments": {"text": }</tool_call>',  # malformed JSON
        ToolCall(name="nope", arguments={}).render(),  # unknown tool
        ToolCall(name="echo", arguments={"txt": "x"}).render(),  # invalid arguments
        call("boom"),  # ToolError
        call("crash"),  # a bug inside the tool
        "<answer>recovered</answer>",
    ]
    traj = episode(Replay(turns), tmp_path)
    errs = [m.content for m in traj.messages if m.role == "tool"]
    assert traj.outcome == "answered" and traj.answer == "recovered"
    assert traj.tool_errors == 5 and len(errs) == 5
    assert "not valid JSON" in errs[0]
    assert "unknown tool 'nope'" in errs[1] and "echo" in errs[1]
    assert "invalid arguments for echo" in errs[2] and "txt" in errs[2]
    assert "boom requested" in errs[3]
    assert "RuntimeError" in errs[4]


def test_no_action_gets_a_nudge(tmp_path):
    traj = episode(Replay(["I am thinking.", "<answer>ok</answer>"]), tmp_path)
    assert traj.outcome == "answered"
    assert any(m.role == "user" and "neither a <tool_call>" in m.content for m in traj.messages)


@pytest.mark.parametrize(
    "budget, reason",
    [
        (BudgetConfig(max_turns=3, max_tool_calls=100, max_context_tokens=100_000), "3 turns"),
        (BudgetConfig(max_turns=100, max_tool_calls=2, max_context_tokens=100_000), "2 tool calls"),
        (BudgetConfig(max_turns=100, max_tool_calls=100, max_context_tokens=1500), "context"),
        (BudgetConfig(max_turns=100, max_tool_calls=100, max_context_tokens=100_000, max_output_tokens=120),
         "generated tokens"),
    ],
)
def test_budget_forces_a_final_answer(tmp_path, budget, reason):
    policy = Replay([call("x " * 50)])  # never answers on its own
    traj = episode(policy, tmp_path, budget=budget)
    assert traj.outcome == "budget_exhausted"
    assert reason in traj.metadata["budget_reason"]
    assert traj.tool_calls <= budget.max_tool_calls and traj.turns <= budget.max_turns + 1
    forced = [m for m in traj.messages if m.role == "user" and m.content.startswith("Budget exhausted")]
    assert len(forced) == 1
    assert traj.answer is not None  # the forced turn's text is kept as the answer


def test_generated_token_budget_counts_with_the_policys_tokenizer(tmp_path):
    # every turn "costs" 100 tokens under the policy's count: after 3 turns (300 ≥ 250) the 4th is forced
    budget = BudgetConfig(max_turns=100, max_tool_calls=100, max_context_tokens=100_000, max_output_tokens=250)
    junk = Replay(["zzz " * 30])  # neither a call nor an answer, as an untrained checkpoint writes
    traj = episode(junk, tmp_path, budget=budget, count_tokens=lambda text: 100)
    assert traj.outcome == "budget_exhausted" and traj.metadata["budget_reason"] == "300 generated tokens"
    assert traj.turns == 4 and traj.metadata["output_tokens"] == 400
    # an episode that answers within the budget is not touched, and reports what it generated
    done = episode(Replay(["<answer>ok</answer>"]), tmp_path, budget=budget, count_tokens=lambda text: 100)
    assert done.outcome == "answered" and done.metadata["output_tokens"] == 100


def test_turns_without_an_action_force_the_final_answer(tmp_path):
    budget = BudgetConfig(max_turns=100, max_tool_calls=100, max_context_tokens=100_000, max_idle_turns=2)
    junk = episode(Replay(["zzz", '<tool_call>{"name": broken</tool_call>']), tmp_path, budget=budget)
    # text only, then a malformed call (no action either): the third turn is the forced answer
    assert junk.metadata["budget_reason"] == "2 turns without a tool call or an answer" and junk.turns == 3
    # one idle turn between actions (a recovery, as the expert's injected errors) resets the count
    recovering = Replay(["zzz", call("a"), "zzz", call("b"), "<answer>ok</answer>"])
    assert episode(recovering, tmp_path, budget=budget).outcome == "answered"


def test_tool_budget_refuses_extra_calls_in_one_turn(tmp_path):
    many = " ".join(call(str(i)) for i in range(5))
    traj = episode(Replay([many, "<answer>a</answer>"]), tmp_path,
                   budget=BudgetConfig(max_turns=10, max_tool_calls=3, max_context_tokens=100_000))
    assert traj.tool_calls == 3
    assert sum("budget" in m.content for m in traj.messages if m.role == "tool") == 2


def test_policy_exception_is_recorded_not_raised(tmp_path):
    class Broken(Replay):
        def act(self, messages, tools):
            raise ConnectionError("endpoint down")

    traj = episode(Broken([]), tmp_path)
    assert traj.outcome == "policy_error" and "endpoint down" in traj.metadata["policy_error"]


def test_system_prompt_lists_tool_schemas(tmp_path):
    policy = Replay(["<answer>x</answer>"])
    episode(policy, tmp_path)
    system = policy.seen[0][0].content
    assert "<tools>" in system and '"name": "echo"' in system and "<tool_call>" in system


def test_registry_refuses_duplicates_and_lists_names():
    with pytest.raises(ToolError, match=r"unknown tool 'no_such_tool'; valid: batch_web_surfer, .*todo"):
        get_tool("no_such_tool")
    existing = get_tool("todo")
    with pytest.raises(ValueError, match="already registered"):
        register_tool(existing)


def test_approx_tokens_is_deterministic():
    assert approx_tokens("Hello, world!") == 4


# ---- the episode runner (agent/episode.py) ---------------------------------------------------------
def test_play_episode_resets_runs_in_a_fresh_workspace_and_cleans_up(monkeypatch):
    """What synthesis, rollouts and evaluation share: reset with the seed, the task's prompt, the policy's
    own token count, a workspace of its own (gone afterwards), the tool context closed."""
    from types import SimpleNamespace

    from deepresearch.agent.episode import play_episode

    closed = []  # (workspace, whether the episode's file was in it at close)
    real_close = EpisodeContext.close

    def close(self):
        closed.append((self.workspace, (self.workspace / "notes.md").is_file()))
        real_close(self)

    monkeypatch.setattr(EpisodeContext, "close", close)

    class Counting(Replay):
        def reset(self, task, *, seed=""):
            self.reset_with = (task.task_id, seed)

        def count_tokens(self, text):
            return 1000  # the policy's own tokenizer, so to speak

    task = SimpleNamespace(task_id="ds-1", capability="deep_search", question="Who founded Zephyr?")
    write = ToolCall(name="file", arguments={"action": "write", "path": "notes.md", "content": "x"}).render()
    policy = Counting([write, "<answer>Ada</answer>"])
    agent = AgentConfig(budget=BudgetConfig(max_context_tokens=100_000))
    traj = play_episode(policy, task, agent, None, seed="s:ds-1:0", trajectory_id="ds-1:a0")
    assert policy.reset_with == ("ds-1", "s:ds-1:0")
    assert (traj.trajectory_id, traj.task_id, traj.capability) == ("ds-1:a0", "ds-1", "deep_search")
    assert traj.messages[1].content == "Who founded Zephyr?" and traj.answer == "Ada" and traj.tool_errors == 0
    assert traj.tokens == len(traj.messages) * (1000 + 4)  # counted with the policy's count, not approx_tokens
    (ws, had_file), = closed
    assert had_file and not ws.exists()  # the tool wrote into the workspace; closed, then removed

    play_episode(Counting(["<answer>b</answer>"]), task, agent, None, seed="s:ds-1:1")
    assert len(closed) == 2 and closed[1][0] != ws and not closed[1][1]  # a fresh, empty workspace each time
    with pytest.raises(TypeError, match="a question, a prompt or a query"):
        play_episode(Counting(["<answer>b</answer>"]), SimpleNamespace(task_id="x", capability="c"), agent, None,
                     seed="")


def test_play_episode_runs_a_prompt_in_words_in_a_workspace_it_keeps(tmp_path):
    """`deepresearch agent run --task ... --workspace DIR`: the policy is reset with the prompt itself, the
    episode is a deep-research one, and what the tools wrote stays in DIR."""
    from deepresearch.agent.episode import PROMPT_TASK_ID, play_episode

    class Recording(Replay):
        def reset(self, task, *, seed=""):
            self.reset_with = (task, seed)

    write = ToolCall(name="file", arguments={"action": "write", "path": "notes.md", "content": "x"}).render()
    policy = Recording([write, "<answer>Ada</answer>"])
    ws = tmp_path / "kept" / "ws"
    traj = play_episode(policy, "Who founded Zephyr?", AgentConfig(), None, seed="cli", workspace=ws)
    assert policy.reset_with == ("Who founded Zephyr?", "cli")
    assert (traj.task_id, traj.capability, traj.answer) == (PROMPT_TASK_ID, "deep_research", "Ada")
    assert traj.messages[1].content == "Who founded Zephyr?" and traj.tool_errors == 0
    assert (ws / "notes.md").read_text() == "x"
