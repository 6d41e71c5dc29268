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

    def __init__(self, engine: GenerationEngine, clients: int):
        """
        Args:
            engine: does the generation (`generate_many`).
            clients: how many threads will call `generate`, each inside `client()`.
        """
        if clients < 1:
            raise ValueError(f"BatchingEngine needs at least one client, got {clients}")
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
        # generating under the lock holds nobody up.
        if not self._pending or len(self._pending) < self._clients:
            return
        # rows in seed order (then submission order), independent of thread scheduling
        tickets = sorted(self._pending, key=lambda t: (self._pending[t].seed is None, self._pending[t].seed or 0, t))
        requests = [self._pending.pop(t) for t in tickets]
        self.batch_sizes.append(len(requests))
        try:
            outs: list[Any] = self.engine.generate_many(requests)
        except Exception as e:  # noqa: BLE001 - each waiting caller re-raises it in its own thread
            outs = [e] * len(requests)
        self._results.update(zip(tickets, outs))
        self._cv.notify_all()
