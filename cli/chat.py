"""``charops chat``: talk to a served character in the terminal (any OpenAI-compatible endpoint).

    charops chat --endpoint http://127.0.0.1:8080 --character 林小满     # charops deploy --local
    charops chat --endpoint https://llm.example.com/v1 --model my-model \\
                 --character 林小满 --profiles runs/dpo/model            # profile rendered here

Replies stream as they are generated; the conversation is kept and sent back each turn.
Commands: ``/reset`` (forget the conversation), ``/character NAME`` (switch, and forget),
``/exit`` (or Ctrl-D). Ctrl-C stops a reply half-way.

A charops server lists one model id per character (``NAME:CHARACTER``) and renders the
profile itself; for other servers ``--profiles`` (a model directory or a characters.jsonl)
supplies the profile, which becomes the system prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from charops.cli.common import printable
from charops.errors import CharopsError

PROMPT = "you> "
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # what the server (torch.manual_seed) takes
# Control characters a model may emit (escape sequences, bells) would drive the terminal.
_CONTROL = dict.fromkeys(c for c in [*range(32), *range(127, 160)] if chr(c) not in "\n\t")
HELP = "commands: /reset, /character NAME, /exit"


def base_url(endpoint: str) -> str:
    """The OpenAI base URL: a bare server address gets charops' ``/openai/v1``."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CharopsError(f"--endpoint '{endpoint}': expected http(s)://HOST[:PORT][/PATH]")
    return endpoint.rstrip("/") + ("/openai/v1" if parts.path.strip("/") == "" else "")


def _profiles(path: str | None) -> dict:
    if path is None:
        return {}
    from charops.serve.characters import CHARACTERS_FILE, load_characters

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not (folder / CHARACTERS_FILE).is_file() or (not p.is_dir() and p.name != CHARACTERS_FILE):
        raise CharopsError(f"--profiles '{path}': expected a model directory holding {CHARACTERS_FILE} "
                           f"or the {CHARACTERS_FILE} file itself")
    return load_characters(folder)


