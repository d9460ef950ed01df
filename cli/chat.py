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

from charops.errors import CharopsError

PROMPT = "you> "
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
        listed = client.models.list().data
        self.ids = [m.id for m in listed]
        # A charops server flags characters whose training data was all rejected.
        self.untrained = {m.id for m in listed
                          if ((m.model_extra or {}).get("character") or {}).get("trained") is False}
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
                raise CharopsError(f"unknown character '{character}'; this server plays: {', '.join(with_chars)}")
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
        out.write(f"{self.character or self.model}> ")
        out.flush()
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=self.messages(), stream=True,
                extra_body=self.extra or None, **kwargs)
            for chunk in stream:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    parts.append(delta)
                    out.write(delta.translate(_CONTROL))
                    out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        except openai.APIStatusError as exc:
            self.history.pop()
            out.write(f"\nerror: {exc.status_code}: {_message(exc)}\n")
            return
        except openai.APIConnectionError as exc:
            self.history.pop()
            out.write(f"\nerror: cannot reach the endpoint ({exc})\n")
            return
        out.write("\n")
        self.history.append({"role": "assistant", "content": "".join(parts)})


def _message(exc) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    return (err.get("message") if isinstance(err, dict) else None) or str(exc)


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
    out.write(f"talking to {session.character or session.model} ({session.model}){untrained}; {HELP}\n")
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
                out.write(f"error: {exc}\n")
                continue
            out.write(f"(now talking to {name}; conversation cleared)\n")
        elif text.startswith("/"):
            out.write(f"unknown command {text.split()[0]}; {HELP}\n")
        else:
            session.reply(text, out)
