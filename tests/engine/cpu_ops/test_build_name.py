"""The CPU ops' build-cache name carries what the build depends on: the CPU (-march=native), sources, flags, torch."""

import os
import subprocess
import sys

import pytest

from vivace.engine.cpu_ops import (
    STALE_LOCK_SECONDS,
    _build_name,
    build_key,
    builder_running_in,
    cpu_fingerprint,
    is_stale_lock,
)

X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f amx_tile
"""


def test_same_cpu_same_fingerprint_whatever_the_core_count_or_flag_order():
    one_core = X86.split("processor\t: 1")[0]
    reordered = X86.replace("fpu sse2 avx2 avx512f amx_tile", "avx2 fpu amx_tile sse2 avx512f")
    assert cpu_fingerprint(X86, "x86_64") == cpu_fingerprint(one_core, "x86_64") == cpu_fingerprint(reordered, "x86_64")


def test_another_instruction_set_or_model_or_architecture_changes_it():
    base = cpu_fingerprint(X86, "x86_64")
    assert cpu_fingerprint(X86.replace(" avx512f", ""), "x86_64") != base
    assert cpu_fingerprint(X86.replace("8480+", "8470"), "x86_64") != base
    assert cpu_fingerprint(X86, "aarch64") != base
    arm = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"
    assert cpu_fingerprint(arm, "aarch64") != cpu_fingerprint(arm.replace(" sve", ""), "aarch64")


def test_this_machine_gets_a_fingerprinted_name():
    name = _build_name()
    assert name.startswith("vivace_cpu_kernels_") and len(name) == len("vivace_cpu_kernels_") + 12
    assert name == _build_name()


def test_sources_flags_torch_and_paths_each_change_the_build_key():
    paths = ["/a/vivace/engine/cpu_ops", "/a/.venv/torch/include"]
    base = build_key("cpu", [b"a", b"b"], ["-O3"], "2.13.0", paths)
    assert build_key("cpu", [b"a", b"b"], ["-O3"], "2.13.0", list(paths)) == base
    assert build_key("other", [b"a", b"b"], ["-O3"], "2.13.0", paths) != base
    assert build_key("cpu", [b"a", b"c"], ["-O3"], "2.13.0", paths) != base
    assert build_key("cpu", [b"ab"], ["-O3"], "2.13.0", paths) != base  # sources hashed one by one, not joined
    assert build_key("cpu", [b"a", b"b"], ["-O2"], "2.13.0", paths) != base
    assert build_key("cpu", [b"a", b"b"], ["-O3"], "2.14.0", paths) != base
    # Another checkout of the same sources: its compile commands differ, so it builds in a folder of its own.
    assert build_key("cpu", [b"a", b"b"], ["-O3"], "2.13.0", ["/b/vivace/engine/cpu_ops", paths[1]]) != base
    assert build_key("cpu", [b"a", b"b"], ["-O3"], "2.13.0", [paths[0], "/b/.venv/torch/include"]) != base


def test_a_lock_is_stale_only_when_nothing_was_built_under_it_for_a_while_and_no_builder_runs():
    now = 10_000.0
    old = now - STALE_LOCK_SECONDS - 1
    assert is_stale_lock(old, old, now, builder_running=False)
    assert not is_stale_lock(old, now - 5, now, builder_running=False)  # a long build still writing its objects
    assert not is_stale_lock(now - 5, old, now, builder_running=False)  # a build that just started
    assert not is_stale_lock(old, old, now, builder_running=True)  # a slow compile on a loaded machine


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_process_working_in_the_build_folder_is_seen(tmp_path):
    assert not builder_running_in(str(tmp_path))
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], cwd=tmp_path)
    try:
        assert builder_running_in(str(tmp_path))
    finally:
        worker.kill()
        worker.wait()
    assert not builder_running_in(str(tmp_path))
