"""Share one generation engine between episodes running in threads, batching their turns.

    batcher = BatchingEngine(make_engine("transformers", model_dir), clients=len(tasks))
    def episode(task):
        with batcher.client():                      # on exit the batcher stops waiting for this thread
            policy = HFPolicy(tokenizer, batcher)   # the policy sees an ordinary engine
            ...run_episode(policy, ...)
    with ThreadPoolExecutor(len(tasks)) as pool:    # one thread per client
        list(pool.map(episode, tasks))

An episode alternates generation and tool calls. A tiny model on CPU spends its decoding time on
per-token overhead, not arithmetic, so decoding eight episodes' turns in one batch costs about what
one costs. A `generate` call waits until every registered client is either waiting too or gone, then
one `generate_many` serves them all; tools run between batches, concurrently in their threads.
The number of clients is fixed up front, so which requests share a batch depends only on the
episodes themselves (a batch waits for every unfinished episode), and a batch's rows are ordered by
seed: a given set of episodes is batched the same way on every run.

A batch decodes until its longest row is done, so one 500-token report would hold 31 clients whose
turns took 50 tokens. With `slice_tokens`, a batch decodes at most that many tokens: rows that are
done go back to their clients, the others stay queued as continuations (their prompt extended by
what they wrote, the engine's prefix cache holding its keys and values) and decode on in the next
batch together with the clients' next turns — continuous batching at slice granularity. A
continuation draws its tokens from a seed derived from its request's seed and the slice number.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepresearch.generation.engine import Generation, GenerationEngine, GenRequest

if TYPE_CHECKING:
    import torch


class BatchingEngine:
    """A `GenerationEngine` whose `generate`, called from several client threads, is served in batches."""

    def __init__(self, engine: GenerationEngine, clients: int, *, slice_tokens: int = 0):
        """
        Args:
            engine: does the generation (`generate_many`).
            clients: how many threads will call `generate`, each inside `client()`.
            slice_tokens: tokens a batch decodes before finished rows return and unfinished ones are
                continued in the next batch (module docstring); 0 decodes every batch to its end.
        """
        if clients < 1:
            raise ValueError(f"BatchingEngine needs at least one client, got {clients}")
        if slice_tokens < 0:
            raise ValueError(f"slice_tokens must be >= 0 (0 = no slicing), got {slice_tokens}")
        self.slice_tokens = slice_tokens
        cache = getattr(engine, "prefix_cache", None)
        if cache is not None and 0 < cache.capacity <= clients:
            # room for every client's conversation (and a shared prompt): an entry evicted by another
            # client's turn would cost its whole context again at its next turn
            cache.capacity = clients + 1
        self.engine = engine
        self.name = engine.name
        self.max_context_len = engine.max_context_len
        self._cv = threading.Condition()
        self._clients = clients
        self._pending: dict[int, GenRequest] = {}
        # ticket → what its request has generated so far, over earlier slices: (token ids, log-probs, slices)
        self._partial: dict[int, tuple[list[int], list[float], int]] = {}
        self._results: dict[int, Generation | BaseException] = {}
        self._tickets = 0
        self.batch_sizes: list[int] = []  # one entry per engine call, for reporting

    @contextmanager
    def client(self) -> Iterator[None]:
        """Run the body as one of the clients; when it exits (normally or not), batches stop waiting for it."""
        try:
            yield
        finally:
            with self._cv:
                self._clients -= 1
                self._serve_if_ready()

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop_ids: Sequence[int] = (),
        seed: int | None = None,
    ) -> Generation:
        if len(prompt_ids) + max_new_tokens > self.max_context_len:  # before a slice would reach it
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
                f"context of {self.max_context_len} tokens"
            )
        with self._cv:
            ticket = self._tickets
            self._tickets += 1
            self._pending[ticket] = GenRequest(list(prompt_ids), max_new_tokens, temperature, tuple(stop_ids), seed)
            self._serve_if_ready()
            while ticket not in self._results:
                self._cv.wait()
            result = self._results.pop(ticket)
        if isinstance(result, BaseException):
            raise result
        return result

    def generate_many(self, requests: Sequence[GenRequest]) -> list[Generation]:
        return self.engine.generate_many(requests)

    def load_weights(self, weights: "Mapping[str, torch.Tensor] | str | Path") -> None:
        with self._cv:
            self.engine.load_weights(weights)

    def _serve_if_ready(self) -> None:
        # Called with the lock held. Every registered client is blocked here (or has left), so
        # generating under the lock holds nobody up. Loops while every client waits on a continuation.
        while self._pending and len(self._pending) >= self._clients:
            # rows in seed order (then submission order), independent of thread scheduling
            tickets = sorted(self._pending,
                             key=lambda t: (self._pending[t].seed is None, self._pending[t].seed or 0, t))
            requests = [self._slice(t) for t in tickets]
            self.batch_sizes.append(len(requests))
            try:
                outs: list[Any] = self.engine.generate_many(requests)
            except Exception as e:  # noqa: BLE001 - each waiting caller re-raises it in its own thread
                outs = [e] * len(requests)
            served = 0
            for t, out in zip(tickets, outs):
                result = out if isinstance(out, BaseException) else self._advance(t, out)
                if result is not None:
                    del self._pending[t]
                    self._partial.pop(t, None)
                    self._results[t] = result
                    served += 1
            if served:
                self._cv.notify_all()
                return

    def _slice(self, ticket: int) -> GenRequest:
        """The request the engine decodes for `ticket` in this batch: the client's, or its continuation."""
        r = self._pending[ticket]
        ids, _, k = self._partial.get(ticket, ([], [], 0))
        budget = r.max_new_tokens - len(ids)
        if self.slice_tokens:
            budget = min(budget, self.slice_tokens)
        seed = r.seed if k == 0 or r.seed is None else (r.seed * 1_000_003 + k) % 2**63
        return GenRequest([*r.prompt_ids, *ids], budget, r.temperature, r.stop_ids, seed)

    def _advance(self, ticket: int, out: Generation) -> Generation | None:
        """Add one slice's output to the ticket's; the whole generation when it is done, else None."""
        r = self._pending[ticket]
        ids, logprobs, k = self._partial.get(ticket, ([], [], 0))
        ids, logprobs = ids + out.token_ids, logprobs + out.logprobs
        if out.finish_reason == "stop" or len(ids) >= r.max_new_tokens:
            return Generation(ids, logprobs, out.finish_reason)
        self._partial[ticket] = (ids, logprobs, k + 1)
        return None
