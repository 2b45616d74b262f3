"""A KoboldAI generation request translated to taleforge's sampling: pure, no server.

Every field SillyTavern, KoboldAI Lite and KoboldCpp's own API document is listed once in
:data:`FIELDS`: the :class:`SamplingParams` field it sets, or the value at which it changes
nothing. A field whose target SamplingParams lacks, or that taleforge cannot follow at the
value sent, is named in the request's warnings; nothing is dropped silently. Defaults and
bounds stay in SamplingParams: values are validated there, and errors name the Kobold field.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from taleforge.config import SamplingParams
from taleforge.serve.sanitize import clean_text


class KoboldRequestError(ValueError):
    """A request that cannot be taken as sent; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Rule:
    """What taleforge does with one KoboldAI request field.

    Attributes:
        target: The SamplingParams field it sets (used only once SamplingParams has it).
        off: The value at which the field changes nothing (None: every value matters).
        what: What the field controls, for warnings.
        switch: The field that turns this one on; while that is off this one does nothing.
        handled: Read by the handler or a rule of its own below, not by the table.
    """

    target: str | None = None
    off: Any = None
    what: str = ""
    switch: str | None = None
    handled: bool = False


_HANDLED = Rule(handled=True)
_DRY = "DRY"

FIELDS: dict[str, Rule] = {
    # the text, and what the handler reads itself
    "prompt": _HANDLED,
    "memory": _HANDLED,  # kept in context however long the text grows, as KoboldCpp does
    "genkey": _HANDLED,  # names the generation for /api/extra/abort and /generate/check
    "max_context_length": _HANDLED,  # the prompt is cut to fit, as KoboldCpp does
    "quiet": _HANDLED,  # KoboldCpp's console logging; taleforge does not log prompts
    # sampling: the SamplingParams field each sets
    "max_length": Rule("max_new_tokens"),
    "temperature": Rule("temperature"),
    "top_k": Rule("top_k"),
    "top_p": Rule("top_p"),
    "min_p": Rule("min_p"),
    "typical": Rule("typical_p"),
    "rep_pen": Rule("repetition_penalty"),
    "stop_sequence": Rule("stop"),
    "sampler_seed": Rule("seed"),  # negative: a fresh seed, as KoboldCpp's -1
    "n": Rule("num_stories"),
    "presence_penalty": Rule("presence_penalty", 0, "presence penalty"),
    "frequency_penalty": Rule("frequency_penalty", 0, "frequency penalty"),
    "logit_bias": Rule("logit_bias", {}, "logit bias"),
    "banned_tokens": Rule("banned_phrases", [], "phrase bans"),
    "banned_strings": Rule("banned_phrases", [], "phrase bans"),
    "dry_multiplier": Rule("dry_multiplier", 0, _DRY),
    "dry_base": Rule("dry_base", what=_DRY, switch="dry_multiplier"),
    "dry_allowed_length": Rule("dry_allowed_length", what=_DRY, switch="dry_multiplier"),
    "dry_sequence_breakers": Rule("dry_sequence_breakers", what=_DRY, switch="dry_multiplier"),
    "dry_penalty_last_n": Rule("dry_penalty_last_n", what=_DRY, switch="dry_multiplier"),
    "xtc_probability": Rule("xtc_probability", 0, "XTC"),
    "xtc_threshold": Rule("xtc_threshold", what="XTC", switch="xtc_probability"),
    # rules of their own (below)
    "rep_pen_range": _HANDLED,
    "rep_pen_slope": _HANDLED,
    "sampler_order": _HANDLED,
    "use_default_badwordsids": _HANDLED,  # ban end-of-text: min_new_tokens = max_new_tokens
    "singleline": _HANDLED,  # a "\n" stop sequence
    # no counterpart in taleforge: fine only at the value that changes nothing
    "top_a": Rule(off=0, what="top-a sampling"),
    "tfs": Rule(off=1, what="tail-free sampling"),
    "mirostat": Rule(off=0, what="Mirostat"),
    "mirostat_tau": Rule(what="Mirostat", switch="mirostat"),
    "mirostat_eta": Rule(what="Mirostat", switch="mirostat"),
    "dynatemp_range": Rule(off=0, what="dynamic temperature"),
    "dynatemp_exponent": Rule(what="dynamic temperature", switch="dynatemp_range"),
    "smoothing_factor": Rule(off=0, what="quadratic sampling"),
    "smoothing_curve": Rule(what="quadratic sampling", switch="smoothing_factor"),
    "nsigma": Rule(off=0, what="top-n-sigma sampling"),
    "top_n_sigma": Rule(off=0, what="top-n-sigma sampling"),
    "grammar": Rule(off="", what="GBNF grammars"),
    "grammar_retain_state": Rule(what="GBNF grammars", switch="grammar"),
    "images": Rule(off=[], what="image input"),
    "logprobs": Rule(off=False, what="log probabilities on this API"),
    "bypass_eos": Rule(off=False, what="option to write on past end-of-text"),
    "render_special": Rule(off=False, what="option to show special tokens"),
    "trim_stop": Rule(off=True, what="option to keep stop sequences in the text"),
    "use_story": Rule(off=False, what="server-side story (a KoboldAI United feature)"),
    "use_memory": Rule(off=False, what="server-side story (a KoboldAI United feature)"),
    "use_authors_note": Rule(off=False, what="server-side story (a KoboldAI United feature)"),
    "use_world_info": Rule(off=False, what="server-side story (a KoboldAI United feature)"),
    "frmtadsnsp": Rule(off=False, what="output formatting (a KoboldAI Horde feature)"),
    "frmtrmblln": Rule(off=False, what="output formatting (a KoboldAI Horde feature)"),
    "frmtrmspch": Rule(off=False, what="output formatting (a KoboldAI Horde feature)"),
    "frmttriminc": Rule(off=False, what="output formatting (a KoboldAI Horde feature)"),
}

