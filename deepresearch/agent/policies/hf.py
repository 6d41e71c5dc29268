"""A local Hugging Face causal LM as the agent's policy, recording what RL needs.

    policy = HFPolicy.from_pretrained("out/sft", engine="transformers", max_new_tokens=256)
    policy.reset(task, seed="step3:task17")
    traj = run_episode(policy, prompt, ..., count_tokens=policy.count_tokens)
    episode = policy.to_experience(traj)   # token ids, action mask, log π_old — an RL sample

Each turn renders the conversation with the tokenizer's chat template (`add_generation_prompt`) as
a Qwen2.5 user would pass it: `apply_chat_template(chat, tools=schemas)` with structured `tool_calls`
(`deepresearch.modeling.chat.to_structured_chat`), which this project's template renders to exactly
the text training encodes. A template that does not render `tools=` that way (a checkpoint's own,
without a tools branch) gets the conversation as plain text, the tools inside the system message:
the same text again. It then samples one assistant turn through a `GenerationEngine` until a stop
token (`<|im_end|>`, EOS) or `max_new_tokens`. The context is never re-tokenized: after the first
turn only the *new* text (the end of the previous assistant turn as the template writes it, the
tool observations or user messages added since, and the next generation prompt) is tokenized and
appended to the exact ids the policy saw and sampled. So the episode's token sequence is exactly what the model conditioned
on, the action mask selects exactly the sampled tokens, and the recorded log-probs are those of
the tokens the learner will score. This needs a prefix-stable chat template (rendering a
conversation extends the rendering of any earlier prefix ending in an assistant turn), as
Qwen2.5's is; a template that is not is reported with an error, never silently re-tokenized.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepresearch.agent.policies.base import PolicyName, register_policy
from deepresearch.errors import ConfigError, DeepResearchError
from deepresearch.modeling.chat import template_renders_structured, to_chat_dicts, to_structured_chat

if TYPE_CHECKING:
    from deepresearch.agent.schema import Episode, Message, Trajectory
    from deepresearch.config import AgentConfig
    from deepresearch.generation.engine import EngineOptions, GenerationEngine

IM_END = "<|im_end|>"


class ChatTemplateError(DeepResearchError):
    """The chat template re-renders earlier turns differently, so the context cannot be extended exactly."""


class ContextFullError(DeepResearchError):
    """The conversation no longer fits the model's context window."""


@dataclass(frozen=True)
class TurnRecord:
    """One assistant turn as tokens."""

    context_ids: list[int]  # not sampled, fed before this turn: end of the previous turn, new messages, gen prompt
    sampled_ids: list[int]  # sampled by the policy; ends with the stop id when finish_reason == "stop"
    logprobs: list[float]  # log π_θ(sampled_i | everything before), at the sampling temperature
    finish_reason: str  # "stop" | "length"
    text: str  # the turn returned to the loop: sampled ids decoded, stop token excluded


def _seed_int(seed: str) -> int:
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % (2**63)


