"""SillyTavern 1.12.6 as a real client of charops's server, driven in headless Chromium.

SillyTavern (../shared/clients/SillyTavern-1.12.6.tar.gz, unpacked once into
``$CHAROPS_TEST_CLIENTS`` or ``~/.cache/charops-test-clients`` with ``npm ci --omit=dev``)
runs on a free loopback port with its own data directory. Through its UI the test imports a
PNG card written by ``charops data export-card``, connects the "Custom (OpenAI-compatible)"
chat-completion source to charops's OpenAI routes (the app ``charops deploy`` serves, here on a
free loopback port in this process, so the test sees what the server received), sends a
message and swipes. It asserts that the reply shows in the chat, that the server kept the
trained profile with SillyTavern's own system prompt (``character_prompt: merge``), and that the
chat SillyTavern saved (JSONL, swipes included) is read by ``charops data validate`` as
``sillytavern-chat``.

Needs node + npm (the first run installs SillyTavern's packages from the npm registry, ~70 s),
Debian's chromium and the playwright package; it skips with the reason when one is missing.

    .venv/bin/python -m pytest tests/unit/test_sillytavern.py -x -q
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TARBALL = ROOT.parent / "shared" / "clients" / "SillyTavern-1.12.6.tar.gz"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHARACTER = "Tom"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="module")
def sillytavern_dir() -> Path:
    """SillyTavern unpacked with its packages installed (once per machine; reused)."""
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} absent (the test client lives in ../shared/clients)")
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed to run SillyTavern (apt-get install nodejs npm)")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is needed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    cache = Path(os.environ.get("CHAROPS_TEST_CLIENTS", Path.home() / ".cache" / "charops-test-clients"))
    st = cache / "SillyTavern-1.12.6"
    if not (st / "node_modules" / ".package-lock.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(TARBALL) as tar:
            tar.extractall(cache, filter="data")
        done = subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=st,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"npm ci failed (offline?): {done.stderr.strip().splitlines()[-1:]}")
    return st


@pytest.fixture(scope="module")
def charops_server(tmp_path_factory, serve_model_dir):
    """charops's OpenAI routes for serve_model_dir on a free loopback port (uvicorn in a thread),
    recording each chat request it received and the policy it applied."""
    import uvicorn
    from fastapi import FastAPI, Request

    from charops.serve.openai_api import openai_router
    from charops.serve.server import ServeConfig, build_state

    # SillyTavern asks for 300 tokens after a prompt of its own (main prompt, card fields): more
    # than the micro model's 512 positions. Its rotary positions extend; random weights care not.
    model = tmp_path_factory.mktemp("st-model") / "model"
    shutil.copytree(serve_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 16384}))
    state = build_state(ServeConfig(model_dir=str(model), max_tokens_cap=1024))
    received: list[dict] = []
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next):
        body = await request.body()
        response = await call_next(request)
        if request.url.path.endswith("/chat/completions"):
            received.append({"body": json.loads(body), "status": response.status_code,
                             "policy": response.headers.get("x-charops-character-prompt")})
        return response

    app.include_router(openai_router(state))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    state.engine.start()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, 30, "the charops server")
    yield {"url": f"http://127.0.0.1:{port}/openai/v1", "state": state, "received": received}
    server.should_exit = True
    thread.join(10)
    state.engine.stop()


@pytest.fixture(scope="module")
def sillytavern(sillytavern_dir, tmp_path_factory):
    """SillyTavern's server on a free loopback port with a fresh data directory."""
    data = tmp_path_factory.mktemp("st-data")
    port = _free_port()
    log = open(data.parent / "sillytavern.log", "wb")
    proc = subprocess.Popen(["node", "server.js", "--port", str(port), "--listen", "false", "--autorun", "false",
                             "--dataRoot", str(data)], cwd=sillytavern_dir, stdout=log, stderr=subprocess.STDOUT)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"SillyTavern exited: {(data.parent / 'sillytavern.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        _wait(up, 120, "SillyTavern to listen")
        yield {"url": f"http://127.0.0.1:{port}/", "data": data, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def card_png(tmp_path_factory, serve_model_dir) -> Path:
    """Tom's profile as a V3 PNG card, written by `charops data export-card`."""
    from charops.data.cards import blank_png

    out = tmp_path_factory.mktemp("card")
    (out / "image.png").write_bytes(blank_png())
    charops = Path(sys.executable).parent / "charops"
    subprocess.run([str(charops), "data", "export-card", str(serve_model_dir / "characters.jsonl"), "--name",
                    CHARACTER, "--format", "v3", "--png", str(out / "image.png"), "--out", str(out / "Tom.png"),
                    "-q"], check=True, timeout=120)
    return out / "Tom.png"


def _chats(data: Path) -> list[Path]:
    return sorted((data / "default-user" / "chats").glob(f"{CHARACTER}/*.jsonl"))


def test_sillytavern_chats_and_swipes_through_charops(sillytavern, charops_server, card_png, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, model_id = charops_server["url"], f"{charops_server['state'].name}:{CHARACTER}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(sillytavern["url"], wait_until="domcontentloaded")
            # First start: the welcome popup asks for a persona name.
            welcome = page.locator("dialog[open]").filter(has_text="Your Persona")
            welcome.locator("textarea").fill("Ana")
            welcome.get_by_text("Save", exact=True).click()
            expect(welcome).to_have_count(0)

            # Import the PNG card charops wrote (the character list's import button's file input).
            page.locator("#character_import_file").set_input_files(str(card_png))
            tom = page.locator("#rm_print_characters_block .character_select").filter(has_text=CHARACTER)
            expect(tom).to_have_count(1, timeout=30_000)

            # API connections: Chat Completion, source Custom (OpenAI-compatible), charops's URL.
            page.locator("#API-status-top").click()
            page.select_option("#main_api", "openai")
            page.select_option("#chat_completion_source", "custom")
            page.locator("#custom_api_url_text").fill(url)
            page.locator("#custom_model_id").fill(model_id)
            page.locator("#api_button_openai").click()
            expect(page.locator(".online_status_text:visible")).to_have_text("Valid", timeout=30_000)
            page.locator("#API-status-top").click()

            if not tom.is_visible():  # the character list lives in the right drawer
                page.locator("#rightNavDrawerIcon").click()
            tom.click()
            expect(page.locator("#rm_button_selected_ch")).to_contain_text(CHARACTER, timeout=30_000)
            greeting = 1 if page.locator("#chat .mes").count() else 0  # Tom's card has no first_mes
            page.locator("#send_textarea").fill("What game do you play tonight?")
            page.locator("#send_but").click()
            expect(page.locator("#chat .mes")).to_have_count(greeting + 2, timeout=120_000)
            reply = page.locator("#chat .last_mes .mes_text")
            expect(reply).not_to_be_empty(timeout=120_000)
            expect(page.locator("#send_but")).to_be_visible(timeout=120_000)
            first = reply.inner_text().strip()
            assert first, "the reply shows in SillyTavern's chat"

            # Swipe: a second reply for the same turn.
            page.locator("#chat .last_mes .swipe_right").click()
            expect(page.locator("#chat .last_mes .swipes-counter")).to_have_text("2/2", timeout=120_000)
            expect(page.locator("#send_but")).to_be_visible(timeout=120_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "sillytavern.png"))
            raise
        finally:
            browser.close()

    # What charops received: SillyTavern's own system prompt, kept after the trained profile.
    received = [r for r in charops_server["received"] if r["body"].get("model") == model_id]
    assert len(received) >= 2 and all(r["status"] == 200 for r in received), received
    assert all(r["policy"] == "merge" for r in received)
    body = received[0]["body"]
    assert any(m["role"] == "system" for m in body["messages"])  # SillyTavern's own prompt
    from charops.serve.prompting import build_chat

    state = charops_server["state"]
    from charops.serve.openai_api import chat_messages

    chat = build_chat(chat_messages(body, None), state.characters[CHARACTER], state.tokenizer, policy="merge",
                      body=body)
    system = chat.messages[0]["content"]
    assert system.startswith(state.characters[CHARACTER].system_prompt)  # the trained profile first
    client_system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    assert client_system in system  # then SillyTavern's text

    # The chat SillyTavern saved, swipes included, read by `charops data validate`.
    saved = _wait(lambda: [p for p in _chats(sillytavern["data"]) if '"swipes"' in p.read_text()
                           and len(json.loads(p.read_text().splitlines()[-1]).get("swipes", [])) == 2],
                  30, "SillyTavern to save the chat")
    charops = Path(sys.executable).parent / "charops"
    done = subprocess.run([str(charops), "data", "validate", str(saved[0]), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [s["format"] for s in summary["sources"]] == ["sillytavern-chat"]
    assert summary["accepted"] == 1 and summary["rejected"] == 0

    from charops.data.importers import load_inputs

    dialogue = load_inputs([saved[0]]).dialogues[0]
    assert dialogue.character == CHARACTER
    assert [t.role for t in dialogue.turns][-2:] == ["user", "assistant"]
    assert dialogue.turns[-2].content == "What game do you play tonight?"
    swipes = dialogue.meta["swipes"][-1]
    last = len(dialogue.turns) - 1
    assert swipes["turn"] == last and len(swipes["swipes"]) == 2 and swipes["swipe_id"] == 1
    assert dialogue.turns[last].content == swipes["swipes"][1]
