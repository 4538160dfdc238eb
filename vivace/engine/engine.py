"""LLMEngine: requests in, one scheduled forward pass per `step()`, request outputs back.

The engine core admits requests (validation, sequences), then each step has the scheduler choose
the work, the runner compute it and the output processor turn it into RequestOutputs.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from typing import Any

import torch

from vivace.engine.attention.kv_quant import KEY_TRANSFORM
from vivace.engine.config import EngineConfig, InvalidParameterError, SamplingParams
from vivace.engine.engine_stats import Histogram
from vivace.engine.kv_sessions import SessionPins
from vivace.engine.kv_tier import KVTier
from vivace.engine.loaders.default_model import resolve_model_path
from vivace.engine.lora.adapter import LoRAError
from vivace.engine.lora.manager import LoadedLoRA, LoRAManager
from vivace.engine.memory import kv_cache_blocks
from vivace.engine.model_loading import DTYPES, load_engine_model
from vivace.engine.output_processor import OutputProcessor
from vivace.engine.outputs import RequestOutput
from vivace.engine.runner import ModelRunner
from vivace.engine.sampling_batch import check_token_ids, make_generator
from vivace.engine.scheduler import ScheduledSeq, Scheduler
from vivace.engine.sequence import Sequence
from vivace.engine.speculative.medusa_proposer import MedusaProposer
from vivace.engine.speculative.proposers import make_proposer
from vivace.engine.structured.grammar import GrammarCompiler

log = logging.getLogger(__name__)


class LLMEngine:
    """The synchronous engine core; not thread-safe (AsyncEngine serialises access to it)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config = config or EngineConfig()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        loaded = load_engine_model(config)
        self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.kernels = loaded.kernels
        self.max_model_len = min(
            config.max_model_len or self.model_config.max_position_embeddings, self.model_config.max_position_embeddings
        )
        self.kv_dtype = DTYPES[config.resolved_kv_cache_dtype]
        num_blocks = kv_cache_blocks(
            config, self.model.kv_slot_bytes(self.kv_dtype), self.max_model_len, self.model.kv_layout
        )
        self.eos_token_ids = list(self.model_config.eos_token_ids)
        self.proposer = make_proposer(
            config,
            self.model,
            self.max_model_len,
            # A draft tree's nodes sit at positions their depth does not match: window layers would cut
            # their context at the wrong key, so trees need a backend with the mask and no window layers.
            tree_attention=self.kernels.attention.supports_tree_attention and not self.model.kv_layout.has_window,
        )
        self.scheduler = Scheduler(
            num_blocks=num_blocks,
            block_size=config.block_size,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            enable_prefix_caching=config.enable_prefix_caching,
            proposer=self.proposer,
            sessions=SessionPins(config.session_ttl, num_blocks // 2) if config.session_ttl else None,
            layout=self.model.kv_layout,
        )
        self.runner = ModelRunner(
            self.model,
            self.kernels,
            num_blocks,
            config.block_size,
            config.device,
            self.eos_token_ids,
            self.kv_dtype,
            cuda_graphs=config.cuda_graphs,
            max_num_seqs=config.max_num_seqs,
            max_model_len=self.max_model_len,
            medusa=self.proposer.heads if isinstance(self.proposer, MedusaProposer) else None,
            medusa_ranks=self.proposer.ranks if isinstance(self.proposer, MedusaProposer) else 1,
        )
        self.kv_tier: KVTier | None = None
        if config.kv_tier_bytes:
            if self.scheduler.kv.num_groups > 1:
                raise InvalidParameterError(
                    "kv_tier_bytes",
                    "the session KV tier needs every layer over the whole context; this model has sliding-window "
                    "layers (add --disable-hybrid-kv-cache-manager to keep their whole context)",
                )
            self.kv_tier = KVTier(
                self.runner.kv_cache,
                config.block_size,
                config.kv_tier_bytes,
                self._kv_fingerprint(),
                config.kv_tier_path,
            )
            self.scheduler.kv.attach_tier(self.kv_tier)
        # Structured outputs' grammars for this tokenizer; llguidance's tables are built on first use.
        self.grammars = GrammarCompiler(self.tokenizer, self.model_config.vocab_size, self.eos_token_ids)
        self.outputs = OutputProcessor(self.tokenizer, self.eos_token_ids, self.max_model_len, self.scheduler.finish)
        self._seq_ids = itertools.count()
        self._arrivals = itertools.count()
        self.num_steps = 0
        self.queue_times = Histogram()  # per request: accepted -> first scheduled, in seconds
        for name, path in config.lora_modules.items():
            self.add_lora(name, path)

    def _kv_fingerprint(self) -> bytes:
        """What decides a block's KV besides its tokens: a tier file written under anything else is not reused."""
        config = self.config
        model = config.model or "smollm2"
        identity = [model, config.resolved_dtype, config.resolved_quantization, config.resolved_kv_cache_dtype]
        identity += [type(self.kernels.attention).__name__, str(config.seed)]
        if self.kv_dtype == torch.int8:
            identity.append(KEY_TRANSFORM)
        path = resolve_model_path(config.model)
        if os.path.exists(path):
            stat = os.stat(path)
            identity += [os.path.realpath(path), str(stat.st_size), str(stat.st_mtime_ns)]
        if config.enable_lora:
            identity.append(os.urandom(16).hex())  # adapter ids start each chain and are this process's own
        return hashlib.sha256("\0".join(identity).encode()).digest()

    def close(self) -> None:
        """Release what outlives the engine's memory: the session tier's file (flushed, unlocked)."""
        if self.kv_tier is not None:
            self.scheduler.kv.attach_tier(None)
            self.kv_tier.close()
            self.kv_tier = None

    # ---- requests -----------------------------------------------------------------------
    def tokenize_prompt(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a prompt given as text (BOS added per the model) or as ids (checked)."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        else:
            ids = list(prompt)
            vocab = self.model_config.vocab_size
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
            if bad:
                raise InvalidParameterError("prompt", f"token ids must be integers in [0, {vocab}), got {bad[:5]}")
        if not ids:
            raise InvalidParameterError("prompt", "must not be empty")
        return ids

    def validate_request(self, prompt: str | list[int], params: SamplingParams) -> list[int]:
        """The prompt's token ids, or the error add_request would raise; queues nothing."""
        ids = self.tokenize_prompt(prompt)
        max_new = params.max_tokens if params.max_tokens is not None else self.max_model_len - len(ids)
        self.scheduler.check_fits(len(ids), max_new)
        check_token_ids(params, self.model_config.vocab_size)
        if params.structured_outputs is not None:
            self.grammars.grammar(params.structured_outputs)
        return ids

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        stream: bool = True,
        score_from: int | None = None,
        pool: bool = False,
        lora: str | None = None,
        session: str | None = None,
    ) -> None:
        """Validate and queue a request; raises before anything is queued if it can never run.

        `stream=False` reports the request only when finished; `score_from=i` also returns the
        log-probabilities of prompt tokens i.. (used by classification); `pool=True` returns the
        prompt's embedding (pooling.py) in the final output; `lora` names the loaded adapter to run with;
        `session` names its conversation, whose blocks stay pinned a while after it (kv_sessions.py).
        """
        lora_id = 0 if lora is None else self._lora_manager().get(lora).lora_id
        if pool and params is not None and params.n != 1:
            raise InvalidParameterError("n", "an embedding request has one sequence (n=1)")
        if request_id in self.outputs:
            raise InvalidParameterError("request_id", f"{request_id!r} is already running")
        params = params or SamplingParams()
        ids = self.validate_request(prompt, params)
        if params.prompt_logprobs is not None:  # every prompt token after the first, as vLLM returns them
            score_from = 1 if score_from is None else min(score_from, 1)
        arrival = next(self._arrivals)
        queued_at = time.monotonic()
        seqs = []
        for index in range(params.n):
            seed = None if params.seed is None else params.seed + index
            seqs.append(
                Sequence(
                    seq_id=next(self._seq_ids),
                    request_id=request_id,
                    index=index,
                    token_ids=list(ids),
                    num_prompt_tokens=len(ids),
                    params=params,
                    arrival_order=arrival,
                    queued_at=queued_at,
                    generator=make_generator(seed, self.runner.device),
                    score_from=score_from,
                    pool=pool,
                    lora_id=lora_id,
                    session_id=session,
                )
            )
        text = prompt if isinstance(prompt, str) else None
        constraint = params.structured_outputs
        matchers = None if constraint is None else [self.grammars.matcher(constraint) for _ in seqs]
        self.outputs.add_request(
            request_id,
            text,
            ids,
            params,
            seqs,
            stream=stream,
            scores_prompt=score_from is not None,
            matchers=matchers,
            pools=pool,
        )
        for seq in seqs:
            self.scheduler.add(seq)

    # ---- LoRA adapters ------------------------------------------------------------------
    def _lora_manager(self) -> LoRAManager:
        if self.model.lora is None:
            raise InvalidParameterError("lora", "LoRA adapters are not enabled on this engine (enable_lora)")
        return self.model.lora

    def add_lora(self, name: str, path: str) -> LoadedLoRA:
        """Load the PEFT adapter at `path` as `name`; LoRAError (naming the field) if it cannot be."""
        loaded = self._lora_manager().load(name, path)
        log.info("loaded LoRA adapter %r (rank %d) from %s", name, loaded.rank, path)
        return loaded

    def remove_lora(self, name: str) -> LoadedLoRA:
        """Unload adapter `name`; refused while unfinished requests still run with it."""
        manager = self._lora_manager()
        lora_id = manager.get(name).lora_id
        users = sum(1 for seq in [*self.scheduler.waiting, *self.scheduler.running] if seq.lora_id == lora_id)
        if users:
            raise LoRAError("lora_name", f"adapter {name!r} is in use by {users} unfinished sequence(s); retry later")
        return manager.unload(name)

    def loras(self) -> list[LoadedLoRA]:
        """The loaded adapters (none when LoRA is not enabled)."""
        return [] if self.model.lora is None else self.model.lora.loaded()

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request wherever it is and free everything it held; None if unknown."""
        return self.outputs.abort(request_id)

    def request_ids(self) -> list[str]:
        """Ids of every unfinished request."""
        return self.outputs.request_ids()

    def has_unfinished_requests(self) -> bool:
        return len(self.outputs) > 0

    @property
    def num_requests(self) -> int:
        return len(self.outputs)

    # ---- one step -----------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule and run one forward pass; outputs of streamed requests that advanced, and finished ones."""
        batch = self.scheduler.schedule()
        if batch.is_empty:
            return []
        self.num_steps += 1
        self._record_queue_times(batch.prefills)
        try:
            result = self.runner.execute(batch, self.outputs.matcher_of if self.outputs.num_constrained else None)
        except Exception as exc:  # a failed step fails its requests, never the engine
            log.exception("engine step failed")
            self.scheduler.invalidate(batch)
            failed = {item.seq.request_id for item in batch.all()}
            return self.outputs.fail(failed, f"{type(exc).__name__}: {exc}")
        self.scheduler.finish_step(batch, {v.item.seq.seq_id: v.num_accepted for v in result.verified})
        for guess in result.guesses:  # Medusa heads' guesses, proposed at the sequence's next step
            self.proposer.offer(guess.seq.seq_id, guess.num_tokens, guess.token_ids)
        return self.outputs.process(result)

    def _record_queue_times(self, prefills: list[ScheduledSeq]) -> None:
        """A request's queue time ends at its first scheduled chunk (counted once, on its first choice)."""
        now = None
        for item in prefills:
            seq = item.seq
            if seq.queue_time is None:
                now = now or time.monotonic()
                seq.queue_time = now - seq.queued_at
                if seq.index == 0:
                    self.queue_times.observe(seq.queue_time)

    # ---- introspection ------------------------------------------------------------------
    def _tier_stats(self) -> dict[str, int]:
        """The session tier's counters (none when it is off) and the blocks session pins hold."""
        sessions = self.scheduler.kv.sessions
        stats = {"session_pinned_blocks": 0 if sessions is None else sessions.num_blocks}
        if self.kv_tier is not None:
            tier = self.kv_tier.stats
            stats |= {
                "kv_tier_hits": tier.hits,
                "kv_tier_misses": tier.misses,
                "kv_tier_rejected": tier.rejected,
                "kv_tier_stored_bytes": tier.stored_bytes,
                "kv_tier_evicted_bytes": tier.evicted_bytes,
                "kv_tier_used_bytes": tier.used_bytes,
                "kv_tier_capacity_bytes": self.kv_tier.num_slots * self.kv_tier.payload_bytes,
            }
        return stats

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: KV blocks, prefix-cache queries and hits (tokens), queue sizes, queue times."""
        s = self.scheduler
        return {
            "num_blocks": s.kv.num_blocks,
            "blocks_in_use": s.kv.num_used,
            "num_waiting": len(s.waiting),
            "num_running": len(s.running),
            "prompt_tokens_computed": s.stats.prompt_tokens_computed,
            "prompt_tokens_reused": s.stats.prompt_tokens_reused,
            "prefix_cache_queries": s.stats.prefix_cache_queries,
            "prefix_cache_hits": s.stats.prompt_tokens_reused,
            "preemptions": s.stats.preemptions,
            "spec_decode_num_drafts": s.stats.spec_drafts,
            "spec_decode_num_draft_tokens": s.stats.spec_draft_tokens,
            "spec_decode_num_accepted_tokens": s.stats.spec_accepted_tokens,
            **self._tier_stats(),
            "queue_time": self.queue_times.snapshot(),
            "steps": self.num_steps,
        }
