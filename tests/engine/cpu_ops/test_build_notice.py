"""The one-line notice printed when the C++ CPU kernels must compile at run time, and only then."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vivace.engine.cpu_ops import _SOURCES, _announce_if_compiling


def test_notice_only_while_no_built_module_is_newer_than_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    _announce_if_compiling("probe")
    assert "compiling the C++ CPU kernels" in capsys.readouterr().err
    built = tmp_path / "probe" / "probe.so"
    built.write_bytes(b"")
    newest = max(os.path.getmtime(p) for p in _SOURCES)
    os.utime(built, (time.time(), max(newest + 1, time.time())))
    _announce_if_compiling("probe")
    assert capsys.readouterr().err == ""
    os.utime(built, (newest - 10, newest - 10))  # older than a source: a rebuild is due
    _announce_if_compiling("probe")
    assert "compiling" in capsys.readouterr().err
