"""The runner's Triton path end to end on CPU (interpreter): same results as the torch reference path."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from vivace.engine.config import SamplingParams  # noqa: E402
from vivace.engine.cuda_graphs import DecodeGraphs  # noqa: E402
from vivace.engine.llm import LLM  # noqa: E402

PROMPTS = [[1, 2, 3, 4, 5], list(range(10, 60)), [7] * 20, [42]]


def _engine(backend: str, **kwargs) -> LLM:
    return LLM(
        "random:tiny@3",
        kv_cache_memory_bytes=8 << 20,
        max_model_len=256,
        quantization="none",
        attention_backend=backend,
        block_size=16,
        max_num_batched_tokens=48,
        **kwargs,
    )


@pytest.fixture(scope="module")
def reference() -> LLM:
    return _engine("torch")


@pytest.fixture(scope="module")
def triton_llm() -> LLM:
    return _engine("triton")


def test_greedy_tokens_and_logprobs_match_the_torch_path(reference: LLM, triton_llm: LLM) -> None:
    """Mixed steps (decodes with chunked prefills: the 50-token prompt spans two 48-token steps)."""
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=3)
    ours = triton_llm.generate(PROMPTS, params)
    ref = reference.generate(PROMPTS, params)
    for a, b in zip(ours, ref, strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        got = torch.tensor([lp.logprob for lp in a.outputs[0].logprobs])
        want = torch.tensor([lp.logprob for lp in b.outputs[0].logprobs])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _run(llm: LLM, request_id: str, prompt: list[int], params: SamplingParams, **kwargs):
    engine = llm.engine
    engine.add_request(request_id, prompt, params, stream=False, **kwargs)
    out = None
    while engine.has_unfinished_requests():
        for o in engine.step():
            out = o
    return out


def test_prompt_scores_match(reference: LLM, triton_llm: LLM) -> None:
    """Classification scores every prompt token: the prefill kernel's rows, not only the last one."""
    prompt = list(range(100, 170))
    params = SamplingParams(max_tokens=1, temperature=0)
    scores = [
        torch.tensor([lp.logprob for lp in _run(llm, "score", prompt, params, score_from=1).prompt_logprobs])
        for llm in (reference, triton_llm)
    ]
    assert scores[0].numel() == len(prompt) - 1
    torch.testing.assert_close(scores[1], scores[0], atol=1e-4, rtol=1e-4)


def test_reused_prefix_gives_the_same_logprobs(reference: LLM, triton_llm: LLM) -> None:
    """A prompt whose first blocks are cached attends over them through the paged prefill kernel."""
    prefix = list(range(200, 240))  # 40 tokens: two full 16-token blocks get cached
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, logprobs=0)
    outs = []
    for llm in (reference, triton_llm):
        _run(llm, "first", prefix + [1], params)
        outs.append(_run(llm, "second", prefix + [9, 8, 7], params))
    assert outs[1].num_cached_tokens == 32
    assert outs[1].outputs[0].token_ids == outs[0].outputs[0].token_ids
    got, want = ([lp.logprob for lp in o.outputs[0].logprobs] for o in (outs[1], outs[0]))
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=1e-4)


class _EagerReplay:
    """Stands in for a captured CUDA graph on CPU: replay() recomputes over the static buffers."""

    def __init__(self, graphs: DecodeGraphs, size: int) -> None:
        self.forward = lambda: graphs._forward(size)
        self.logits = self.forward()

    def replay(self) -> None:
        self.logits.copy_(self.forward())


def test_padded_graph_decode_matches_eager_decode(reference: LLM) -> None:
    """The graph path (static buffers, padding rows on a scratch block) gives the eager path's results.

    Only the capture itself needs a GPU: here each "graph" recomputes on replay.
    """
    llm = _engine("triton", max_num_seqs=6)
    runner, pool = llm.engine.runner, llm.engine.scheduler.kv
    cfg = runner.model.cfg
    bs = runner.block_size
    runner.kv_cache = torch.zeros(cfg.num_layers, 2, (pool.num_blocks + 1) * bs, cfg.num_kv_heads, cfg.head_dim)
    graphs = DecodeGraphs(
        runner.model,
        runner.backend,
        runner.kv_cache,
        bs,
        6,
        256,
        pad_block=pool.num_blocks,
        device=torch.device("cpu"),
        num_sms=4,
    )
    assert graphs.sizes == [1, 2, 4, 6]
    graphs._graphs = {size: (replay := _EagerReplay(graphs, size), replay.logits) for size in graphs.sizes}
    runner.graphs = graphs
    replays = []
    real_run = graphs.run
    graphs.run = lambda rows: replays.append(len(rows.token_ids)) or real_run(rows)

    prompts = PROMPTS[:3]  # 3 decodes per step: padded to 4
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True, logprobs=0)
    ours = llm.generate(prompts, params)
    ref = reference.generate(prompts, params)
    assert replays and set(replays) <= {1, 2, 3}
    for a, b in zip(ours, ref, strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        got, want = ([lp.logprob for lp in o.outputs[0].logprobs] for o in (a, b))
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=1e-4)
