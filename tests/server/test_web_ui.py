"""The web UI at `/`: served assets over HTTP, and every mode driven in headless Chromium against the real server."""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import chromium_page
from tests.server.conftest import API_KEY, GREEDY_MESSAGES, GREEDY_PROMPT, GREEDY_TOKENS, MODEL
from vivace.server.ui import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def page() -> Iterator:
    """A fresh headless Chromium page (own profile, so no settings leak between tests); fails on JS errors."""
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        assert not errors, f"uncaught errors in the page: {errors}"


def open_ui(page, base_url: str, mode: str = "chat", key: str | None = None, **sampling: object) -> None:
    """Load the UI, wait until it has the model list, pick `mode` and set the sampling fields given."""
    page.goto(f"{base_url}/#{mode}")
    if key is not None:
        page.fill("#api-key", key)
        page.press("#api-key", "Enter")
    page.wait_for_selector("#conn-status[data-state=ok]")
    for name, value in sampling.items():
        field = page.locator(f"#sampling [name={name}]")
        if isinstance(value, bool):
            field.set_checked(value)
        else:
            field.fill(str(value))


def stats_of(page, selector: str) -> dict[str, float]:
    """The numbers a response's stats line carries in its data-* attributes."""
    data = page.locator(selector).evaluate("el => ({...el.dataset})")
    return {k: float(v) for k, v in data.items() if v != ""}


def rendered_text(page, markdown: str) -> str:
    """The text `markdown` shows once the page's renderer has turned it into a reply's content."""
    return page.evaluate(
        """async (text) => {
          const { renderMarkdown } = await import('/static/markdown.js');
          const el = document.createElement('div');
          renderMarkdown(el, text);
          return el.textContent;
        }""",
        markdown,
    )


