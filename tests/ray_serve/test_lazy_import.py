"""Without --replicas / --ray-address nothing Ray is imported: every vivace module but vivace.ray_serve
loads without it."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import vivace
for module in pkgutil.walk_packages(vivace.__path__, "vivace."):
    if not module.name.startswith("vivace.ray_serve"):
        importlib.import_module(module.name)
from typer.testing import CliRunner
from vivace.cli import app
assert CliRunner().invoke(app, ["serve", "--help"]).exit_code == 0
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print(len([m for m in sys.modules if m.startswith("vivace.")]), loaded)
"""


def test_no_ray_module_is_imported_outside_vivace_ray_serve():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300, check=True)
    count, loaded = out.stdout.strip().split(" ", 1)
    assert int(count) > 50  # the walk really imported the package
    assert loaded == "[]"


def test_an_unknown_router_is_a_usage_error_naming_the_flag():
    from typer.testing import CliRunner

    from vivace.cli import app

    result = CliRunner().invoke(app, ["serve", "--replicas", "2", "--router", "round-robin"])
    assert result.exit_code == 2
    assert "--router" in result.output and "affinity, pow2" in result.output
