"""The playground page in a real browser: Debian's chromium driven by Playwright (no browser
download), against `charops playground` on 127.0.0.1. Screenshots are saved as test artifacts
under $CHAROPS_TEST_ARTIFACTS (default: test-artifacts/playground/).

    .venv/bin/python -m pytest tests/unit/test_playground_browser.py -x -q
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from charops.feedback.store import read_events

pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium on PATH (apt-get install chromium)")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CHAROPS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "playground"
XSS = "<img src=x onerror=\"window.__xss='img'\"><script>window.__xss='script'</script>"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new",
                                                              "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser, playground):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(playground.url + "/")
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    ctx.close()
    assert not errors, errors


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_reply(page, index: int) -> None:
    """Until message ``index`` is a finished reply and every feedback event has been answered."""
    page.wait_for_function(
        f"() => document.querySelector('#messages .msg[data-index=\"{index}\"] .count') &&"
        " document.body.dataset.generating === '0' && document.body.dataset.pending === '0'",
        timeout=60_000)


def settle(page) -> None:
    page.wait_for_function("() => document.body.dataset.pending === '0'")


def test_chat_swipe_edit_rate_branch(page, playground):
    page.select_option("#character", "Tom")
    page.select_option("#n", "2")
    page.fill("#input", "Hello there, how are you?")
    page.click("#send")
    wait_reply(page, 1)
    assert page.inner_text("#messages .msg[data-index='1'] .count") == "1/2"
    page.click("#messages .msg[data-index='1'] .next")
    assert page.inner_text("#messages .msg[data-index='1'] .count") == "2/2"
    page.click("#messages .msg[data-index='1'] .regen")
    wait_reply(page, 1)
    page.wait_for_function("() => document.querySelector('#messages .msg[data-index=\"1\"] .count').textContent === '3/4'")
    page.fill("#messages .msg[data-index='1'] .reason", "too short")
    page.click("#messages .msg[data-index='1'] .down")
    page.click("#messages .msg[data-index='1'] .star[data-n='4']")
    page.click("#messages .msg[data-index='1'] .edit")
    page.fill("#messages .msg[data-index='1'] .edit-text", "(grins) GG! I'm great.")
    page.click("#messages .msg[data-index='1'] .save-edit")
    assert page.inner_text("#messages .msg[data-index='1'] .text") == "(grins) GG! I'm great."
    page.fill("#input", "What do you like?")
    page.click("#send")
    wait_reply(page, 3)
    settle(page)
    shot(page, "chat")

    events = read_events(playground.store, "charops-chat")
    kinds = {e["action"]["kind"]: e for e in events if e["character"] == "Tom" and e["source"] == "playground"
             and e["conversation"].count("-") == 4}
    assert {"thumbs", "stars", "edit", "choose"} <= set(kinds)
    thumbs, choose = kinds["thumbs"], kinds["choose"]
    assert thumbs["action"] == {"kind": "thumbs", "candidate": 2, "up": False, "reason": "too short"}
    assert len(thumbs["candidates"]) == 4 and thumbs["messages"][0]["role"] == "system"
    assert thumbs["messages"][-1] == {"role": "user", "content": "Hello there, how are you?"}
    assert choose["action"] == {"kind": "choose", "candidate": 2, "continued": True}
    assert kinds["edit"]["action"]["text"] == "(grins) GG! I'm great."
    assert kinds["stars"]["action"]["stars"] == 4

    # branch from the first reply: a new conversation holding the turns up to it
    page.click("#messages .msg[data-index='1'] .branch")
    assert page.locator("#messages .msg").count() == 2
    page.click("#reset")
    assert page.locator("#messages .msg").count() == 0  # Tom has no greeting


def test_nothing_a_user_or_model_wrote_is_rendered_as_html(page, playground):
    # the character's name and greeting are markup
    name = page.eval_on_selector_all("#character option", "os => os.map(o => o.textContent)")[2]
    page.select_option("#character", index=2)
    assert name.startswith("<script>")
    greeting = page.inner_text("#messages .msg[data-index='0'] .text")
    assert greeting.startswith("<img src=x onerror=")
    # the user's message is markup
    page.fill("#input", XSS)
    page.click("#send")
    wait_reply(page, 2)
    assert page.inner_text("#messages .msg[data-index='1'] .text") == XSS
    # a reply that is markup: the model here cannot be made to write one, so this one reply is
    # served by the browser's route stand-in in place of the server's stream (the page code that
    # renders it is the real one)
    frames = [{"type": "start", "rendered": [{"role": "user", "content": "x"}],
               "model": {"name": "charops-chat", "version": None, "sha256": None},
               "candidates": [{"position": 0, "sampling": {}}]},
              {"type": "delta", "candidate": 0, "text": XSS}, {"type": "done", "candidate": 0, "text": XSS},
              {"type": "end"}]
    page.route("**/playground/api/chat", lambda route: route.fulfill(
        status=200, content_type="text/event-stream",
        body="".join(f"data: {json.dumps(f)}\n\n" for f in frames)))
    page.fill("#input", "again")
    page.click("#send")
    page.wait_for_function("() => document.querySelector('#messages .msg[data-index=\"4\"] .text').textContent.length > 10")
    assert page.inner_text("#messages .msg[data-index='4'] .text") == XSS
    page.click("#messages .msg[data-index='4'] .edit")
    page.fill("#messages .msg[data-index='4'] .edit-text", XSS + " edited")
    page.click("#messages .msg[data-index='4'] .save-edit")
    page.unroute("**/playground/api/chat")
    # arena replies that are markup (stand-in for the arena route, same reason)
    page.route("**/playground/api/arena", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"match": "m", "rendered": [], "candidates": [{"position": 0, "text": XSS},
                                                                      {"position": 1, "text": XSS}]})))
    page.click("#tab-arena")
    page.fill("#arena-input", XSS)
    page.click("#arena-send")
    page.wait_for_function("() => document.querySelector('#arena-a .text').textContent.length > 10")
    assert page.inner_text("#arena-a .text") == XSS
    shot(page, "escaping")
    assert page.evaluate("() => window.__xss") is None
    assert page.evaluate("() => document.querySelectorAll('main img, main script').length") == 0


def test_arena_vote_reveals_and_leaderboard_ranks(page, playground):
    page.click("#tab-arena")
    page.select_option("#arena-character", "林小满")
    assert page.inner_text("#arena-greeting") == "（微笑）你好呀！"
    for i in range(3):
        page.fill("#arena-input", f"你在做什么？{i}")
        page.click("#arena-send")
        page.wait_for_selector("#vote-a:not([disabled])", timeout=60_000)
        assert page.inner_text("#arena-a .who") == ""  # no names before the vote
        page.click("#vote-a")
        page.wait_for_function("() => document.querySelector('#arena-a .who').textContent.startsWith('A was')")
        revealed = {page.inner_text("#arena-a .who"), page.inner_text("#arena-b .who")}
        assert revealed in ({"A was main/model", "B was other/model"}, {"A was other/model", "B was main/model"})
        assert page.inner_text("#arena-result") in ("vote counted", "vote not counted: a reply named its model, "
                                                    "so the vote was not blind")
    shot(page, "arena")
    page.click("#tab-board")
    page.wait_for_selector("#board-overall tr:nth-child(3)")
    rows = page.eval_on_selector_all("#board-overall tr td:first-child", "tds => tds.map(t => t.textContent)")
    assert sorted(r.split(". ", 1)[1] for r in rows) == ["main/model", "other/model"]
    assert page.locator("#board-category h3").count() >= 1
    shot(page, "leaderboard")
