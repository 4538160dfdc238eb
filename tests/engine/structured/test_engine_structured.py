"""Structured outputs through the engine on the packaged model: outputs validate against their JSON
schema and finish with "stop" at the grammar's end; constrained and unconstrained requests share a
batch; preemption (recompute) leaves the matcher right; a schema it cannot honour names the field."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.conftest import make_test_llm
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.structured.params import StructuredOutputsParams

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}
PROMPTS = [
    [{"role": "user", "content": f"Describe {who} as JSON with name, age and hobbies."}]
    for who in ("a pirate", "my grandmother", "a chess player", "a young runner", "a famous painter", "a cat owner")
]


def _chat_ids(llm, messages):
    return llm.tokenizer.encode_chat(messages)


@pytest.fixture(scope="module")
def llm():
    return make_test_llm(max_model_len=512)


def test_schema_outputs_validate_and_stop(llm):
    constraint = StructuredOutputsParams(json=PERSON)
    params = [SamplingParams(temperature=0.8, seed=i, max_tokens=120, structured_outputs=constraint) for i in range(6)]
    params += [SamplingParams(temperature=0.0, max_tokens=24)]  # an unconstrained row in the same batches
    prompts = [_chat_ids(llm, m) for m in PROMPTS] + [_chat_ids(llm, PROMPTS[0])]
    outs = llm.generate(prompts, params, use_tqdm=False)
    for out in outs[:-1]:
        completion = out.outputs[0]
        assert completion.finish_reason == "stop", completion.text
        jsonschema.validate(json.loads(completion.text), PERSON)
    alone = llm.generate(prompts[-1], params[-1], use_tqdm=False)[0]
    assert outs[-1].outputs[0].token_ids == alone.outputs[0].token_ids


def test_grammar_end_finishes_without_eos(llm):
    params = SamplingParams(
        temperature=0.0, max_tokens=20, structured_outputs=StructuredOutputsParams(regex="[0-9]{3}")
    )
    completion = llm.generate("My favourite number is", params, use_tqdm=False)[0].outputs[0]
    assert completion.finish_reason == "stop"
    assert len(completion.text) == 3 and completion.text.isdigit()


def test_preemption_keeps_the_matcher_right(llm):
    constraint = StructuredOutputsParams(json=PERSON)
    params = SamplingParams(temperature=0.0, max_tokens=100, structured_outputs=constraint)
    prompts = [_chat_ids(llm, m) for m in PROMPTS]
    roomy = llm.generate(prompts, params, use_tqdm=False)
    # About 190 tokens of KV for six sequences of ~130: some are preempted and recomputed.
    tight = make_test_llm(max_model_len=512, kv_cache_memory_bytes=9 << 20)
    outs = tight.generate(prompts, params, use_tqdm=False)
    assert tight.engine.stats()["preemptions"] > 0
    assert [o.outputs[0].text for o in outs] == [o.outputs[0].text for o in roomy]
    for out in outs:
        jsonschema.validate(json.loads(out.outputs[0].text), PERSON)


def test_unusable_constraints_name_the_field(llm):
    for constraint in (
        StructuredOutputsParams(json={"type": "string", "not": {"const": "x"}}, field="response_format"),
        StructuredOutputsParams(regex="(unclosed", field="response_format"),
        StructuredOutputsParams(grammar="start: missing", field="response_format"),
    ):
        with pytest.raises(InvalidParameterError) as e:
            llm.generate("x", SamplingParams(max_tokens=2, structured_outputs=constraint), use_tqdm=False)
        assert e.value.param == "response_format"
    assert llm.engine.num_requests == 0
    with pytest.raises(InvalidParameterError, match="exactly one"):
        StructuredOutputsParams(json={}, regex="a")
