"""Triton kernels run on CPU under Triton's interpreter, for the tests in this folder only.

The interpreter is chosen when a kernel is decorated (at import), so TRITON_INTERPRET=1 is set
while this folder's kernel modules are imported and while its tests run, then restored: the rest
of the suite never sees it.
"""

from __future__ import annotations

import importlib
import os

import pytest

KERNEL_MODULES = [
    "vivace.engine.attention.triton_decode",
    "vivace.engine.attention.triton_prefill",
    "vivace.engine.kernels.triton_act",
    "vivace.engine.kernels.triton_argmax",
    "vivace.engine.kernels.triton_lora",
    "vivace.engine.kernels.triton_norm",
    "vivace.engine.kernels.triton_rotary",
]


def _import_interpreted() -> str | None:
    """Import the kernel modules with the interpreter on; the reason triton is unusable, or None."""
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401

        for name in KERNEL_MODULES:
            importlib.import_module(name)
    except ImportError as exc:
        return f"triton is not importable here ({exc}); install it with `pip install triton`"
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
    return None


_import_interpreted()  # test modules skip themselves through pytest.importorskip("triton")


@pytest.fixture(autouse=True)
def _triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton reads some knobs at launch too: keep the interpreter on while these tests run."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