class HFPolicy:
    """Policy over a local causal LM; keeps the episode's tokens, action mask and log-probs."""

    name = "hf"

    def __init__(
        self,
        tokenizer: Any,
        engine: "GenerationEngine",
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        stop_ids: list[int] | None = None,
    ):
        """
        Args:
            tokenizer: a HF tokenizer with a chat template.
            engine: samples continuations and reports log π_θ of each sampled token.
            max_new_tokens: per assistant turn (also capped by the room left in the context).
            temperature: sampling temperature; log-probs are recorded for the same distribution
                (at temperature 1 when greedy, temperature 0).
            stop_ids: default `<|im_end|>` and the tokenizer's EOS.
        """
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError("HFPolicy needs a tokenizer with a chat template (tokenizer.chat_template is None)")
        self.tokenizer = tokenizer
        self.engine = engine
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.stop_ids = stop_ids if stop_ids is not None else default_stop_ids(tokenizer)
        self.structured = template_renders_structured(tokenizer)  # else: plain text, the tools in the system message
        self.reset("")

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        engine: str = "transformers",
        options: "EngineOptions | None" = None,
        **kwargs: Any,
    ) -> "HFPolicy":
        """Load tokenizer and model from an HF checkpoint directory into the named engine."""
        from transformers import AutoTokenizer

        from deepresearch.generation.engine import EngineOptions, make_engine

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return cls(tokenizer, make_engine(engine, model_dir, options or EngineOptions()), **kwargs)

    # -- Policy protocol -----------------------------------------------------------------------

    def reset(self, task: Any, *, seed: str = "") -> None:
        """Start a new episode: forget the recorded tokens; per-turn seeds derive from `seed`."""
        self._seed = _seed_int(seed)
        self._clear()

    def _clear(self) -> None:
        self._turns: list[TurnRecord] = []
        self._ids: list[int] = []
        self._mask: list[int] = []
        self._logp: list[float] = []
        self._seen: list[tuple[str, str]] = []  # (role, content) of the conversation at the last turn's prompt
        self._prompt_text = ""  # its rendering, generation prompt included

    def act(self, messages: list["Message"], tools: list[dict[str, Any]]) -> str:
        """Sample the next assistant turn. The tool schemas are those the system message lists (`tools`)."""
        chat = [(m.role, m.content) for m in messages]
        now_text = self._render(messages, generation_prompt=True)
        if self._turns and self._continues(chat):
            new_text = self._new_text(messages, now_text)
        else:  # a conversation this policy has not been following: start over
            self._clear()
            new_text = now_text
        context_ids = list(self.tokenizer.encode(new_text, add_special_tokens=False))
        prompt_ids = self._ids + context_ids
        room = self.engine.max_context_len - len(prompt_ids)
        if room <= 0:
            raise ContextFullError(
                f"the conversation is {len(prompt_ids)} tokens, the model's context is {self.engine.max_context_len}"
            )
        gen = self.engine.generate(
            prompt_ids,
            max_new_tokens=min(self.max_new_tokens, room),
            temperature=self.temperature,
            stop_ids=self.stop_ids,
            seed=(self._seed + len(self._turns)) % (2**63),
        )
        content_ids = gen.token_ids[:-1] if gen.finish_reason == "stop" else gen.token_ids
        text = self.tokenizer.decode(content_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        self._turns.append(TurnRecord(context_ids, list(gen.token_ids), list(gen.logprobs), gen.finish_reason, text))
        self._ids += context_ids + list(gen.token_ids)
        self._mask += [0] * len(context_ids) + [1] * len(gen.token_ids)
        self._logp += [0.0] * len(context_ids) + list(gen.logprobs)
        self._seen = chat
        self._prompt_text = now_text
        return text

    # -- RL ----------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under this policy's tokenizer (for the loop's context budget)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def turns(self) -> list[TurnRecord]:
        return list(self._turns)

    def to_experience(
        self, trajectory: "Trajectory", *, episode_id: str | None = None, weights_version: int = 0, worker: str = ""
    ) -> "Episode":
        """The current episode as an RL sample.

        Args:
            trajectory: what `run_episode` returned for the episode this policy just played.
            weights_version: the version of the weights that generated it.
        Returns:
            Episode with token ids (prompt + all turns + observations in between), the action mask
            (1 exactly on sampled tokens) and log π_old aligned to tokens.
        Raises:
            ValueError: the trajectory's assistant turns are not the ones this policy produced.
        """
        from deepresearch.agent.schema import Episode

        said = [m.content for m in trajectory.messages if m.role == "assistant"]
        if said != [t.text for t in self._turns]:
            raise ValueError(
                f"trajectory {trajectory.trajectory_id} has {len(said)} assistant turns that do not match the "
                f"{len(self._turns)} this policy recorded; call to_experience right after the episode, before reset"
            )
        return Episode(
            episode_id=episode_id or trajectory.trajectory_id,
            task_id=trajectory.task_id,
            capability=trajectory.capability,
            token_ids=list(self._ids),
            action_mask=list(self._mask),
            logprobs=list(self._logp),
            trajectory=trajectory,
            weights_version=weights_version,
            worker=worker,
            metadata={"finish_reasons": [t.finish_reason for t in self._turns]},  # "length": a turn was cut
        )

    # -- internals ---------------------------------------------------------------------------

    def _render(self, messages: list["Message"], generation_prompt: bool) -> str:
        if self.structured:
            chat, tools = to_structured_chat(messages)
            return self.tokenizer.apply_chat_template(
                chat, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
            )
        return self.tokenizer.apply_chat_template(
            to_chat_dicts(messages), tokenize=False, add_generation_prompt=generation_prompt
        )

    def _continues(self, chat: list[tuple[str, str]]) -> bool:
        n = len(self._seen)
        return len(chat) > n and chat[:n] == self._seen and chat[n] == ("assistant", self._turns[-1].text)

    def _new_text(self, messages: list["Message"], now_text: str) -> str:
        """Text after the last sampled token: the rest of the assistant turn as the template closes it
        (minus the stop token, which was sampled), then the messages added since and the gen prompt."""
        last = self._turns[-1]
        upto_answer = self._render(messages[: len(self._seen) + 1], generation_prompt=False)
        sampled_prefix = self._prompt_text + last.text
        if not upto_answer.startswith(sampled_prefix) or not now_text.startswith(upto_answer):
            raise ChatTemplateError(
                "the chat template is not prefix-stable: rendering the conversation does not extend the rendering "
                "of its earlier turns, so the sampled tokens cannot be kept as they are; use a template that "
                "renders each message independently of later ones (as Qwen2.5's does)"
            )
        tail = upto_answer[len(sampled_prefix):]  # e.g. "<|im_end|>\n"
        if last.finish_reason == "stop":
            stop_text = self.tokenizer.decode(last.sampled_ids[-1:], skip_special_tokens=False)
            if stop_text and tail.startswith(stop_text):
                tail = tail[len(stop_text):]
        return tail + now_text[len(upto_answer):]


def default_stop_ids(tokenizer: Any) -> list[int]:
    """`<|im_end|>` (end of a chat turn) if the vocabulary has it, and the tokenizer's EOS."""
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    if IM_END in vocab:
        ids.append(vocab[IM_END])
    eos = tokenizer.eos_token_id
    for e in eos if isinstance(eos, list) else [eos]:
        if e is not None and e not in ids:
            ids.append(e)
    if not ids:
        raise ConfigError("the tokenizer has neither <|im_end|> nor an EOS token: pass stop_ids explicitly")
    return ids


@register_policy(PolicyName.hf)
def _make_hf(cfg: "AgentConfig", world: Any) -> HFPolicy:
    hf = cfg.hf
    if not hf.model_dir:
        raise ConfigError("policy 'hf' needs agent.hf.model_dir: an HF checkpoint directory (--set agent.hf.model_dir=DIR)")
    return HFPolicy.from_pretrained(
        hf.model_dir, engine=hf.engine, max_new_tokens=hf.max_new_tokens, temperature=hf.temperature
    )
