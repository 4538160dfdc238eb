"""API keys: environment, config file, clear errors naming the variable, never shown."""

import pytest

from vivace.providers import get_provider
from vivace.providers.credentials import MissingAPIKeyError, ProviderConfigError, Secret, find_api_key, require_api_key


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    """No provider keys in the environment; the config file points into an empty temp dir."""
    for name in (
        "OPENAI_API_KEY",
        "FIREWORKS_API_KEY",
        "GROQ_API_KEY",
        "TOGETHER_API_KEY",
        "OPENAI_COMPATIBLE_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIVACE_PROVIDERS_CONFIG", str(tmp_path / "providers.toml"))
    return tmp_path / "providers.toml"


@pytest.mark.parametrize(
    "kind, variable",
    [
        ("openai", "OPENAI_API_KEY"),
        ("fireworks", "FIREWORKS_API_KEY"),
        ("groq", "GROQ_API_KEY"),
        ("together", "TOGETHER_API_KEY"),
    ],
)
def test_missing_key_names_the_variable_and_the_config_file(kind, variable, no_keys):
    with pytest.raises(MissingAPIKeyError) as err:
        get_provider(f"{kind}:some-model")
    assert variable in str(err.value) and str(no_keys) in str(err.value)
    assert err.value.env_var == variable and err.value.status == 401


def test_environment_wins_over_the_config_file(monkeypatch, no_keys):
    no_keys.write_text('[groq]\napi_key = "from-file"\n')
    assert require_api_key("groq", "GROQ_API_KEY").reveal() == "from-file"
    monkeypatch.setenv("GROQ_API_KEY", "from-env")
    assert require_api_key("groq", "GROQ_API_KEY").reveal() == "from-env"
    assert require_api_key("groq", "GROQ_API_KEY", explicit="explicit").reveal() == "explicit"


def test_hosted_provider_gets_the_file_key_and_known_base_url(no_keys):
    no_keys.write_text('[together]\napi_key = "tg-file-key"\n')
    provider = get_provider("together:meta-llama/Llama-3-8b", retries=0)
    assert provider.id == "together:meta-llama/Llama-3-8b"
    assert provider.base_url == "https://api.together.xyz/v1"
    assert "tg-file-key" not in repr(provider) and "tg-file-key" not in str(provider)


def test_openai_compatible_needs_no_key(no_keys):
    assert find_api_key("openai-compatible", "OPENAI_COMPATIBLE_API_KEY") is None
    provider = get_provider("openai-compatible:m@http://127.0.0.1:1/v1", retries=0)
    assert provider._key is None


def test_secret_hides_itself_and_redacts():
    secret = Secret("sk-123")
    assert "sk-123" not in repr(secret) and "sk-123" not in str(secret) and "sk-123" not in f"{secret}"
    assert secret.redact("bad key sk-123!") == "bad key ***!"


def test_bad_config_files_are_clear_errors(no_keys):
    no_keys.write_text("[groq\n")
    with pytest.raises(ProviderConfigError, match="not valid TOML"):
        find_api_key("groq", "GROQ_API_KEY")
    no_keys.write_text("groq = 3\n")
    with pytest.raises(ProviderConfigError, match=r"\[groq\] must be a table"):
        find_api_key("groq", "GROQ_API_KEY")
    no_keys.write_text("[groq]\napi_key = 3\n")
    with pytest.raises(ProviderConfigError, match="api_key must be a string"):
        find_api_key("groq", "GROQ_API_KEY")