#: KoboldAI's sampler ids (``sampler_order``) in the order taleforge applies them:
#: repetition penalty, temperature, top-k, top-p (min-p right after it, as in KoboldCpp),
#: typical. Top-a (1) and tail-free (2) are absent: taleforge has neither.
TALEFORGE_ORDER = (6, 5, 0, 4, 3)
SAMPLER_NAMES = {
    0: "top_k",
    1: "top_a",
    2: "tfs",
    3: "typical",
    4: "top_p",
    5: "temperature",
    6: "rep_pen",
}


@dataclass(frozen=True)
class KoboldRequest:
    """A KoboldAI generation request in taleforge's terms."""

    prompt: str
    memory: str
    sampling: dict[str, Any]  # SamplingParams fields to set (the rest: the server's)
    params: SamplingParams  # the validated result, the server's base with ``sampling``
    warnings: tuple[str, ...]
    genkey: str
    max_context_length: int | None


def translate_request(
    body: Any,
    *,
    base: SamplingParams,
    window: int,
    limit: int,
    stream: bool = False,
    params_model: type[SamplingParams] = SamplingParams,
) -> KoboldRequest:
    """Translate a KoboldAI ``/api/v1/generate`` body.

    Args:
        body: The decoded JSON body.
        base: The server's sampling parameters (what a field not sent stays at).
        window: The model's context window in tokens.
        limit: The most new tokens one request may ask for (``serve.max_new_tokens``).
        stream: Whether the answer is streamed (one story only).
        params_model: The sampling model to validate with (tests pass a richer one).

    Raises:
        KoboldRequestError: A field has a value taleforge refuses; the message names it.
    """
    if not isinstance(body, Mapping):
        raise KoboldRequestError("send a JSON object with at least a 'prompt'", 400)
    _check_finite(body)
    prompt, memory = _text(body, "prompt", required=True), _text(body, "memory")
    genkey = body.get("genkey") or ""
    if not isinstance(genkey, str):
        raise KoboldRequestError("'genkey' must be a string")
    sampling: dict[str, Any] = {}
    warnings: list[str] = []
    for name, value in body.items():
        rule = FIELDS.get(name)
        if rule is not None and value is None:
            continue  # JSON null: not sent
        if rule is None:
            shown = (name if len(name) <= 60 else name[:57] + "...") or '""'
            warnings.append(f"{shown} ignored: not a KoboldAI field taleforge knows{_hint(name)}")
        elif rule.target in params_model.model_fields:
            sampling[rule.target] = value
        elif not rule.handled and not _changes_nothing(name, rule, body):
            yet = "" if rule.target is None else " yet"
            warnings.append(f"{name}={_show(value)} ignored: taleforge has no {rule.what}{yet}")
    _seed_and_stops(body, sampling)
    if stream and _number(sampling.get("num_stories", 1), "n") > 1:
        warnings.append(f"n={_show(body['n'])} ignored: a stream carries one story")
        sampling["num_stories"] = 1
    params = _validate(base, sampling, params_model)
    if _flag(body, "use_default_badwordsids"):
        sampling["min_new_tokens"] = params.max_new_tokens
        params = _validate(base, sampling, params_model)
    if params.max_new_tokens > limit:
        raise KoboldRequestError(
            f"'max_length' {params.max_new_tokens} is over this server's limit of {limit} "
            "(ask for fewer tokens, or start the server with a larger --serve.max-new-tokens)"
        )
    warnings += _repetition_warnings(body, params, window)
    if "sampler_order" in body:
        warnings += _order_warnings(body["sampler_order"], params, body)
    context = body.get("max_context_length")
    if context is not None:
        context = int(_number(context, "max_context_length"))
        if context <= params.max_new_tokens:
            raise KoboldRequestError(
                f"'max_context_length' ({context}) leaves no room for the prompt: make it "
                f"larger than 'max_length' ({params.max_new_tokens})"
            )
    return KoboldRequest(prompt, memory, sampling, params, tuple(warnings), genkey, context)


