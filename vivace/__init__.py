"""vivace: a fast LLM serving system. The offline engine API is importable from here."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["LLM", "AsyncEngine", "EngineConfig", "LLMEngine", "SamplingParams", "__version__"]

try:
    __version__ = version("vivace")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    # Lazy, so `import vivace` (e.g. for the CLI's help) does not pull in torch.
    if name in ("EngineConfig", "SamplingParams"):
        from vivace.engine import config

        return getattr(config, name)
    if name == "LLM":
        from vivace.engine.llm import LLM

        return LLM
    if name == "LLMEngine":
        from vivace.engine.engine import LLMEngine

        return LLMEngine
    if name == "AsyncEngine":
        from vivace.engine.async_engine import AsyncEngine

        return AsyncEngine
    raise AttributeError(name)
