"""The OpenAI-compatible policy against a chat-completions server on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deepresearch.agent.loop import run_episode
from deepresearch.agent.policies.base import make_policy
from deepresearch.agent.policies.openai_compat import to_openai_messages
from deepresearch.agent.schema import Message
from deepresearch.agent.tools.base import EpisodeContext
from deepresearch.config import AgentConfig, OpenAIPolicyConfig


class Server:
    """Answers /v1/chat/completions with queued replies and records the requests it got."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                content, tool_calls = outer.replies.pop(0)
                msg = {"role": "assistant", "content": content}
                if tool_calls:
                    msg["tool_calls"] = tool_calls
                payload = {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    servers = []

    def make(replies):
        s = Server(replies)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_tool_results_are_rendered_as_tool_response_blocks():
    msgs = [Message(role="system", content="s"), Message(role="user", content="q"),
            Message(role="assistant", content="<tool_call>{}</tool_call>"),
            Message(role="tool", name="todo", content="A"), Message(role="tool", name="todo", content="B")]
    out = to_openai_messages(msgs)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[-1]["content"] == "<tool_response>\nA\n</tool_response>\n<tool_response>\nB\n</tool_response>"


def test_episode_against_a_local_endpoint(server, tmp_path, monkeypatch):
    structured = [{"id": "c1", "type": "function",
                   "function": {"name": "todo", "arguments": json.dumps({"action": "add", "steps": ["search"]})}}]
    s = server([("Let me plan.", structured), ("<answer>All done.</answer>", None)])
    monkeypatch.setenv("TEST_KEY", "sk-test")
    cfg = AgentConfig(openai=OpenAIPolicyConfig(base_url=s.url, model="teacher", api_key_env="TEST_KEY"))
    policy = make_policy("openai", cfg)
    ctx = EpisodeContext(workspace=tmp_path, agent=cfg)
    traj = run_episode(policy, "Research X", task_id="t", capability="deep_research", ctx=ctx, budget=cfg.budget)
    ctx.close()
    assert traj.outcome == "answered" and traj.answer == "All done."
    assert traj.tool_calls == 1 and traj.tool_errors == 0  # the structured call became a Hermes call and ran
    # ... written as the chat template writes `tool_calls`, as the training data has them
    assert traj.messages[2].content == (
        'Let me plan.\n<tool_call>\n{"name": "todo", "arguments": {"action": "add", "steps": ["search"]}}\n</tool_call>'
    )
    assert s.requests[0]["path"] == "/v1/chat/completions"
    assert s.requests[0]["auth"] == "Bearer sk-test"
    assert s.requests[0]["body"]["model"] == "teacher"
    second = s.requests[1]["body"]["messages"]
    assert second[-1]["role"] == "user" and second[-1]["content"].startswith("<tool_response>")


def test_structured_tool_calls_become_the_text_the_template_writes(server):
    """A server with a tool-call parser (vLLM's `hermes`) hands back `content` (the newline before the
    first call kept) and `tool_calls`; the policy writes them back as the model wrote them, as
    `ToolCall.render` and the chat template do: non-ASCII kept, each call on lines of its own.
    Arguments that are not a JSON object stay as sent, for the loop to report."""
    from deepresearch.agent.schema import ToolCall, with_tool_calls

    def call(name, arguments):
        return {"id": name, "type": "function", "function": {"name": name, "arguments": arguments}}

    a = ToolCall(name="batch_web_surfer", arguments={"search": ["café"]})
    b = ToolCall(name="todo", arguments={"action": "list"})
    s = server([("Searching.\n", [call(a.name, json.dumps(a.arguments)), call(b.name, '{"action": "list"}')]),
                (None, [call(b.name, json.dumps(b.arguments))]),
                ("", [call("todo", '{"action": ')])])
    policy = make_policy("openai", AgentConfig(openai=OpenAIPolicyConfig(base_url=s.url, model="m")))
    msgs = [Message(role="user", content="q")]
    assert policy.act(msgs, []) == with_tool_calls("Searching.", [a.render(), b.render()])
    assert policy.act(msgs, []) == b.render()
    assert policy.act(msgs, []) == '<tool_call>\n{"name": "todo", "arguments": {"action": }\n</tool_call>'


def test_unreachable_endpoint_is_a_policy_error(tmp_path):
    cfg = AgentConfig(openai=OpenAIPolicyConfig(base_url="http://127.0.0.1:9/v1", timeout_s=2))
    policy = make_policy("openai", cfg)
    policy.client = policy.client.with_options(max_retries=0)
    ctx = EpisodeContext(workspace=tmp_path, agent=cfg)
    traj = run_episode(policy, "q", task_id="t", capability="x", ctx=ctx, budget=cfg.budget)
    assert traj.outcome == "policy_error" and "Connection" in traj.metadata["policy_error"]


def test_unknown_policy_name_lists_valid_ones():
    with pytest.raises(ValueError, match="scripted, openai"):
        make_policy("gpt", AgentConfig())
