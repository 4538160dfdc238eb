"""Turns a ScheduledBatch into one forward pass and a sampled token per finishing chunk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vivace.engine.attention.torch_backend import AttentionMetadata, PrefillSpan
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.cuda_graphs import DecodeGraphs, DecodeRows, table_array
from vivace.engine.device_io import upload
from vivace.engine.models.llama import LlamaModel
from vivace.engine.sampler import SamplerOutput, sample
from vivace.engine.sampling_batch import SamplingBatch
from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq

if TYPE_CHECKING:
    from vivace.engine.attention.triton_backend import TritonAttentionMetadata


def _tables(tables: list[list[int]]) -> torch.Tensor:
    return table_array(tables, max(len(t) for t in tables))


@dataclass
class PromptScores:
    """Log-probabilities of prompt tokens [first, first + len(logprobs)) given their prefixes."""

    first: int
    logprobs: list[float]


@dataclass
class StepResult:
    """What one forward pass produced: sampled tokens for finishing chunks, prompt scores if asked."""

    sampled: list[ScheduledSeq]
    output: SamplerOutput | None
    prompt_scores: dict[int, PromptScores]  # seq_id -> scores computed in this step


class ModelRunner:
    """Owns the KV cache tensor and runs the model on scheduled batches."""

    def __init__(
        self, model: LlamaModel, num_blocks: int, block_size: int, device: str, eos_token_ids: list[int],
        attention_backend: str = "auto", kv_dtype: torch.dtype | None = None,
        cuda_graphs: bool = False, max_num_seqs: int = 1, max_model_len: int = 1,
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.device = torch.device(device)
        self.eos_token_ids = eos_token_ids
        cfg = model.cfg
        self.decode_kernel = None
        if attention_backend == "auto" and self.device.type == "cpu" and model.dtype is torch.float32:
            self.decode_kernel = load_cpu_ops()
        self.triton = attention_backend == "triton"
        if self.triton:
            try:
                model.use_triton_kernels()
            except ImportError as exc:
                raise RuntimeError(f"attention_backend 'triton' needs triton (pip install triton): {exc}") from exc
        use_graphs = cuda_graphs and self.triton and self.device.type == "cuda"
        # Zeroed, so padded slots read by masked attention are finite. Under CUDA graphs one extra
        # block, which the scheduler never hands out, takes the padding rows' K/V.
        self.kv_cache = torch.zeros(
            cfg.num_layers, 2, (num_blocks + use_graphs) * block_size, cfg.num_kv_heads, cfg.head_dim,
            dtype=kv_dtype or model.dtype, device=self.device,
        )
        self.graphs: DecodeGraphs | None = None
        if use_graphs:
            self.graphs = DecodeGraphs(
                model, self.kv_cache, block_size, max_num_seqs, max_model_len, pad_block=num_blocks, device=self.device,
                num_sms=torch.cuda.get_device_properties(self.device).multi_processor_count,
            )
            self.graphs.capture()

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def build_metadata(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Token ids, positions and attention metadata for the flat token batch (decodes first)."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        decodes = batch.decodes
        for item in decodes:
            seq, pos = item.seq, item.start
            ids.append(seq.token_ids[pos])
            positions.append(pos)
            slot_mapping.append(seq.block_table[pos // bs] * bs + pos % bs)
        meta = AttentionMetadata(slot_mapping=torch.empty(0), num_decode_tokens=len(decodes), block_size=bs)
        for item in batch.prefills:
            seq, start, n = item.seq, item.start, item.num_tokens
            ids.extend(seq.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            slot_mapping.extend(self._slots(seq.block_table, start, start + n))
        if self.triton:
            tmeta = self._triton_metadata(batch)
            tmeta.slot_mapping = torch.tensor(slot_mapping, dtype=torch.long)
            return self._on_device(torch.tensor(ids, dtype=torch.long), torch.tensor(positions, dtype=torch.long), tmeta)
        if self.decode_kernel is not None:
            # Every token, decode or prefill, is one query row over its own causal context, computed
            # by the same code independently of its batch-mates: results cannot depend on batching,
            # chunking or prefix reuse.
            rows = [(item.seq.block_table, item.start + 1) for item in decodes]
            for item in batch.prefills:
                rows.extend((item.seq.block_table, p + 1) for p in range(item.start, item.start + item.num_tokens))
            meta.num_decode_tokens = len(rows)
            meta.decode_kernel = self.decode_kernel
            meta.decode_block_tables = _tables([table for table, _ in rows])
            meta.decode_context_lens = torch.tensor([ctx for _, ctx in rows], dtype=torch.int32)
        else:
            self._torch_metadata(batch, meta)
        meta.slot_mapping = torch.tensor(slot_mapping, dtype=torch.long)
        ids_t, positions_t = torch.tensor(ids, dtype=torch.long), torch.tensor(positions, dtype=torch.long)
        if self.device.type != "cpu":
            return self._on_device(ids_t, positions_t, meta)
        return ids_t, positions_t, meta

    def _on_device(self, ids: torch.Tensor, positions: torch.Tensor, meta: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Move the step's inputs and every tensor of its metadata to the runner's device."""
        dev = self.device
        for name, value in vars(meta).items():
            if isinstance(value, torch.Tensor):
                setattr(meta, name, upload(value, value.dtype, dev))
        for span in getattr(meta, "prefills", []):
            span.mask = upload(span.mask, torch.bool, dev)
            span.slots = None if span.slots is None else upload(span.slots, torch.long, dev)
        return upload(ids, torch.long, dev), upload(positions, torch.long, dev), meta

    def _triton_metadata(self, batch: ScheduledBatch) -> TritonAttentionMetadata:
        """Block tables, context lengths and query offsets for the Triton kernels (host tensors)."""
        from vivace.engine.attention.triton_backend import TritonAttentionMetadata
        from vivace.engine.attention.triton_decode import num_decode_splits

        decodes, prefills = batch.decodes, batch.prefills
        tmeta = TritonAttentionMetadata(slot_mapping=torch.empty(0), block_size=self.block_size)
        if decodes:
            lens = [item.start + 1 for item in decodes]
            max_len = max(lens)
            tmeta.num_decode_tokens = len(decodes)
            tmeta.decode_block_tables = _tables([item.seq.block_table for item in decodes])
            tmeta.decode_context_lens = torch.tensor(lens, dtype=torch.int32)
            tmeta.decode_max_context = max_len
            tmeta.decode_num_splits = num_decode_splits(max_len, len(decodes), self.model.cfg.num_kv_heads)
        if prefills:
            tmeta.prefill_block_tables = _tables([item.seq.block_table for item in prefills])
            offsets = [0]
            for item in prefills:
                offsets.append(offsets[-1] + item.num_tokens)
            tmeta.prefill_cu_query = torch.tensor(offsets, dtype=torch.int32)
            tmeta.prefill_starts = torch.tensor([item.start for item in prefills], dtype=torch.int32)
            tmeta.prefill_max_query_len = max(item.num_tokens for item in prefills)
        return tmeta

    def _torch_metadata(self, batch: ScheduledBatch, meta: AttentionMetadata) -> None:
        """Padded decode gathers and one causal span per prefill chunk, for the torch reference path."""
        bs = self.block_size
        decodes = batch.decodes
        if decodes:
            max_blocks = max(-(-(item.start + 1) // bs) for item in decodes)
            tables = torch.tensor(
                [item.seq.block_table[:max_blocks] + [0] * (max_blocks - len(item.seq.block_table[:max_blocks])) for item in decodes],
                dtype=torch.long,
            )
            offsets = torch.arange(bs, dtype=torch.long)
            meta.decode_slots = (tables.unsqueeze(-1) * bs + offsets).view(len(decodes), max_blocks * bs)
            lengths = torch.tensor([item.start + 1 for item in decodes], dtype=torch.long)
            meta.decode_mask = (torch.arange(max_blocks * bs).unsqueeze(0) < lengths.unsqueeze(1)).view(
                len(decodes), 1, 1, max_blocks * bs
            )
        row = len(decodes)
        for item in batch.prefills:
            start, end = item.start, item.start + item.num_tokens
            # An explicit mask even without a cached prefix: one attention kernel for both cases.
            mask = torch.arange(end).unsqueeze(0) <= torch.arange(start, end).unsqueeze(1)
            slots = None if start == 0 else torch.tensor(self._slots(item.seq.block_table, 0, end), dtype=torch.long)
            meta.prefills.append(PrefillSpan(row, item.num_tokens, end, slots, mask))
            row += item.num_tokens

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> StepResult:
        """Run one step; sequences with `score_from` set also get logprobs of their prompt tokens."""
        if self.graphs is not None and not batch.prefills and self.graphs.fits(len(batch.decodes)):
            return self._execute_graph(batch)
        input_ids, positions, meta = self.build_metadata(batch)
        hidden = self.model.forward(input_ids, positions, meta, self.kv_cache)
        rows: list[int] = []
        sampled: list[ScheduledSeq] = []
        row_end = 0
        prompt_scores: dict[int, PromptScores] = {}
        for item in batch.all():
            row_end += item.num_tokens
            if item.samples:
                rows.append(row_end - 1)
                sampled.append(item)
            if item.seq.score_from is not None:
                scores = self._score_prompt(hidden, row_end, item)
                if scores is not None:
                    prompt_scores[item.seq.seq_id] = scores
        output = None
        if sampled:
            last_rows = hidden.index_select(0, upload(rows, torch.long, hidden.device))
            output = self._sample(self.model.compute_logits(last_rows), sampled)
        return StepResult(sampled, output, prompt_scores)

    def _execute_graph(self, batch: ScheduledBatch) -> StepResult:
        """A decode-only step replayed from the CUDA graph of its padded size (every row samples)."""
        bs = self.block_size
        decodes = batch.decodes
        rows = DecodeRows(token_ids=[], positions=[], slots=[], block_tables=[], context_lens=[])
        for item in decodes:
            seq, pos = item.seq, item.start
            rows.token_ids.append(seq.token_ids[pos])
            rows.positions.append(pos)
            rows.slots.append(seq.block_table[pos // bs] * bs + pos % bs)
            rows.block_tables.append(seq.block_table[: pos // bs + 1])
            rows.context_lens.append(pos + 1)
        logits = self.graphs.run(rows)
        return StepResult(list(decodes), self._sample(logits, decodes), {})

    def _sample(self, logits: torch.Tensor, sampled: list[ScheduledSeq]) -> SamplerOutput:
        """Sample one token per row of `logits` (on its device) for the sequences in `sampled`."""
        seqs = [item.seq for item in sampled]
        params = [s.params for s in seqs]
        # Copies of each sequence's tokens only for the rows whose sampling reads them.
        prompt_ids = output_ids = [[]] * len(seqs)
        if any(p.uses_token_history for p in {id(p): p for p in params}.values()):
            history = [p.uses_token_history for p in params]
            prompt_ids = [s.token_ids[: s.num_prompt_tokens] if h else [] for s, h in zip(seqs, history)]
            output_ids = [s.token_ids[s.num_prompt_tokens :] if h else [] for s, h in zip(seqs, history)]
        sampling = SamplingBatch.build(
            params=params,
            prompt_ids=prompt_ids,
            output_ids=output_ids,
            generators=[s.generator for s in seqs],
            vocab_size=logits.shape[-1],
            device=logits.device,
            eos_token_ids=self.eos_token_ids,
        )
        return sample(logits, sampling)

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
        targets = upload(seq.token_ids[lo:hi], torch.long, logits.device)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
        return PromptScores(lo, logprobs.tolist())