def api(server, path: str, body: dict, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(server.base_url + path, json=body, headers=headers, timeout=60)
    response.raise_for_status()
    return response.json()


def wait_idle(server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while server.engine.stats()["blocks_in_use"] != 0:
        assert time.monotonic() < deadline, f"KV blocks still in use: {server.engine.stats()}"
        time.sleep(0.05)


# --- served over HTTP -------------------------------------------------------------------------------


def test_page_and_every_module_are_public_with_an_api_key(keyed_server):
    """The page and each JS module it imports load without the key, while the API still demands it."""
    page = httpx.get(keyed_server.base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<nav id="pages"' in page.text
    assert httpx.get(keyed_server.base_url + "/v1/models").status_code == 401
    pending, seen = ["app.js", "style.css"], set()
    while pending:
        name = pending.pop()
        seen.add(name)
        response = httpx.get(f"{keyed_server.base_url}/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["cache-control"] == "no-cache"
        if name.endswith((".js", ".mjs")):
            assert "javascript" in response.headers["content-type"], name
            imported = (
                posixpath.join(posixpath.dirname(name), m) for m in re.findall(r"from '\./([\w./-]+)'", response.text)
            )
            pending += [m for m in imported if m not in seen]
    assert {"api.js", "chat.js", "completion.js", "batch.js", "classify.js", "conversations.js", "markdown.js"} <= seen
    assert {"vendor/marked.esm.js", "vendor/purify.es.mjs", "vendor/highlight/core.min.js"} <= seen
    missing = httpx.get(keyed_server.base_url + "/static/nope.js")
    assert missing.status_code == 404


def test_package_data_covers_every_static_file():
    """Everything in vivace/server/static matches the package-data globs, so it ships in the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["vivace.server"]
    files = [p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert files
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not unshipped


def test_vendored_files_are_the_versions_their_note_names():
    """Each vendored file's own licence header names the version vendor/README.md lists, beside its licence."""
    vendor = STATIC_DIR / "vendor"
    note = (vendor / "README.md").read_text()
    headers = {
        "marked": (vendor / "marked.esm.js", r"marked v([\d.]+)"),
        "dompurify": (vendor / "purify.es.mjs", r"@license DOMPurify ([\d.]+)"),
        "@highlightjs/cdn-assets": (vendor / "highlight" / "core.min.js", r"Highlight\.js v([\d.]+)"),
    }
    for package, (path, pattern) in headers.items():
        version = re.search(pattern, path.read_text()[:400]).group(1)
        assert f"| `{package}` | {version} |" in note, (package, version)
    for licence in ("LICENSE.marked", "LICENSE.dompurify", "LICENSE.highlight"):
        assert (vendor / licence).stat().st_size > 500
    for grammar in (vendor / "highlight").glob("*.min.js"):
        if grammar.name != "core.min.js":
            assert re.match(r"/\*! `[\w+-]+` grammar compiled for Highlight\.js ([\d.]+)", grammar.read_text()), grammar


# --- the page's own logic, run in the browser --------------------------------------------------------

SSE_CHECK = """async () => {
  const { SSEParser } = await import('/static/api.js');
  const got = [];
  const parser = new SSEParser((d) => got.push(d));
  const wire = 'data: {"a":1}\\r\\n\\r\\n: keep-alive\\n\\ndata: x\\ndata: y\\n\\ndata:[DONE]\\r\\n\\r\\n';
  for (let i = 0; i < wire.length; i += 3) parser.push(wire.slice(i, i + 3));  // split everywhere, \\r|\\n too
  return got;
}"""


@pytest.mark.slow
def test_sse_parser_stop_strings_and_rates(page, server):
    page.goto(server.base_url + "/")
    assert page.evaluate(SSE_CHECK) == ['{"a":1}', "x\ny", "[DONE]"]
    stops = page.evaluate("async () => (await import('/static/sampling.js')).parseStops('a, \\\\n ,x\\\\,y,, ')")
    assert stops == ["a", "\n", "x,y"]
    rates = page.evaluate("""async () => {
      const { tokensPerSecond } = await import('/static/stats.js');
      return [tokensPerSecond(11, 0, 100, 600), tokensPerSecond(1, 0, 100, 500), tokensPerSecond(0, 0, 1, 2)];
    }""")
    assert rates == [20.0, 2.0, None]


# --- modes, end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_streams_the_greedy_reply_with_ttft_and_rate(page, server):
    open_ui(page, server.base_url, temperature=0, max_tokens=GREEDY_TOKENS)
    # Count distinct reply texts as they render (a streamed reply shows several before the last), and
    # record what the reply showed first: the typing indicator, before any token.
    page.evaluate("""() => {
      window.seen = new Set();
      window.first = null;
      new MutationObserver(() => {
        const el = document.querySelector('.msg.assistant .content');
        if (!el) return;
        window.seen.add(el.textContent);
        window.first ??= { typing: !!el.querySelector('.typing'), text: el.textContent };
      }).observe(document.getElementById('chat-log'), { childList: true, subtree: true, characterData: true });
    }""")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.fill("#chat-input", GREEDY_MESSAGES[0]["content"])
        page.press("#chat-input", "Enter")
    body = sent.value.post_data_json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == GREEDY_MESSAGES and body["temperature"] == 0 and body["model"] == MODEL
    page.wait_for_selector(".msg.assistant .stats:not([hidden])")
    assert page.locator(".msg.assistant .content").text_content() == rendered_text(page, server.offline["chat"])
    assert page.evaluate("window.seen.size") > 2
    assert page.evaluate("window.first") == {"typing": True, "text": ""}
    assert page.locator(".msg.assistant .typing").count() == 0  # gone once the tokens came
    expected = api(
        server,
        "/v1/chat/completions",
        {"model": MODEL, "messages": GREEDY_MESSAGES, "temperature": 0, "max_tokens": GREEDY_TOKENS},
    )
    stats = stats_of(page, ".msg.assistant .stats")
    assert stats["tokens"] == expected["usage"]["completion_tokens"]
    assert stats["ttftMs"] > 0 and stats["tokPerSec"] > 0
    assert "TTFT" in page.inner_text(".msg.assistant .stats") and "tok/s" in page.inner_text(".msg.assistant .stats")


# A reply that tries everything: raw HTML with handlers, a script, a javascript: link, an image that
# would fetch a URL; and a fenced code block. The server is made to write exactly this (guided_choice).
HOSTILE_REPLY = (
    "Run **this**:\n```python\nprint('hi')\n```\n"
    '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>\n'
    "[link](javascript:window.pwned=3) ![pic](http://127.0.0.1:9/leak.png)"
)


@pytest.mark.slow
def test_a_hostile_reply_renders_inert_with_code_highlighted_and_copyable(page, server):
    """A real streamed reply with HTML, a script and a javascript: link: shown as text, nothing runs or loads."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    open_ui(page, server.base_url, temperature=0, max_tokens=200)
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))

    def force_reply(route) -> None:
        route.continue_(post_data=json.dumps({**route.request.post_data_json, "guided_choice": [HOSTILE_REPLY]}))

    page.route("**/v1/chat/completions", force_reply)
    page.fill("#chat-input", "Show me some code.")
    page.press("#chat-input", "Enter")
    page.wait_for_selector(".msg.assistant .stats:not([hidden])")
    content = page.locator(".msg.assistant .content")
    assert page.evaluate("window.pwned") is None
    assert content.locator("img, script, iframe, svg, style").count() == 0
    handlers = content.evaluate("el => [...el.querySelectorAll('*')].flatMap(n => n.getAttributeNames())")
    assert not [a for a in handlers if a.startswith("on")]
    text = content.text_content()
    assert '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>' in text  # shown, as text
    assert content.locator("strong").text_content() == "this"
    assert content.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))") == [
        None,  # javascript: dropped
        "http://127.0.0.1:9/leak.png",  # the image, as a link: nothing fetched
    ]
    assert not [url for url in fetched if "leak.png" in url]
    code = content.locator(".code-block pre code")
    assert code.text_content() == "print('hi')\n"
    assert code.locator(".hljs-built_in, .hljs-string").count() >= 2  # highlighted as python
    assert content.locator(".code-lang").text_content() == "python"
    content.locator(".code-block .copy").click()
    page.wait_for_function("document.querySelector('.code-block .copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"
    assert stats_of(page, ".msg.assistant .stats")["tokens"] > 0  # the stats line is kept


@pytest.mark.slow
def test_chat_edit_delete_and_regenerate_change_what_is_sent(page, server):
    open_ui(page, server.base_url, temperature=0, max_tokens=GREEDY_TOKENS)
    page.fill("#chat-input", "Say something.")
    page.click("#chat-send")
    page.wait_for_selector(".msg.assistant .stats:not([hidden])")
    assert page.locator(".msg").count() == 2

    page.click(".msg.assistant .delete")
    assert page.locator(".msg").count() == 1
    page.click(".msg.user .edit")
    page.fill(".msg.user .edit-box", GREEDY_MESSAGES[0]["content"])
    page.click(".msg.user .save")
    assert page.locator(".msg.user .content").text_content() == GREEDY_MESSAGES[0]["content"]

    page.fill("#chat-system", "You are terse.")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#chat-regenerate")
    assert sent.value.post_data_json["messages"] == [{"role": "system", "content": "You are terse."}, *GREEDY_MESSAGES]
    page.wait_for_selector(".msg.assistant .stats:not([hidden])")
    page.fill("#chat-system", "")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#chat-regenerate")  # replaces the reply, not appends to it
    assert sent.value.post_data_json["messages"] == GREEDY_MESSAGES
    page.wait_for_selector(".msg.assistant .stats:not([hidden])")
    assert page.locator(".msg").count() == 2
    assert page.locator(".msg.assistant .content").text_content() == rendered_text(page, server.offline["chat"])


def send_and_wait(page, text: str) -> None:
    """Send a chat message and wait until its reply has finished streaming."""
    replies = page.locator(".msg.assistant .stats:not([hidden])").count()
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")
    page.wait_for_function(
        f"document.querySelectorAll('.msg.assistant .stats:not([hidden])').length > {replies} && "
        "document.querySelector('#chat-stop').disabled"
    )


def conversation_titles(page) -> list[str]:
    return page.locator("#chat-conversations option").all_text_contents()


@pytest.mark.slow
def test_conversations_are_kept_listed_renamed_exported_and_deleted(page, server):
    """Conversations live in the browser: a reload keeps them, and each can be reopened, renamed, exported, deleted."""
    open_ui(page, server.base_url, temperature=0, max_tokens=GREEDY_TOKENS)
    first_prompt = GREEDY_MESSAGES[0]["content"]
    send_and_wait(page, first_prompt)
    reply = page.locator(".msg.assistant .content").inner_html()
    assert conversation_titles(page) == [first_prompt]  # titled by its first message until renamed

    page.reload()  # the conversation, its rendered reply and its stats line survive
    open_ui(page, server.base_url, temperature=0, max_tokens=GREEDY_TOKENS)
    assert page.locator(".msg.user .content").all_text_contents() == [first_prompt]
    assert page.locator(".msg.assistant .content").inner_html() == reply
    assert stats_of(page, ".msg.assistant .stats")["tokens"] > 0

    page.click("#chat-new")
    assert page.locator(".msg").count() == 0 and len(conversation_titles(page)) == 2
    page.fill("#chat-system", "You are terse.")
    send_and_wait(page, "Say something.")
    page.fill("#chat-title", "Second")
    page.press("#chat-title", "Enter")
    assert conversation_titles(page)[0] == "Second"

    # Back to the first: its own messages and system prompt, and a new turn sends its whole history.
    page.select_option("#chat-conversations", label=conversation_titles(page)[1])
    assert page.locator(".msg.user .content").all_text_contents() == [first_prompt]
    assert page.input_value("#chat-system") == ""
    with page.expect_request("**/v1/chat/completions") as sent:
        send_and_wait(page, "And then?")
    assert sent.value.post_data_json["messages"] == [
        *GREEDY_MESSAGES,
        {"role": "assistant", "content": server.offline["chat"]},
        {"role": "user", "content": "And then?"},
    ]

    with page.expect_download() as download:
        page.click("#chat-export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert [(m["role"], m["content"]) for m in exported["messages"]][:3] == [
        ("user", first_prompt),
        ("assistant", server.offline["chat"]),
        ("user", "And then?"),
    ]
    assert exported["messages"][1]["stats"]["tokens"] > 0 and exported["title"] == conversation_titles(page)[0]

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#chat-delete-conversation")
    assert conversation_titles(page) == ["Second"]
    assert page.input_value("#chat-system") == "You are terse."
    page.reload()
    open_ui(page, server.base_url)
    assert conversation_titles(page) == ["Second"]
    assert page.locator(".msg.user .content").all_text_contents() == ["Say something."]


@pytest.mark.slow
def test_unreadable_stored_conversations_start_a_fresh_one(page, server):
    """Storage left in a bad state (not JSON, a current id that is gone) gives a working chat, not a broken page."""
    page.goto(server.base_url + "/")
    page.evaluate("""() => {
      localStorage.setItem('vivace.chat.index', '{not json');
      localStorage.setItem('vivace.chat.current', 'gone');
      localStorage.setItem('vivace.chat.gone', '[1, 2');
    }""")
    page.reload()
    open_ui(page, server.base_url, temperature=0, max_tokens=4)
    assert conversation_titles(page) == ["New conversation"]
    send_and_wait(page, "Hello")
    assert conversation_titles(page) == ["Hello"]


@pytest.mark.slow
def test_stop_button_aborts_a_long_generation(page, server):
    open_ui(page, server.base_url, temperature=0.8, max_tokens=400, ignore_eos=True)
    page.fill("#chat-input", "Tell me a long story.")
    page.click("#chat-send")
    page.wait_for_function("document.querySelector('.msg.assistant .content')?.textContent.length > 0")
    page.click("#chat-stop")
    page.wait_for_selector(".msg.assistant .stats:not([hidden])")
    assert "stopped" in page.inner_text(".msg.assistant .stats")
    assert stats_of(page, ".msg.assistant .stats")["tokens"] < 400
    text = page.locator(".msg.assistant .content").text_content()
    wait_idle(server)  # the abort reached the engine and freed the request's KV blocks
    assert page.locator(".msg.assistant .content").text_content() == text
    assert page.is_enabled("#chat-send") and not page.is_enabled("#chat-stop")


def stop_mid_stream(page, server, mode: str, field: str, prompt: str, streamed: str, done: str) -> None:
    """Start a long sampled generation in `mode`, press Stop once the `streamed` JS test holds, wait for `done`."""
    open_ui(page, server.base_url, mode=mode, temperature=0.8, max_tokens=400, ignore_eos=True)
    page.fill(field, prompt)
    page.click(f"#{mode}-run")
    page.wait_for_function(streamed)
    page.click(f"#{mode}-stop")
    page.wait_for_selector(f"{done}:not([hidden])")


@pytest.mark.slow
def test_completion_stop_button_aborts_and_frees_the_request(page, server):
    stop_mid_stream(
        page,
        server,
        "completion",
        "#completion-prompt",
        "Once upon a time",
        "document.querySelector('#completion-output .generated').textContent.length > 0",
        "#completion-stats",
    )
    assert "stopped" in page.inner_text("#completion-stats")
    assert stats_of(page, "#completion-stats")["tokens"] < 400
    wait_idle(server)  # the abort reached the engine and freed the request's KV blocks
    assert page.is_enabled("#completion-run") and not page.is_enabled("#completion-stop")


@pytest.mark.slow
def test_batch_stop_button_aborts_every_prompt(page, server):
    stop_mid_stream(
        page,
        server,
        "batch",
        "#batch-prompts",
        "Once upon a time\nThe sea is",
        "[...document.querySelectorAll('.batch-panel .generated')].some(e => e.textContent.length > 0)",
        "#batch-summary",
    )
    assert "stopped" in page.inner_text("#batch-summary")
    for i in range(2):
        assert "stopped" in page.inner_text(f".batch-panel[data-index='{i}'] .stats")
    assert stats_of(page, "#batch-summary")["tokens"] < 800
    wait_idle(server)  # both choices were aborted and their KV blocks freed
    assert page.is_enabled("#batch-run") and not page.is_enabled("#batch-stop")


@pytest.mark.slow
def test_server_errors_are_shown_by_name(page, server):
    open_ui(page, server.base_url, temperature=-1)
    page.fill("#chat-input", "Hi")
    page.click("#chat-send")
    error = page.wait_for_selector("#chat-error:not([hidden])")
    assert "400" in error.inner_text() and "temperature" in error.inner_text()
    assert page.locator(".msg.assistant").count() == 0  # no empty reply left behind


@pytest.mark.slow
def test_completion_mode_sends_the_raw_prompt(page, server):
    open_ui(page, server.base_url, mode="completion", temperature=0, max_tokens=GREEDY_TOKENS)
    page.fill("#completion-prompt", GREEDY_PROMPT)
    with page.expect_request("**/v1/completions") as sent:
        page.click("#completion-run")
    assert sent.value.post_data_json["prompt"] == GREEDY_PROMPT
    page.wait_for_selector("#completion-stats:not([hidden])")
    assert page.locator("#completion-output .prompt").text_content() == GREEDY_PROMPT
    assert page.locator("#completion-output .generated").text_content() == server.offline["completion"]
    stats = stats_of(page, "#completion-stats")
    assert stats["tokens"] == GREEDY_TOKENS and stats["ttftMs"] > 0 and stats["tokPerSec"] > 0


@pytest.mark.slow
def test_batch_of_four_streams_each_prompt_into_its_panel(page, server):
    prompts = [GREEDY_PROMPT, "Once upon a time", "1, 2, 3,", "The best way to learn is"]
    open_ui(page, server.base_url, mode="batch", temperature=0, max_tokens=8)
    page.fill("#batch-prompts", "\n".join(prompts) + "\n\n")  # blank lines are not prompts
    with page.expect_request("**/v1/completions") as sent:
        page.click("#batch-run")
    assert sent.value.post_data_json["prompt"] == prompts  # all at once, in one request
    page.wait_for_selector("#batch-summary:not([hidden])")
    expected = api(server, "/v1/completions", {"model": MODEL, "prompt": prompts, "temperature": 0, "max_tokens": 8})
    texts = {c["index"]: c["text"] for c in expected["choices"]}
    panels = page.locator(".batch-panel")
    assert panels.count() == 4
    for i in range(4):
        assert panels.nth(i).locator(".generated").text_content() == texts[i]
        stats = stats_of(page, f".batch-panel[data-index='{i}'] .stats")
        assert stats["ttftMs"] > 0 and stats["tokPerSec"] > 0
    summary = stats_of(page, "#batch-summary")
    assert summary["tokens"] == expected["usage"]["completion_tokens"] and summary["prompts"] == 4
    assert (
        sum(stats_of(page, f".batch-panel[data-index='{i}'] .stats")["tokens"] for i in range(4)) == summary["tokens"]
    )


@pytest.mark.slow
def test_classify_shows_a_bar_per_label(page, server):
    text, labels = "I loved this film, it was wonderful!", ["positive", "negative", "neutral"]
    open_ui(page, server.base_url, mode="classify")
    page.fill("#classify-text", text)
    page.fill("#classify-labels", "positive, negative, positive")
    page.click("#classify-run")
    assert "given twice" in page.wait_for_selector("#classify-error:not([hidden])").inner_text()
    page.fill("#classify-labels", ", ".join(labels))
    page.click("#classify-run")
    page.wait_for_selector(".bars")
    bars = page.locator(".bar").evaluate_all("els => els.map(e => [e.dataset.label, Number(e.dataset.prob)])")
    expected = api(server, "/v1/classify", {"model": MODEL, "text": text, "labels": labels})
    assert [label for label, _ in bars] == labels
    assert {label: p for label, p in bars} == pytest.approx(expected["probabilities"], abs=1e-4)
    assert page.locator(".bar.best").get_attribute("data-label") == expected["label"]


@pytest.mark.slow
def test_page_asks_for_the_key_and_sends_it_as_bearer(page, keyed_server):
    page.goto(keyed_server.base_url + "/")
    status = page.wait_for_selector("#conn-status[data-state=error]")
    assert "API key" in status.inner_text()
    open_ui(page, keyed_server.base_url, key=API_KEY, temperature=0, max_tokens=GREEDY_TOKENS)
    assert page.locator("#model option").all_text_contents() == [MODEL]
    page.wait_for_selector("#pages[data-flows='0']")  # asked, with the key: this server has no flows to link
    assert page.locator("#pages a").all_text_contents() == ["Playground"]
    with page.expect_request("**/v1/chat/completions") as sent:
        page.fill("#chat-input", GREEDY_MESSAGES[0]["content"])
        page.click("#chat-send")
    assert sent.value.headers["authorization"] == f"Bearer {API_KEY}"
    page.wait_for_selector(".msg.assistant .stats:not([hidden])")
    assert page.locator(".msg.assistant .content").text_content() == rendered_text(page, keyed_server.offline["chat"])


@pytest.mark.slow
def test_narrow_screen_has_no_sideways_scroll(server):
    with chromium_page(width=390, height=800) as page:
        open_ui(page, server.base_url)
        assert page.locator(".settings details").get_attribute("open") is None  # folded to leave room
        for mode in ("chat", "completion", "batch", "classify"):
            page.click(f"[role=tab][data-mode={mode}]")
            assert page.is_visible(f"#mode-{mode} .primary")
            width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert width[0] <= width[1], f"{mode}: page is {width[0]}px wide in a {width[1]}px viewport"