def fit_prompt(prompt: str, tokenizer: Any, budget: int) -> str:
    """The end of ``prompt`` that fits in ``budget`` tokens (all of it when it fits).

    KoboldCpp cuts a prompt longer than ``max_context_length - max_length`` tokens from the
    start; so does this, at a token boundary.
    """
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if len(ids) <= budget:
        return prompt
    # A cut inside a multi-byte character decodes to U+FFFD: drop that partial character.
    return str(tokenizer.decode(ids[len(ids) - max(budget, 0) :])).lstrip("\ufffd")


# -- the rules ------------------------------------------------------------------------------


def _seed_and_stops(body: Mapping[str, Any], sampling: dict[str, Any]) -> None:
    seed = sampling.get("seed")
    if seed is not None and _number(seed, "sampler_seed") < 0:
        del sampling["seed"]  # KoboldCpp's -1: a fresh seed
    if _flag(body, "singleline"):
        stops = sampling.get("stop", [])
        stops = [stops] if isinstance(stops, str) else list(stops)
        sampling["stop"] = [*stops, "\n"]


def _repetition_warnings(body: Mapping[str, Any], params: SamplingParams, window: int) -> list[str]:
    """KoboldCpp penalizes the last ``rep_pen_range`` tokens, the older half of them by
    ``rep_pen_slope``; taleforge penalizes every token in its context alike."""
    if params.repetition_penalty == 1.0:
        return []
    warnings = []
    span = body.get("rep_pen_range")
    span = None if span is None else int(_number(span, "rep_pen_range"))
    # 0 is the whole context in KoboldAI United's definition (KoboldCpp applies none then).
    if span is not None and 0 < span < window:
        warnings.append(
            f"rep_pen_range={span} ignored: taleforge penalizes repeats over the whole context "
            f"window ({window} tokens)"
        )
    slope = body.get("rep_pen_slope")
    if slope is not None and span != 0 and _number(slope, "rep_pen_slope") != 1:
        warnings.append(
            f"rep_pen_slope={_show(slope)} ignored: taleforge penalizes older and newer repeats "
            "alike"
        )
    return warnings


