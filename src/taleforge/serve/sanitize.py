"""What user text looks like once the server accepts it: one line-break style, NFC, no controls.

``clean_text`` is applied to every text field of the API's request bodies (through the
:data:`CleanText` type) and to the studio's inputs, before lengths are checked and before
anything reaches a model, the database or a response:

* ``\\r\\n`` and ``\\r`` become ``\\n`` (a pasted Windows text is the same story);
* control characters are removed, except ``\\n`` and ``\\t``;
* lone surrogates are removed (JSON can encode them; UTF-8 cannot, so they would fail
  later, when a response or a database row is written);
* the text is normalized to Unicode NFC (the same visible text is the same string, so it
  gives the same story and the same cache key).

Escaping for display is not done here: Gradio and the browser render text as text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator

from taleforge.errors import TaleforgeError

#: C0 and C1 controls and DEL, except tab and newline; surrogates (U+D800-U+DFFF).
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile("\r\n?")


class TextTooLong(TaleforgeError):
    """A text is longer than the server accepts (answered with 413)."""

    status = 413

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def clean_text(text: str) -> str:
    """``text`` with one line-break style, no control characters or lone surrogates, NFC."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _UNWANTED.sub("", text)
    return unicodedata.normalize("NFC", text)


#: A ``str`` field of a request body, cleaned by :func:`clean_text` after validation.
CleanText = Annotated[str, AfterValidator(clean_text)]


def clean_json(value: Any) -> Any:
    """``value`` (parsed JSON) with every string in it passed through :func:`clean_text`
    (for a nested body, such as a lorebook, cleaned before it is validated)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {key: clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    return value


def check_length(
    text: str | int, limit: int, field: str, setting: str = "max_prompt_chars"
) -> None:
    """Raise :class:`TextTooLong` when ``text`` (or a length) is over ``limit`` characters.

    The message says how long it is, the limit, and what to change: ``setting`` is the
    ``serve`` option that sets the limit (its field name in ServeConfig).
    """
    size = text if isinstance(text, int) else len(text)
    if size > limit:
        option = "--serve." + setting.replace("_", "-")
        raise TextTooLong(
            f"the {field} is {size:,} characters; this server accepts at most {limit:,} "
            f"(shorten it, or start the server with a larger {option})",
            field,
        )


def check_request_length(
    limit: int,
    prompt: str,
    *,
    memory: str = "",
    authors_note: str = "",
    history: Sequence[Mapping[str, Any]] = (),
    field: str = "prompt",
) -> None:
    """The one length rule of every route that writes (``/api/generate``, the OpenAI routes,
    the studio): what one generation reads, its prompt (or text to continue), memory,
    author's note and chat history, is at most ``limit`` characters together.

    Raises:
        TextTooLong: Naming ``field`` when the prompt alone is over the limit, else the total.
    """
    check_length(prompt, limit, field)
    rest = [memory, authors_note, *(str(turn.get("content", "")) for turn in history)]
    total = len(prompt) + sum(len(text) for text in rest)
    if total > limit:
        raise TextTooLong(
            f"the {field} with its memory, author's note and earlier messages is {total:,} "
            f"characters; this server accepts at most {limit:,} together (shorten them, or "
            "start the server with a larger --serve.max-prompt-chars)",
            field,
        )


def describe_body_error(exc: BaseException | None) -> str | None:
    """What was wrong with a request body the framework could not parse (None: unknown).

    FastAPI answers 400 "There was an error parsing the body" for every failure other than
    a JSON syntax error; the exception it chains says which one it was.
    """
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"the request body is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
            f"position {exc.start}): send JSON encoded as UTF-8"
        )
    if isinstance(exc, RecursionError):
        return "the request body is nested too deeply: send a flat JSON object"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        # int() refuses integers of more than 4,300 digits (CVE-2020-10735).
        return "a number in the request body has too many digits: send numbers in range"
    if isinstance(exc, ValueError):
        return "the request body is not valid JSON: send a JSON object"
    return None


def clean_request(
    prompt: str, options: Mapping[str, Any], max_chars: int
) -> tuple[str, dict[str, Any]]:
    """A studio request with every text cleaned and its lengths checked.

    Returns:
        The prompt and a copy of ``options`` (``memory``, ``authors_note``, ``stop`` and the
        chat ``history`` cleaned).

    Raises:
        TextTooLong: The text, memory, author's note and chat history together are over
            ``max_chars`` (:func:`check_request_length`, the rule of every route).
    """
    prompt = clean_text(prompt)
    cleaned = dict(options)
    for name in ("memory", "authors_note"):
        if isinstance(cleaned.get(name), str):
            cleaned[name] = clean_text(cleaned[name])
    if cleaned.get("stop"):
        cleaned["stop"] = [clean_text(str(stop)) for stop in cleaned["stop"]]
    if cleaned.get("history"):
        cleaned["history"] = [
            {**turn, "content": clean_text(str(turn.get("content", "")))}
            for turn in cleaned["history"]
        ]
    check_request_length(
        max_chars,
        prompt,
        memory=cleaned.get("memory") or "",
        authors_note=cleaned.get("authors_note") or "",
        history=cleaned.get("history") or (),
        field="text",
    )
    return prompt, cleaned
