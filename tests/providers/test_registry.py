"""Provider ids: parsing, errors, what each kind builds."""

import pytest

from vivace.providers import get_provider
from vivace.providers.fallback import FallbackProvider
from vivace.providers.openai_compat import OpenAICompatibleProvider
from vivace.providers.registry import UnknownProviderError, parse_spec
from vivace.providers.retry import RetryingProvider


def test_parse_spec_splits_at_the_first_colon():
    assert parse_spec("openai-compatible:m@http://h:8000/v1") == ("openai-compatible", "m@http://h:8000/v1")
    assert parse_spec("local:") == ("local", "")
    assert parse_spec(" hf:/models/x.gguf ") == ("hf", "/models/x.gguf")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gpt-4o", "has no ':'"),
        ("azure:gpt", "unknown provider 'azure'"),
        ("groq:", "names no model"),
        ("", "empty provider id"),
        ("openai-compatible:model-only", "needs MODEL@BASE_URL"),
    ],
)
def test_bad_ids_are_specific_errors(spec, message):
    with pytest.raises(UnknownProviderError, match=message):
        get_provider(spec)


def test_remote_providers_retry_by_default_and_retries_0_turns_it_off():
    wrapped = get_provider("openai-compatible:m@http://127.0.0.1:1/v1")
    assert isinstance(wrapped, RetryingProvider) and wrapped.policy.max_retries == 2
    plain = get_provider("openai-compatible:m@http://127.0.0.1:1/v1", retries=0, timeout=5.0)
    assert isinstance(plain, OpenAICompatibleProvider) and plain.model == "m"
    assert plain.base_url == "http://127.0.0.1:1/v1"


def test_model_names_may_contain_at_signs():
    provider = get_provider("openai-compatible:org/model@v2@https://host/v1", retries=0)
    assert (provider.model, provider.base_url) == ("org/model@v2", "https://host/v1")


def test_comma_list_is_a_fallback_in_order():
    provider = get_provider("openai-compatible:a@http://127.0.0.1:1/v1, openai-compatible:b@http://127.0.0.1:2/v1")
    assert isinstance(provider, FallbackProvider)
    assert [p.id for p in provider.providers] == [
        "openai-compatible:a@http://127.0.0.1:1/v1",
        "openai-compatible:b@http://127.0.0.1:2/v1",
    ]


def test_bad_base_url_is_named():
    with pytest.raises(ValueError, match="base_url must start with http"):
        get_provider("openai-compatible:m@ftp://x", retries=0)
