"""Turns a ScheduledBatch into one forward pass and a sampled token per finishing chunk.

The runner knows sequences and tensors, never requests: it builds the step's inputs (token ids,
positions, cache slots, and the attention backend's metadata), runs the model (or replays a CUDA
graph for a decode-only step), samples, verifies speculating sequences' proposed tokens
(speculative/verify.py), runs Medusa heads on the rows that produced tokens (their guesses are the
next step's proposals), and scores prompt tokens where a sequence asks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import torch

from vivace.engine.attention.kv_quant import cache_row_width
from vivace.engine.cuda_graphs import DecodeGraphs, DecodeRows
from vivace.engine.device_io import prefault, upload, zeroed
from vivace.engine.kernels.select import Kernels
from vivace.engine.models.blocks import DecoderModel
from vivace.engine.outputs import TokenLogprob
from vivace.engine.pooling import PooledChunk, pool_chunk
from vivace.engine.sampler import SamplerOutput, processed_logprobs, sample
from vivace.engine.sampling_batch import SamplingBatch
from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq, may_speculate
from vivace.engine.sequence import Sequence
from vivace.engine.speculative.medusa_heads import MedusaHeads
from vivace.engine.speculative.tree import compaction, walk
from vivace.engine.speculative.verify import verify
from vivace.engine.structured.masks import GrammarMasks, RowMasks

# A sequence's grammar matcher (structured outputs), or None when it is unconstrained.
MatcherOf = Callable[[Sequence], Any]


@dataclass
class PromptScores:
    """Log-probabilities of `seq`'s prompt tokens [first, first + len(logprobs)) given their prefixes."""

    seq: Sequence
    first: int
    logprobs: list[TokenLogprob]


@dataclass
class Verified:
    """A speculating sequence's emitted tokens: its accepted proposed tokens, then one sampled token."""

    item: ScheduledSeq
    token_ids: list[int]
    nodes: list[int] = field(default_factory=list)  # a tree's accepted nodes, root-down (chains: unused)

    @property
    def num_accepted(self) -> int:
        return len(self.token_ids) - 1

    @property
    def last_row(self) -> int:
        """The row, among the item's root and draft rows, of the last accepted token (0: the root)."""
        if self.item.tree is None:
            return self.num_accepted  # a chain's rows are its tokens in order
        return self.nodes[-1] + 1 if self.nodes else 0


@dataclass
class Guess:
    """Medusa heads' guesses for the tokens after `seq`'s first `num_tokens` (its tokens once this step's are appended)."""

    seq: Sequence
    num_tokens: int
    token_ids: list[list[int]]  # [head][rank], best first


@dataclass
class StepResult:
    """What one forward pass produced: sampled tokens for finishing chunks, prompt scores if asked."""

    sampled: list[ScheduledSeq]
    output: SamplerOutput | None
    prompt_scores: list[PromptScores]  # computed in this step
    pooled: list[PooledChunk] = field(default_factory=list)  # prompt hidden-state sums of pooling sequences
    verified: list[Verified] = field(default_factory=list)  # speculating sequences (not in `sampled`)
    guesses: list[Guess] = field(default_factory=list)  # Medusa heads' guesses


