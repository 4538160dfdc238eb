"""API keys for hosted providers: environment variable first, then the providers config file.

The config file is TOML (`~/.config/vivace/providers.toml`, or the path in VIVACE_PROVIDERS_CONFIG),
one table per provider: `[groq]` / `api_key = "..."`. Keys are held as `Secret`s so they never show
up in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from vivace.providers.base import ProviderError

CONFIG_ENV = "VIVACE_PROVIDERS_CONFIG"


class Secret:
    """A string that hides itself from repr/str; `.reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that sends it (a request header)."""
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the secret replaced by ***."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class MissingAPIKeyError(ProviderError):
    """A hosted provider needs a key and none was found."""

    def __init__(self, provider: str, env_var: str, config: Path) -> None:
        super().__init__(
            f"{provider}: no API key; set the {env_var} environment variable or put api_key under "
            f"[{provider}] in {config} (the config path can be changed with {CONFIG_ENV})",
            status=401,
        )
        self.env_var = env_var


class ProviderConfigError(ValueError):
    """The providers config file exists but cannot be used."""


def config_path() -> Path:
    """Where the providers config file is looked for."""
    override = os.environ.get(CONFIG_ENV)
    return Path(override).expanduser() if override else Path("~/.config/vivace/providers.toml").expanduser()


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The parsed providers config ({} when the file does not exist)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ProviderConfigError(f"providers config {path} is not valid TOML: {exc}") from None


def find_api_key(provider: str, env_var: str, explicit: str | None = None) -> Secret | None:
    """The key from (in order) `explicit`, `env_var`, or `[provider] api_key` in the config file."""
    if explicit:
        return Secret(explicit)
    value = os.environ.get(env_var)
    if value:
        return Secret(value)
    path = config_path()
    section = load_config(path).get(provider, {})
    if not isinstance(section, dict):
        raise ProviderConfigError(f"providers config {path}: [{provider}] must be a table")
    value = section.get("api_key")
    if value is not None and not isinstance(value, str):
        raise ProviderConfigError(f"providers config {path}: [{provider}] api_key must be a string")
    return Secret(value) if value else None


def require_api_key(provider: str, env_var: str, explicit: str | None = None) -> Secret:
    """`find_api_key`, or MissingAPIKeyError naming the variable to set."""
    key = find_api_key(provider, env_var, explicit)
    if key is None:
        raise MissingAPIKeyError(provider, env_var, config_path())
    return key
