"""The packaged Gemma 3 270M GGUF (`--model gemma3`) against transformers loading the same file.

transformers reads Gemma 3 GGUFs itself (its own tensor mapping, its own Gemma 3 code): the
reference nobody here wrote. Checked on the torch reference kernels and the C++ CPU kernels:
the config read from the file, the tokenizer, prefill logits at every position (a chat prompt,
and a prompt longer than the 512-token sliding window, prefilled in chunks that cross it) and
greedy continuations.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.tiny_hf_models import engine_prefill_logits
from vivace.engine.config import SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.llm import LLM
from vivace.engine.loaders.default_model import gemma3_model_path, resolve_model_path
from vivace.engine.loaders.gguf import gguf_model_config, open_gguf
from vivace.engine.loaders.tokenizer_builders import tokenizer_from_gguf_metadata
from vivace.engine.tokenizer import Tokenizer

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is the capital of France?"}]
TEXTS = [
    "The quick brown fox",
    "def fibonacci(n):\n    return n",
    "Les mots français: été, où — 日本語",
    "  two  spaces\n\n",
]
LONG = 700  # tokens: past the 512-token window
CHUNK = 256  # token budget per step: the long prompt's chunks cross the window's edge
GREEDY_TOKENS = 24


@pytest.fixture(scope="module")
def path() -> str:
    return gemma3_model_path()


@pytest.fixture(scope="module")
def tokenizer(path: str) -> Tokenizer:
    """Our tokenizer, built from the GGUF's metadata."""
    return tokenizer_from_gguf_metadata(open_gguf(path).metadata)


@pytest.fixture(scope="module")
def prompts(tokenizer: Tokenizer) -> dict[str, list[int]]:
    generator = torch.Generator().manual_seed(0)
    return {
        "chat": tokenizer.encode_chat(CHAT),
        "long": [2] + torch.randint(10, 200000, (LONG,), generator=generator).tolist(),
    }


@pytest.fixture(scope="module")
def reference(path: str, prompts: dict[str, list[int]]) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """transformers' logits at every position and greedy continuation of each prompt."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    out = {}
    with torch.inference_mode():
        for name, ids in prompts.items():
            logits = model(torch.tensor([ids])).logits[0].float()
            greedy = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=GREEDY_TOKENS,
                eos_token_id=None,
                pad_token_id=0,
            )[0, len(ids) :].tolist()
            out[name] = (logits, greedy)
    return out


@pytest.fixture(scope="module", params=["torch", "cpu"])
def llm(request: pytest.FixtureRequest) -> LLM:
    if request.param == "cpu" and load_cpu_ops() is None:
        pytest.skip("the C++ CPU ops are not built here")
    return LLM(
        "gemma3",
        quantization="none",
        attention_backend=request.param,
        max_model_len=2048,
        max_num_batched_tokens=CHUNK,
        kv_cache_memory_bytes=64 << 20,
    )


def test_short_name_finds_the_packaged_file(path: str) -> None:
    assert resolve_model_path("gemma3") == path
    assert os.path.basename(path) == "gemma-3-270m-q4_k_m.gguf"


def test_config_read_from_the_file(path: str) -> None:
    file = open_gguf(path)
    cfg = gguf_model_config(file.metadata, {t.name for t in file.tensors}, path)
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (18, 4, 1, 256, 262144)
    assert [i for i in range(18) if cfg.layer_window(i) is None] == [5, 11, 17]  # 5 local : 1 global
    assert cfg.sliding_window == 512
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.query_pre_attn_scalar) == (1e6, 1e4, 256.0)
    assert cfg.eos_token_ids == [1, 106]  # <eos>, and <end_of_turn> which ends a chat reply


def test_tokenizer_and_chat_template(path: str, tokenizer: Tokenizer) -> None:
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    for text in TEXTS:
        assert tokenizer.encode(text) == theirs(text).input_ids, text
    assert tokenizer.apply_chat_template(CHAT) == (
        "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"
    )


@pytest.mark.parametrize("name", ["chat", "long"])
def test_prefill_logits_match_transformers(llm: LLM, prompts, reference, name: str) -> None:
    llm.engine.scheduler.kv.reset_prefix_cache()  # every position computed, none reused
    _, ours, steps = engine_prefill_logits(llm, prompts[name])
    theirs = reference[name][0]
    assert steps == -(-len(prompts[name]) // CHUNK)
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-4 * theirs.abs().max().item(), f"max |logit difference| {diff}"
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_greedy_continuations_match_transformers(llm: LLM, prompts, reference) -> None:
    outs = llm.generate(
        list(prompts.values()), SamplingParams(temperature=0.0, max_tokens=GREEDY_TOKENS, ignore_eos=True)
    )
    for name, out in zip(prompts, outs, strict=True):
        assert out.outputs[0].token_ids == reference[name][1], name
    assert llm.engine.scheduler.kv.num_used == 0
