"""Draft trees on the Triton backend (interpreter): the tree attention mask against plain attention over
each node's path, and Medusa tree speculation giving plain decoding's greedy tokens."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

from tests.engine.speculative.test_medusa import _random_heads, _texts  # noqa: E402
from tests.tree_attention import BS, check_tree_attention  # noqa: E402
from vivace.engine.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from vivace.engine.config import SamplingParams  # noqa: E402
from vivace.engine.llm import LLM  # noqa: E402


@pytest.mark.parametrize("context,kv_heads", [(1, 1), (45, 2)])
def test_triton_tree_rows_attend_to_the_context_and_their_own_path(context, kv_heads):
    check_tree_attention(TritonAttentionBackend(BS, torch.device("cpu"), kv_heads), context, 4, kv_heads)


def test_medusa_tree_on_triton_is_greedy_identical(tmp_path):
    options = {"model": "random:tiny@3", "kv_cache_memory_bytes": 4 << 20, "max_model_len": 96, "quantization": "none"}
    plain = LLM(**options, attention_backend="torch")
    heads = _random_heads(tmp_path, plain, 3, 0.0)
    spec = LLM(**options, attention_backend="triton", speculative=f"medusa:{heads},tree=8")
    assert spec.engine.proposer.choices
    prompts = [[1 + (i * 7 + j) % 50 for j in range(5 + 9 * i)] for i in range(2)]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    assert _texts(spec.generate(prompts, params, use_tqdm=False)) == _texts(
        plain.generate(prompts, params, use_tqdm=False)
    )
    assert spec.engine.stats()["spec_decode_num_accepted_tokens"] > 0
    assert spec.engine.stats()["blocks_in_use"] == 0