def _order_warnings(order: Any, params: SamplingParams, body: Mapping[str, Any]) -> list[str]:
    """A warning when following ``order`` would sample differently than taleforge does.

    Only the samplers this request switches on count; temperature commutes with top-k
    (it keeps the ranking) and with the repetition penalty (both scale logits) unless the
    pick is greedy or a presence penalty subtracts.
    """
    if not isinstance(order, list) or not all(type(i) is int and 0 <= i <= 6 for i in order):
        raise KoboldRequestError("'sampler_order' must be a list of sampler ids from 0 to 6")
    greedy = params.temperature == 0.0
    presence = _number(body.get("presence_penalty") or 0, "presence_penalty")
    active = {
        6: params.repetition_penalty != 1.0 or presence != 0,
        5: params.temperature != 1.0,
        # A greedy pick keeps the likeliest token through top-k, top-p and min-p.
        0: params.top_k > 0 and not greedy,
        4: (params.top_p < 1.0 or params.min_p > 0.0) and not greedy,
        3: params.typical_p < 1.0,
    }
    used = [i for i in TALEFORGE_ORDER if active[i]]
    missing = [i for i in used if i not in order and not (greedy and i == 3)]
    commute = set() if greedy else {frozenset({5, 0})}
    if not greedy and presence == 0:
        commute.add(frozenset({5, 6}))
    swapped = [
        (a, b)
        for a, b in itertools.combinations(used, 2)  # a before b in taleforge
        if frozenset({a, b}) not in commute
        and a in order
        and b in order
        and order.index(a) > order.index(b)
    ]
    if not missing and not swapped:
        return []
    names = " → ".join(SAMPLER_NAMES[i] for i in used)
    why = f"leaves out {SAMPLER_NAMES[missing[0]]}" if missing else "orders them otherwise"
    return [f"sampler_order={order} not followed: taleforge applies {names} ({why})"]


# -- helpers --------------------------------------------------------------------------------


def _validate(
    base: SamplingParams, sampling: dict[str, Any], model: type[SamplingParams]
) -> SamplingParams:
    try:
        return model.model_validate({**base.model_dump(), **sampling})
    except ValidationError as exc:
        kobold: dict[str | None, str] = {}
        for name, rule in FIELDS.items():
            kobold.setdefault(rule.target, name)
        kobold["min_new_tokens"] = "use_default_badwordsids"
        parts = []
        for error in exc.errors()[:5]:
            field = str(error["loc"][0]) if error["loc"] else ""
            name = kobold.get(field, field) or "body"
            got = f" (got {_show(error['input'])})" if "input" in error else ""
            parts.append(f"'{name}' {error['msg'].removeprefix('Value error, ')}{got}")
        raise KoboldRequestError("invalid request: " + "; ".join(parts)) from None


def _changes_nothing(name: str, rule: Rule, body: Mapping[str, Any]) -> bool:
    if rule.switch is not None:
        switch = FIELDS[rule.switch]
        return body.get(rule.switch) is None or _equals(body[rule.switch], switch.off)
    return rule.off is not None and _equals(body[name], rule.off)


def _equals(value: Any, off: Any) -> bool:
    if isinstance(off, bool) or not isinstance(off, int | float):
        return bool(value == off)
    try:
        return float(value) == off
    except (TypeError, ValueError, OverflowError):
        return False


def _text(body: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "is required" if value is None else "must be a string"
        raise KoboldRequestError(f"invalid request: '{name}' {what}")
    return clean_text(value)


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise KoboldRequestError(f"invalid request: '{name}' must be true or false")
    return value


def _number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise KoboldRequestError(f"invalid request: '{name}' must be a number")
    return number


def _check_finite(body: Mapping[str, Any]) -> None:
    for name, value in body.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise KoboldRequestError(f"invalid request: '{name}' must be a finite number")


def _hint(name: str) -> str:
    if len(name) > 40:  # no field is that long; and difflib is slow on long strings
        return ""
    close = difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
