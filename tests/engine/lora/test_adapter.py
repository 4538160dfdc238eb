"""Reading PEFT adapter directories: the scaling (plain and rsLoRA), and a clear refusal, naming the field,
of whatever would not be applied exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vivace.engine.lora.adapter import LoRAError, load_adapter

PREFIX = "base_model.model.model.layers.0."


def write(path: Path, config: dict, tensors: dict[str, torch.Tensor] | None = None) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 8, **config}))
    if tensors is None:
        tensors = {
            PREFIX + "self_attn.q_proj.lora_A.weight": torch.randn(2, 16),
            PREFIX + "self_attn.q_proj.lora_B.weight": torch.randn(32, 2),
        }
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return str(path)


def test_scaling_plain_and_rslora(tmp_path: Path) -> None:
    plain = load_adapter(write(tmp_path / "plain", {}))
    assert plain.rank == 2 and plain.scaling == 4.0
    assert set(plain.weights) == {"model.layers.0.self_attn.q_proj"}
    a, b = plain.weights["model.layers.0.self_attn.q_proj"]
    assert a.shape == (2, 16) and b.shape == (32, 2)
    assert load_adapter(write(tmp_path / "rs", {"use_rslora": True})).scaling == pytest.approx(8 / math.sqrt(2))


@pytest.mark.parametrize(
    ("config", "tensors", "words"),
    [
        ({"use_dora": True}, None, "use_dora"),
        ({"modules_to_save": ["lm_head"]}, None, "modules_to_save"),
        ({"bias": "all"}, None, "bias"),
        ({"rank_pattern": {"q_proj": 4}}, None, "rank_pattern"),
        ({"r": 0}, None, "positive integer 'r'"),
        ({}, {"base_model.model.lm_head.lora_A.weight": torch.zeros(2, 16)}, "lm_head"),
        ({}, {PREFIX + "self_attn.q_proj.lora_A.weight": torch.zeros(2, 16)}, "lora_B missing"),
        (
            {},
            {
                PREFIX + "self_attn.q_proj.lora_A.weight": torch.zeros(3, 16),
                PREFIX + "self_attn.q_proj.lora_B.weight": torch.zeros(32, 3),
            },
            "not rank 2",
        ),
    ],
)
def test_unsupported_adapters_are_refused(tmp_path: Path, config: dict, tensors: dict | None, words: str) -> None:
    with pytest.raises(LoRAError, match=words) as caught:
        load_adapter(write(tmp_path / "a", config, tensors))
    assert caught.value.param == "lora_path"


def test_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(LoRAError, match="not a directory"):
        load_adapter(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoRAError, match="no adapter_config.json"):
        load_adapter(str(tmp_path / "empty"))
    path = write(tmp_path / "broken", {})
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LoRAError, match="not a readable safetensors"):
        load_adapter(path)