@dataclass
class StepInputs:
    """A step's model inputs on the device: token ids and positions [T], and the backend's metadata per KV group."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    attn_metadata: list[Any]


class ModelRunner:
    """Owns the KV cache tensor and runs the model on scheduled batches."""

    def __init__(
        self,
        model: DecoderModel,
        kernels: Kernels,
        num_blocks: int,
        block_size: int,
        device: str,
        eos_token_ids: list[int],
        kv_dtype: torch.dtype | None = None,
        cuda_graphs: bool = False,
        max_num_seqs: int = 1,
        max_model_len: int = 1,
        medusa: MedusaHeads | None = None,
        medusa_ranks: int = 1,
    ) -> None:
        """`medusa`: heads whose `medusa_ranks` best guesses for each produced token's successors come back in
        StepResult.guesses."""
        self.model = model
        self.medusa = medusa
        self.medusa_ranks = medusa_ranks
        self.kernels = kernels
        self.backend = kernels.attention
        self.block_size = block_size
        self.device = torch.device(device)
        self.eos_token_ids = eos_token_ids
        cfg = model.cfg
        self.grammar_masks = GrammarMasks(cfg.vocab_size)
        # LoRA steps vary the adapter slots they compute, which a captured graph cannot: they run eagerly;
        # so do Medusa's, whose heads read hidden states a decode graph does not return.
        use_graphs = (
            cuda_graphs
            and model.lora is None
            and medusa is None
            and self.backend.supports_cuda_graphs
            and self.device.type == "cuda"
        )
        # The model's KV groups (kv_groups.py) share one pool of block ids; a hybrid model's pool
        # reserves id 0 as the null block. Zeroed, so padded slots read by masked attention are
        # finite. Under CUDA graphs one extra block, which the scheduler never hands out, takes the
        # padding rows' K/V.
        layout = model.kv_layout
        self.num_groups = len(layout.groups)
        num_ids = num_blocks + layout.has_window
        self.kv_cache = zeroed(
            (
                layout.group_size,
                2,
                (num_ids + use_graphs) * block_size,
                cfg.num_kv_heads,
                cache_row_width(cfg.head_dim, kv_dtype or model.dtype),
            ),
            kv_dtype or model.dtype,
            self.device,
        )
        # CPU: the pool's pages committed in the background, not by the first steps (None where nothing runs).
        self.kv_prefault: threading.Thread | None = prefault(self.kv_cache)
        self.graphs: DecodeGraphs | None = None
        if use_graphs:
            self.graphs = DecodeGraphs(
                model,
                self.backend,
                self.kv_cache,
                block_size,
                max_num_seqs,
                max_model_len,
                pad_block=num_ids,
                device=self.device,
                num_sms=torch.cuda.get_device_properties(self.device).multi_processor_count,
            )
            self.graphs.capture()

    def prepare_inputs(self, batch: ScheduledBatch) -> StepInputs:
        """Token ids, positions and each KV group's attention metadata for the flat token batch (decodes first)."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []  # KV group 0's, built alongside (every layer's, for one group)
        for item in batch.decodes:
            seq, pos = item.seq, item.start
            ids.append(seq.token_ids[pos])
            positions.append(pos)
            slot_mapping.append(seq.block_table[pos // bs] * bs + pos % bs)
        for item in batch.prefills:
            seq, start, end = item.seq, item.start, item.start + item.num_tokens
            table = seq.block_table
            ids.extend(item.input_ids)
            positions.extend(item.positions())
            slot_mapping.extend([table[p // bs] * bs + p % bs for p in range(start, end)])
        mappings = [slot_mapping] + [self._slot_mapping(batch, g) for g in range(1, self.num_groups)]
        meta = [
            self.backend.build_metadata(batch, torch.tensor(mapping, dtype=torch.long), g)
            for g, mapping in enumerate(mappings)
        ]
        return StepInputs(upload(ids, torch.long, self.device), upload(positions, torch.long, self.device), meta)

    def _slot_mapping(self, batch: ScheduledBatch, group: int) -> list[int]:
        """The cache slot of each of the step's tokens in KV group `group`'s blocks."""
        bs = self.block_size
        slots: list[int] = []
        for item in batch.decodes:
            pos = item.start
            slots.append(item.seq.table(group)[pos // bs] * bs + pos % bs)
        for item in batch.prefills:
            table = item.seq.table(group)
            slots.extend([table[p // bs] * bs + p % bs for p in range(item.start, item.start + item.num_tokens)])
        return slots

    @torch.inference_mode()
    def hidden_states(self, batch: ScheduledBatch) -> torch.Tensor:
        """The model's final hidden states [T, hidden] for the step's rows (decodes, then prefill chunks)."""
        inputs = self.prepare_inputs(batch)
        lora = self.model.lora
        if lora is None:
            return self.model.forward(inputs.input_ids, inputs.positions, inputs.attn_metadata, self.kv_cache)
        # Each token's adapter, in prepare_inputs' order (decodes, then prefills).
        lora.set_step([i for item in batch.all() for i in [item.seq.lora_id] * item.num_tokens])
        try:
            return self.model.forward(inputs.input_ids, inputs.positions, inputs.attn_metadata, self.kv_cache)
        finally:
            lora.clear_step()

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch, matcher_of: MatcherOf | None = None) -> StepResult:
        """Run one step; sequences with `score_from` set also get logprobs of their prompt tokens.

        `matcher_of` gives constrained sequences' grammar matchers: their token masks are computed on
        a worker thread while the model runs. None when no sequence is constrained.
        """
        if self.graphs is not None and not batch.prefills and self.graphs.fits(len(batch.decodes)):
            return self._execute_graph(batch, matcher_of)
        masks = None
        if matcher_of is not None:
            masks = self.grammar_masks.start(
                [matcher_of(item.seq) for item in batch.all() if item.samples and not item.draft]
            )
        hidden = self.hidden_states(batch)
        rows: list[int] = []
        sampled: list[ScheduledSeq] = []
        spec_rows: list[int] = []
        speculating: list[ScheduledSeq] = []
        row_end = 0
        prompt_scores: list[PromptScores] = []
        pooled: list[PooledChunk] = []
        for item in batch.all():
            row_end += item.num_tokens
            if item.draft:
                spec_rows.extend(range(row_end - len(item.draft) - 1, row_end))
                speculating.append(item)
            elif item.samples:
                rows.append(row_end - 1)
                sampled.append(item)
            if item.seq.score_from is not None:
                scores = self._score_prompt(hidden, row_end, item)
                if scores is not None:
                    prompt_scores.append(scores)
            if item.seq.pool:
                chunk = pool_chunk(hidden, row_end, item)
                if chunk is not None:
                    pooled.append(chunk)
        output = None
        if sampled:
            last_rows = hidden.index_select(0, upload(rows, torch.long, hidden.device))
            output = self._sample(self.model.compute_logits(last_rows), sampled, masks)
        verified: list[Verified] = []
        if speculating:
            spec_hidden = hidden.index_select(0, upload(spec_rows, torch.long, hidden.device))
            verified = self._verify(self.model.compute_logits(spec_hidden), speculating)
            self._compact_trees(verified)
        guesses = self._guess(hidden, rows, sampled, spec_rows, verified) if self.medusa is not None else []
        return StepResult(sampled, output, prompt_scores, pooled, verified, guesses)

    def _guess(
        self,
        hidden: torch.Tensor,
        rows: list[int],
        sampled: list[ScheduledSeq],
        spec_rows: list[int],
        verified: list[Verified],
    ) -> list[Guess]:
        """Medusa heads on the row behind each sequence's newest token: a sampled row, or a verification's last accepted one."""
        picked: list[int] = []
        guesses: list[Guess] = []
        for row, item in zip(rows, sampled, strict=True):
            if may_speculate(item.seq):
                picked.append(row)
                guesses.append(Guess(item.seq, item.seq.num_tokens + 1, []))
        first = 0
        for v in verified:
            picked.append(spec_rows[first + v.last_row])
            guesses.append(Guess(v.item.seq, v.item.seq.num_tokens + len(v.token_ids), []))
            first += len(v.item.draft) + 1
        if not picked:
            return []
        picked_hidden = hidden.index_select(0, upload(picked, torch.long, hidden.device))
        for guess, tokens in zip(guesses, self.medusa.guess(picked_hidden, self.medusa_ranks), strict=True):
            guess.token_ids = tokens
        return guesses

    def _execute_graph(self, batch: ScheduledBatch, matcher_of: MatcherOf | None) -> StepResult:
        """A decode-only step replayed from the CUDA graph of its padded size (every row samples)."""
        bs = self.block_size
        decodes = batch.decodes
        masks = None if matcher_of is None else self.grammar_masks.start([matcher_of(item.seq) for item in decodes])
        groups = range(self.num_groups)
        rows = DecodeRows(
            token_ids=[], positions=[], slots=[[] for _ in groups], block_tables=[[] for _ in groups], context_lens=[]
        )
        for item in decodes:
            seq, pos = item.seq, item.start
            rows.token_ids.append(seq.token_ids[pos])
            rows.positions.append(pos)
            rows.context_lens.append(pos + 1)
            for g in groups:
                table = seq.table(g)
                rows.slots[g].append(table[pos // bs] * bs + pos % bs)
                rows.block_tables[g].append(table[: pos // bs + 1])
        logits = self.graphs.run(rows)
        return StepResult(list(decodes), self._sample(logits, decodes, masks), [])

    def _sample(
        self, logits: torch.Tensor, sampled: list[ScheduledSeq], masks: Future[RowMasks] | None = None
    ) -> SamplerOutput:
        """Sample one token per row of `logits` (on its device) for the sequences in `sampled`."""
        seqs = [item.seq for item in sampled]
        params = [s.params for s in seqs]
        # Copies of each sequence's tokens only for the rows whose sampling reads them.
        prompt_ids = output_ids = [[]] * len(seqs)
        if any(p.uses_token_history for p in {id(p): p for p in params}.values()):
            history = [p.uses_token_history for p in params]
            prompt_ids = [s.token_ids[: s.num_prompt_tokens] if h else [] for s, h in zip(seqs, history, strict=True)]
            output_ids = [s.token_ids[s.num_prompt_tokens :] if h else [] for s, h in zip(seqs, history, strict=True)]
        sampling = SamplingBatch.build(
            params=params,
            prompt_ids=prompt_ids,
            output_ids=output_ids,
            generators=[s.generator for s in seqs],
            vocab_size=logits.shape[-1],
            device=logits.device,
            eos_token_ids=self.eos_token_ids,
            grammar=None if masks is None else masks.result(),
        )
        return sample(logits, sampling, self.kernels.argmax_rows)

    def _verify(self, logits: torch.Tensor, speculating: list[ScheduledSeq]) -> list[Verified]:
        """Accept or reject each speculating sequence's proposed tokens against its len(draft) + 1 logit rows."""
        params, prompt_ids, output_ids, generators = [], [], [], []
        for item in speculating:
            seq = item.seq
            history = seq.params.uses_token_history
            for i in range(len(item.draft) + 1):
                params.append(seq.params)
                generators.append(seq.generator)
                # Row i follows the proposed tokens before it (in a tree, node i - 1's path): penalties
                # and min_tokens see them as output.
                prompt_ids.append(seq.token_ids[: seq.num_prompt_tokens] if history else [])
                path = item.tree.path(i - 1) if item.tree is not None else item.draft[:i]
                output_ids.append(seq.output_ids + path if history else [])
        sampling = SamplingBatch.build(
            params=params,
            prompt_ids=prompt_ids,
            output_ids=output_ids,
            generators=generators,
            vocab_size=logits.shape[-1],
            device=logits.device,
            eos_token_ids=self.eos_token_ids,
        )
        probs = processed_logprobs(logits, sampling, self.kernels.argmax_rows).exp_()
        starts = list(accumulate((len(item.draft) + 1 for item in speculating), initial=0))
        chains = [item for item in speculating if item.tree is None]
        if len(chains) < len(speculating):  # trees are walked one by one below; chains verify together
            chain_rows = [
                r for i, item in enumerate(speculating) if item.tree is None for r in range(*starts[i : i + 2])
            ]
            chain_probs = probs[upload(chain_rows, torch.long, probs.device)]
        else:
            chain_probs = probs
        emitted = (
            verify(
                chain_probs,
                [item.draft for item in chains],
                [item.seq.generator for item in chains],
                sampling.all_greedy,
            )
            if chains
            else []
        )
        out: list[Verified] = []
        chain_results = iter(emitted)
        for i, item in enumerate(speculating):
            if item.tree is None:
                out.append(Verified(item, next(chain_results)))
            else:
                rows = probs[starts[i] : starts[i + 1]]
                nodes, tokens = walk(item.tree, rows, item.seq.params.greedy, item.seq.generator)
                out.append(Verified(item, tokens, nodes))
        return out

    def _compact_trees(self, verified: list[Verified]) -> None:
        """Move each tree's accepted nodes' K/V, in every layer and KV group, to the positions their tokens take."""
        bs = self.block_size
        src: list[int] = []
        dst: list[int] = []
        for v in verified:
            if v.item.tree is None:
                continue
            first = v.item.start + v.item.num_tokens - len(v.item.draft)
            sources, destinations = compaction(v.nodes, first)
            for g in range(self.num_groups):
                table = v.item.seq.table(g)
                src.extend(table[p // bs] * bs + p % bs for p in sources)
                dst.extend(table[p // bs] * bs + p % bs for p in destinations)
        if src:
            index = upload(dst, torch.long, self.kv_cache.device)
            self.kv_cache.index_copy_(2, index, self.kv_cache.index_select(2, upload(src, torch.long, index.device)))

    def _score_prompt(self, hidden: torch.Tensor, row_end: int, item: ScheduledSeq) -> PromptScores | None:
        """Logprobs of prompt tokens at positions >= seq.score_from that this chunk's rows predict.

        Row of position p predicts token p + 1, so a chunk covering [start, end) scores (start, end].
        """
        seq = item.seq
        start, end = item.start, item.start + item.num_tokens
        lo = max(seq.score_from, start + 1)
        hi = min(end + 1, seq.num_prompt_tokens)
        if lo >= hi:
            return None
        row_start = row_end - item.num_tokens
        first = lo - 1 - start + row_start
        logits = self.model.compute_logits(hidden[first : first + hi - lo])
        target_ids = seq.token_ids[lo:hi]
        all_logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = all_logprobs.gather(1, upload(target_ids, torch.long, logits.device).unsqueeze(1))
        top_k = seq.params.prompt_logprobs
        if top_k is None:  # classification: the chosen tokens' logprobs only
            chosen_list = chosen.squeeze(1).tolist()
            return PromptScores(seq, lo, [TokenLogprob(t, lp) for t, lp in zip(target_ids, chosen_list, strict=True)])
        ranks = (all_logprobs > chosen).sum(dim=1).add_(1).tolist()
        if top_k > 0:
            top_values, top_ids = all_logprobs.topk(top_k, dim=1)
            tops = [list(zip(i, v, strict=True)) for i, v in zip(top_ids.tolist(), top_values.tolist(), strict=True)]
        else:
            tops = [[] for _ in target_ids]
        scores = [
            TokenLogprob(token, logprob, top, rank)
            for token, logprob, top, rank in zip(target_ids, chosen.squeeze(1).tolist(), tops, ranks, strict=True)
        ]
        return PromptScores(seq, lo, scores)