class Session:
    """The conversation, the character and how to reach the endpoint."""

    def __init__(self, client, model: str | None, character: str | None, profiles: dict,
                 max_tokens: int | None, temperature: float | None, seed: int | None = None,
                 allow_untrained: bool = False):
        self.client, self.profiles = client, profiles
        self.model_arg, self.max_tokens, self.temperature, self.seed = model, max_tokens, temperature, seed
        self.allow_untrained = allow_untrained
        listed = list_models(client)
        self.ids = [m["id"] for m in listed]
        # A charops server flags characters whose training data was all rejected.
        self.untrained = {m["id"] for m in listed
                          if isinstance(m.get("character"), dict) and m["character"].get("trained") is False}
        self.history: list[dict] = []
        self.set_character(character)

    def set_character(self, character: str | None) -> None:
        """Pick the model id and system prompt for ``character``; forget the conversation."""
        ids = self.ids
        model, system, extra = self.model_arg, None, {}
        if character and model is None and any(i.endswith(f":{character}") for i in ids):
            model = next(i for i in ids if i.endswith(f":{character}"))  # a charops server
        elif character and character in self.profiles:
            system = self.profiles[character].system_prompt
        elif character:
            with_chars = sorted(i.split(":", 1)[1] for i in ids if ":" in i)
            if with_chars and model is None:
                raise CharopsError(f"unknown character '{character}'; this server plays: "
                                   f"{printable(', '.join(with_chars))}")
            if not with_chars:
                raise CharopsError(f"the endpoint does not know character '{character}'; pass "
                                   "--profiles MODEL_DIR (or characters.jsonl) to send its profile")
            extra = {"character": character}
        if model in self.untrained:
            if not self.allow_untrained:
                raise CharopsError(f"character '{character}' is untrained: training rejected all of its data, so "
                                   "the model never learned it; pass --allow-untrained to talk to it anyway")
            extra = {**extra, "allow_untrained": True}
        if model is None:
            plain = [i for i in ids if ":" not in i]
            if not (plain or ids):
                raise CharopsError("the endpoint lists no models; pass --model")
            model = (plain or ids)[0]
        self.character, self.model, self.system, self.extra = character, model, system, extra
        self.history = []

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def reply(self, text: str, out) -> None:
        """Send ``text``, stream the reply to ``out``, keep both in the history."""
        import openai

        self.history.append({"role": "user", "content": text})
        kwargs = {k: v for k, v in (("max_tokens", self.max_tokens), ("temperature", self.temperature),
                                             ("seed", self.seed))
                  if v is not None}
        parts: list[str] = []
        out.write(f"{printable(self.character or self.model)}> ")
        out.flush()
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=self.messages(), stream=True,
                extra_body=self.extra or None, **kwargs)
            for chunk in stream:
                delta = _delta(chunk)
                if delta:
                    parts.append(delta)
                    out.write(delta.translate(_CONTROL))
                    out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        except openai.APIStatusError as exc:
            return self._failed(out, f"{exc.status_code}: {_message(exc)}")
        except openai.APIConnectionError as exc:
            return self._failed(out, f"cannot reach the endpoint ({exc})")
        except openai.APIError as exc:  # an SSE {"error": ...} frame: the server gave up mid-reply
            return self._failed(out, f"the server ended the reply: {_message(exc)}")
        except (ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
            return self._failed(out, f"the endpoint's reply is not an OpenAI chat stream ({type(exc).__name__}: {exc})")
        out.write("\n")
        self.history.append({"role": "assistant", "content": "".join(parts)})

    def _failed(self, out, message: str) -> None:
        """One line for a turn that failed; the conversation goes on without it."""
        self.history.pop()
        out.write(f"\nerror: {printable(' '.join(message.split()))}\n")


def _delta(chunk) -> str | None:
    """The new text of a stream chunk; a chunk of another shape is an error, not a traceback."""
    choices = getattr(chunk, "choices", None)
    if not choices:
        return None
    if not isinstance(choices, list):
        raise TypeError(f"'choices' is {type(choices).__name__}, not a list")
    content = getattr(getattr(choices[0], "delta", None), "content", None)
    if content is not None and not isinstance(content, str):
        raise TypeError(f"'choices[0].delta.content' is {type(content).__name__}, not text")
    return content


def list_models(client) -> list[dict]:
    """The models ``/models`` lists, read from the raw answer so that a server answering
    anything else (an HTML page, ``data`` that is not a list) is one line, not a traceback."""
    url = f"{str(client.base_url).rstrip('/')}/models"
    response = client.models.with_raw_response.list().http_response
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise CharopsError(f"{url} answered {kind}, not an OpenAI model list (is this the API's base URL?)") from None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        raise CharopsError(f"{url} answered JSON whose 'data' is not a list of models with string ids")
    return data


def _message(exc) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    message = (err.get("message") if isinstance(err, dict) else None) or getattr(exc, "message", None) or str(exc)
    return str(message)


def chat(
    endpoint: Annotated[str, typer.Option("--endpoint", help="Server URL: http://127.0.0.1:8080 (charops deploy) or any OpenAI-compatible base URL ending in /v1.")],
    character: Annotated[str | None, typer.Option("--character", help="Character to talk to.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model id (default: the character's id on a charops server, else the first listed).", show_default=False)] = None,
    profiles: Annotated[str | None, typer.Option("--profiles", help="Model directory or characters.jsonl whose profile becomes the system prompt (servers that do not know the character).", show_default=False)] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar=["CHAROPS_API_KEY", "OPENAI_API_KEY"], help="Bearer key (default: $CHAROPS_API_KEY, $OPENAI_API_KEY).", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Longest reply in tokens (default: the server's).", show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Sampling temperature (default: the server's).", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed sent with every turn (reproducible replies).", show_default=False)] = None,
    allow_untrained: Annotated[bool, typer.Option("--allow-untrained", help="Talk to a character the server flags as untrained (training rejected all of its data).")] = False,
) -> None:
    """Chat with a served character in the terminal (streaming, history, /reset, /character, /exit).

    Interactive, so it takes neither --json nor -q: there is no summary to print, only the
    conversation. For scripted turns call the endpoint's OpenAI API (openai SDK, curl).
    """
    import openai

    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise CharopsError(f"--seed {seed} is out of range: give an integer from -2**63 to 2**64-1")
    client = openai.OpenAI(base_url=base_url(endpoint), api_key=api_key or "none",
                           timeout=openai.Timeout(120.0, connect=5.0), max_retries=2)
    try:
        session = Session(client, model, character, _profiles(profiles), max_tokens, temperature, seed,
                          allow_untrained)
    except openai.APIConnectionError:
        raise CharopsError(f"cannot reach {base_url(endpoint)}: is the server running?") from None
    except openai.APIStatusError as exc:
        raise CharopsError(f"{base_url(endpoint)}/models answered {exc.status_code}: {_message(exc)}") from None
    out = sys.stdout
    untrained = " [untrained: training rejected all of its data]" if session.model in session.untrained else ""
    out.write(f"talking to {printable(session.character or session.model)} ({printable(session.model)}){untrained}; {HELP}\n")
    while True:
        try:
            line = input(PROMPT)
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            session.history = []
            out.write("(conversation cleared)\n")
        elif text.startswith("/character"):
            name = text.removeprefix("/character").strip()
            if not name:
                out.write("usage: /character NAME\n")
                continue
            try:
                session.set_character(name)
            except CharopsError as exc:
                out.write(f"error: {printable(str(exc))}\n")
                continue
            out.write(f"(now talking to {printable(name)}; conversation cleared)\n")
        elif text.startswith("/"):
            out.write(f"unknown command {printable(text.split()[0])}; {HELP}\n")
        else:
            session.reply(text, out)
