"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by playwright (no downloaded browsers).

Usage: `with chromium_page() as page: page.goto(url)`. Tests that need it call `require_chromium()` first
(or use the `page` fixture their conftest builds on `chromium_page`), which skips with the reason when
the browser or playwright is missing and `VIVACE_REQUIRE_BROWSER` is unset, and fails otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = os.environ.get("VIVACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip (or fail, when VIVACE_REQUIRE_BROWSER is set) unless playwright and Chromium are both present."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (bash scripts/setup.sh test installs Debian's chromium)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("VIVACE_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextmanager
def chromium_page(width: int = 1280, height: int = 900, default_timeout_ms: int = 30_000) -> Iterator[Page]:
    """A fresh headless Chromium page (own temp profile, viewport `width` x `height`), closed on exit."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    profile = tempfile.mkdtemp(prefix="vivace-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": width, "height": height},
            )
            try:
                context.set_default_timeout(default_timeout_ms)
                page = context.pages[0] if context.pages else context.new_page()
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
