"""One typed configuration tree, read from TOML presets and dotted command-line overrides.

A config is resolved in four layers, later ones winning::

    defaults (the field defaults below)  <  a TOML preset  <  environment  <  dotted overrides

A preset is a TOML file with one table per section (``[model]``, ``[generate]``,
``[sampling]``); ``configs/`` holds the ones shipped with taleforge, and a preset may be named
by its file stem (``--config creative``) or by path. Overrides use dotted keys
(``sampling.temperature=0.9`` or ``--sampling.temperature 0.9`` on the command line).
The environment sets any key as ``TALEFORGE_<SECTION>__<KEY>`` (``TALEFORGE_SERVE__PORT=8000``,
``TALEFORGE_MODEL__SPEC=gpt2``) and the preset as ``TALEFORGE_CONFIG``, so a container is
configured without flags; see :func:`env_overrides`.
Every model is frozen and rejects unknown keys, so a typo is an error, never a silent default.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taleforge.errors import ConfigError

Mode = Literal["story", "writing-prompt", "continue", "poem", "dialogue", "chat"]
MODES: tuple[str, ...] = ("story", "writing-prompt", "continue", "poem", "dialogue", "chat")

#: Where ``--config NAME`` looks for ``NAME.toml`` after the current directory.
PRESET_DIRS: tuple[Path, ...] = (Path("configs"), Path(__file__).resolve().parents[2] / "configs")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class ModelConfig(_Section):
    """Which model to load and how."""

    spec: str = Field(
        "taleforge-stories",
        description="Model spec: 'taleforge-stories' (the default story model), "
        "'smollm2-135m' (the embedded base model), a Hugging Face id such as 'gpt2', "
        "a local model directory, or a LoRA adapter directory.",
        min_length=1,
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype; float32 is the fastest on most CPUs."
    )
    trust_remote_code: bool = Field(
        False, description="Allow hub models that ship their own Python code (only if trusted)."
    )
    backend: Literal["auto", "transformers", "llama.cpp", "remote"] = Field(
        "auto",
        description="Inference backend: llama.cpp (a GGUF export, about 5x faster on a "
        "CPU, made once and cached), transformers (any model), auto: llama.cpp when it is "
        "installed and the model exports, else transformers (the reason is logged), or remote: "
        "an OpenAI-compatible server at remote_url (vLLM, TGI, another taleforge).",
    )
    remote_url: str | None = Field(
        None,
        description="Base URL of the OpenAI-compatible API the remote backend writes with, e.g. "
        "http://gpu-box:8000/v1 (its API key comes from $TALEFORGE_REMOTE_API_KEY).",
    )
    remote_model: str | None = Field(
        None,
        description="Model name the remote server knows the model by (GET /v1/models lists "
        "them); default: spec.",
    )
    quantization: Literal["q8_0", "q5_1", "q4_1", "f16", "f32"] = Field(
        "q8_0",
        description="Weights of the GGUF export the llama.cpp backend runs: q8_0 keeps "
        "perplexity within 1 percent of float32; q5_1 and q4_1 are smaller and faster (and "
        "lose more: see docs/backends.md).",
    )
    parallel: int = Field(
        8,
        ge=1,
        le=64,
        description="Stories the server writes at once per model on llama.cpp, batched in one "
        "forward pass (each costs KV-cache memory); transformers writes one at a time.",
    )
    threads: int = Field(
        0, ge=0, le=256, description="CPU threads for llama.cpp; 0 = one per core."
    )
    context_shift: bool = Field(
        True,
        description="llama.cpp on rotary models (SmolLM2, Llama): when a story's window "
        "slides or a Continue repeats most of the last context, move the cached keys instead "
        "of reading the text again (a Continue on a long manuscript reads only its new end). "
        "Moved keys keep a trace of the text that left the window, so after its window moves "
        "a story can differ from one read afresh; false: always read exactly the window.",
    )

    @field_validator("remote_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(
                f"remote_url '{value}' is not an http(s) URL: give the API's base URL, "
                "e.g. http://gpu-box:8000/v1"
            )
        return value.strip().rstrip("/") if value else None

    @model_validator(mode="after")
    def _remote_needs_url(self) -> ModelConfig:
        if self.backend == "remote" and not self.remote_url:
            raise ValueError(
                "backend 'remote' needs model.remote_url: the base URL of an OpenAI-compatible "
                "API (--model.remote-url http://gpu-box:8000/v1)"
            )
        return self


class GenerateConfig(_Section):
    """What to write: mode, genre and the default prompt."""

    mode: Mode = Field(
        "story", description="story, writing-prompt, continue, poem, dialogue, chat."
    )
    genre: str = Field(
        "auto",
        description="Genre (fantasy, sci-fi, horror, adventure, mystery, romance, comedy), "
        "'auto' to detect it from the prompt, or 'none'.",
    )
    prompt: str = Field(
        "A lighthouse keeper finds a door at the bottom of the sea.",
        description="Prompt used when none is given on the command line.",
    )

    @field_validator("genre")
    @classmethod
    def _known_genre(cls, value: str) -> str:
        from taleforge.genres import normalize_genre

        if value.strip().lower() in ("auto", "none"):
            return value.strip().lower()
        return normalize_genre(value)

    context_length: int | None = Field(
        None,
        ge=16,
        description="Tokens of context the model may see; default: the model's own window. "
        "Longer stories slide a window that keeps the prompt in view.",
    )


def _slider(step: float, most: float | None = None) -> dict[str, Any]:
    """How the studio's slider for a field moves: its step, and its top end where the bound
    is far beyond what anyone sets by hand (top-k up to 100,000)."""
    return {"slider": {"step": step, "max": most}}


#: Token ids are not negative; a bias is bounded as OpenAI bounds logit_bias.
_TokenId = Annotated[int, Field(ge=0)]
_Bias = Annotated[float, Field(ge=-100.0, le=100.0, allow_inf_nan=False)]
#: llama.cpp truncates longer DRY sequence breakers; taleforge refuses them.
MAX_SEQUENCE_BREAKER_CHARS = 40


def _json_value(text: str, kind: type) -> Any:
    """``text`` parsed as JSON, which must give a ``kind`` (list or dict); errors show how."""
    what, example = ("array", '["\\n", ":"]') if kind is list else ("object", '{"suddenly": -5}')
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, kind):
        raise ValueError(f"{text!r} is not a JSON {what}: write it as e.g. {example}")
    return value


class SamplingParams(_Section):
    """Decoding controls. The same seed and parameters give the same story.

    The one place a sampling parameter is named, with its default, bounds and help: the
    config's ``[sampling]``, the API request bodies (:func:`optional_fields`), the studio's
    sliders (:func:`slider_range`) and its presets (:func:`sampling_preset`) all derive from it.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    temperature: float = Field(
        0.8,
        ge=0.0,
        le=5.0,
        description="Randomness; 0 = greedy (always the likeliest token).",
        json_schema_extra=_slider(0.05, 2.0),
    )
    top_k: int = Field(
        50,
        ge=0,
        le=100_000,
        description="Sample among the k likeliest; 0 = off.",
        json_schema_extra=_slider(1, 200),
    )
    top_p: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling mass; 1 = off.",
        json_schema_extra=_slider(0.01),
    )
    typical_p: float = Field(1.0, gt=0.0, le=1.0, description="Locally typical sampling; 1 = off.")
    min_p: float = Field(
        0.0, ge=0.0, lt=1.0, description="Drop tokens below min_p x the top probability; 0 = off."
    )
    repetition_penalty: float = Field(
        1.1,
        ge=0.5,
        le=3.0,
        description="Penalty for repeating tokens; 1 = off, 1.1-1.3 typical.",
        json_schema_extra=_slider(0.01, 2.0),
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, le=20, description="Never repeat an n-gram of this size; 0 = off."
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        allow_inf_nan=False,
        description="Subtract this from the logit of every token the story has already "
        "generated (OpenAI's presence_penalty); 0 = off, -2 to 2.",
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        allow_inf_nan=False,
        description="Subtract this times the number of times the story has generated a token "
        "from its logit (OpenAI's frequency_penalty); 0 = off, -2 to 2.",
    )
    dry_multiplier: float = Field(
        0.0,
        ge=0.0,
        le=5.0,
        allow_inf_nan=False,
        description="DRY (Don't Repeat Yourself): penalty for the token that would extend a "
        "repeated passage, multiplier x base^(length - allowed length); 0 = off, 0.8 typical.",
    )
    dry_base: float = Field(
        1.75,
        ge=1.0,
        le=4.0,
        allow_inf_nan=False,
        description="DRY: how fast the penalty grows with the length of the repetition.",
    )
    dry_allowed_length: int = Field(
        2, ge=1, le=20, description="DRY: repeated passages up to this many tokens are free."
    )
    dry_penalty_last_n: int = Field(
        -1,
        ge=-1,
        le=1_048_576,
        description="DRY: how many recent tokens are searched for repetitions; -1 = the whole "
        "context, 0 = off (llama.cpp's convention).",
    )
    dry_sequence_breakers: tuple[str, ...] = Field(
        ("\n", ":", '"', "*"),
        description="DRY: strings a repetition may not extend across (a token containing one "
        "ends it), so names and dialogue markup may repeat.",
    )
    xtc_threshold: float = Field(
        0.1,
        gt=0.0,
        le=0.5,
        allow_inf_nan=False,
        description="XTC (Exclude Top Choices): tokens at least this probable are the top "
        "choices; all but the least probable of them are removed (above 0.5 it never acts).",
    )
    xtc_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="XTC: the chance, at each token, that the top choices are removed; 0 = off.",
    )
    logit_bias: dict[_TokenId, _Bias] = Field(
        default_factory=dict,
        description="Add to the logits of token ids (OpenAI's logit_bias), e.g. "
        '{"50256": -100}; -100 bans a token, 100 all but forces it.',
    )
    word_bias: dict[str, _Bias] = Field(
        default_factory=dict,
        description="Add to the logit of a word's first token, with and without a leading "
        'space (the model\'s tokenizer decides the token), e.g. {"suddenly": -5}; -100 to 100.',
    )
    max_new_tokens: int = Field(200, ge=1, le=16_384, description="Most tokens to generate.")
    min_new_tokens: int = Field(0, ge=0, le=16_384, description="Fewest tokens before stopping.")
    stop: tuple[str, ...] = Field(
        (),
        max_length=8,
        description="Stop sequences (at most 8): the story ends before the first one that appears.",
    )
    num_stories: int = Field(1, ge=1, le=16, description="How many stories to write.")
    seed: int | None = Field(
        None, ge=0, lt=2**32, description="Random seed; default: a fresh one, recorded."
    )
    trim_to_sentence: bool = Field(
        True, description="Cut an unfinished last sentence when the length limit is hit."
    )
    banned_phrases: tuple[str, ...] = Field(
        (),
        max_length=2000,
        description="Phrases never written (whole words, any case): where one appears, the "
        "story is rewound to where it began and written on differently.",
    )
    ban_cliches: bool = Field(
        False,
        description="Also ban taleforge's list of the story model's clichés "
        "(taleforge/assets/cliches.txt; see docs/decoding.md).",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in value):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @field_validator("dry_sequence_breakers", mode="before")
    @classmethod
    def _breakers_as_tuple(cls, value: Any) -> Any:
        # text-generation-webui and SillyTavern send the list as one JSON string
        if isinstance(value, str):
            return _json_value(value, list) if value.lstrip().startswith("[") else (value,)
        return value

    @field_validator("dry_sequence_breakers")
    @classmethod
    def _breakers_short(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for breaker in value:
            if not breaker or len(breaker) > MAX_SEQUENCE_BREAKER_CHARS:
                raise ValueError(
                    f"sequence breaker {breaker!r} must be 1 to {MAX_SEQUENCE_BREAKER_CHARS} "
                    "characters long: shorten it or leave it out"
                )
        return value

    @field_validator("logit_bias", "word_bias", mode="before")
    @classmethod
    def _bias_from_json(cls, value: Any) -> Any:
        # the command line and the environment give a JSON object as text
        return _json_value(value, dict) if isinstance(value, str) else value

    @field_validator("word_bias")
    @classmethod
    def _words_not_blank(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not word.strip() for word in value):
            raise ValueError('word_bias needs words, not blank keys: e.g. {"suddenly": -5}')
        return value

    @field_validator("banned_phrases", mode="before")
    @classmethod
    def _phrases_as_tuple(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("banned_phrases")
    @classmethod
    def _phrases_have_words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not phrase.strip() for phrase in value):
            raise ValueError("banned phrases must not be empty: remove the empty entry")
        if too_long := [p[:40] for p in value if len(p) > 200]:
            raise ValueError(f"banned phrases are at most 200 characters: shorten {too_long}")
        return value

    @model_validator(mode="after")
    def _min_below_max(self) -> SamplingParams:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) is larger than max_new_tokens "
                f"({self.max_new_tokens}); lower min_new_tokens or raise max_new_tokens"
            )
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


#: What ``--data.train-repeat`` weights: a record kind, or "short" for a whole short piece.
TrainRepeatKey = Literal["short", "story", "poem", "dialogue", "fable"]
DataFormat = Literal["auto", "csv", "tsv", "txt", "jsonl", "json", "writingprompts", "folder", "hf"]


class DataConfig(_Section):
    """Data preparation: reading, cleaning, genres, templates, tokenization and splits."""

    input: str = Field(
        "data/sample/stories.csv",
        description="Dataset: a file, a folder of .txt/.md stories, WritingPrompts "
        "*.wp_source/*.wp_target, a saved Hugging Face dataset directory, or hf:NAME.",
        min_length=1,
    )
    output: str | None = Field(None, description="Output directory; default runs/data/<name>.")
    format: DataFormat = Field("auto", description="Input format; auto detects it.")
    encoding: str | None = Field(None, description="Text encoding; default: detected.")
    encoding_errors: Literal["strict", "replace"] = Field(
        "strict", description="On undecodable bytes: stop with an error, or replace them."
    )
    text_column: str | None = Field(None, description="Story column (CSV/JSON); default: guess.")
    prompt_column: str | None = Field(None, description="Prompt column; default: guess.")
    genre_column: str | None = Field(None, description="Genre column; default: guess.")
    title_column: str | None = Field(None, description="Title column; default: guess.")
    txt_split: Literal["auto", "line", "blank", "eot"] = Field(
        "auto",
        description="Plain text: one story per line, stories between blank lines, or "
        "separated by <|endoftext|>; auto picks from the file.",
    )
    max_record_chars: int = Field(
        2_000_000, ge=1000, description="Longest story or line accepted, in characters."
    )
    fix_html: bool = Field(True, description="Strip HTML tags, decode entities.")
    fix_unicode: bool = Field(True, description="Repair mojibake, NFC-normalize Unicode.")
    fix_control_chars: bool = Field(True, description="Remove control characters.")
    fix_whitespace: bool = Field(True, description="Normalize spaces and line breaks.")
    fix_writingprompts: bool = Field(
        True, description="Turn <newline> markers into line breaks and undo WP tokenization."
    )
    min_words: int = Field(20, ge=0, description="Drop stories shorter than this (0 = off).")
    max_words: int = Field(20_000, ge=0, description="Drop stories longer than this (0 = off).")
    min_letter_ratio: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Drop texts whose share of letters among visible characters is lower "
        "(tables, code, noise); 0 = off.",
    )
    dedup_exact: bool = Field(True, description="Drop exact duplicates (after cleaning).")
    dedup_near: bool = Field(True, description="Drop near duplicates (MinHash).")
    near_dup_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Jaccard similarity above which texts are duplicates."
    )
    max_parts_per_work: int = Field(
        100,
        ge=1,
        description="Consecutive records with the same group (source) column are the parts "
        "of one work, kept in one split; a longer run is a collection of separate pieces.",
    )
    train_max_parts: int = Field(
        0, ge=0, description="Train on at most the first N parts of each work (0 = all)."
    )
    train_truncate_words: int = Field(
        0,
        ge=0,
        description="Cut training texts longer than this many words after a paragraph (the "
        "rest is not trained on; 0 = off). Validation and test keep whole texts.",
    )
    train_repeat: dict[TrainRepeatKey, int] = Field(
        default_factory=dict,
        description="Repeat training examples of a kind this many times, to weight the "
        "mixture a short run sees: a record kind (story, poem, dialogue, fable), or 'short' "
        "for a whole piece short enough to be asked for as short (it counts before its "
        "kind), e.g. "
        "{short = 2, dialogue = 2}.",
    )
    genre_from: Literal["auto", "column", "tag", "classifier", "none"] = Field(
        "auto",
        description="Where genres come from; auto = column, else a leading [TAG], else the "
        "classifier.",
    )
    extra_genres: tuple[str, ...] = Field(
        (), description="Genres accepted beyond the built-in set (e.g. western)."
    )
    no_genre_labels: tuple[str, ...] = Field(
        (),
        description="Genre-column labels that mean 'none of the genres' (e.g. literary, "
        "drama): such records get no genre, and teach the classifier what 'none' looks like.",
    )
    genre_classifier: Literal["sample", "dataset"] = Field(
        "sample",
        description="Classifier for records without a genre: trained on the sample dataset, "
        "or on this dataset's own labelled records plus the sample dataset and "
        "keyword-seeded records (better for a large dataset in another style).",
    )
    genre_seed_genres: tuple[str, ...] = Field(
        (),
        description="With the dataset classifier: genres that unlabelled stories dense in "
        "that genre's keywords teach it (for a genre no labelled record has).",
    )
    genre_min_confidence: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="With the dataset classifier: below this probability a record gets no genre.",
    )
    genre_check: str | None = Field(
        None,
        description='A JSONL file of hand-checked genres ({"line": N, "genre": ...} per '
        "record of a JSONL input; genre 'none' for none of them): their agreement with the "
        "genres given is reported in the data card.",
    )
    template: Literal["plain", "genre_tagged", "writing_prompt", "chat"] = Field(
        "writing_prompt",
        description="plain story; [GENRE] story; [GENRE] [WP] prompt [RESPONSE] story "
        "(records without a prompt fall back to genre_tagged); or chat: the model's chat "
        "template with the request the studio makes (form, genre, length, premise).",
    )
    genre_tags: bool = Field(True, description="Put the [GENRE] tag in front of each text.")
    add_special_tokens: bool = Field(
        True, description="Add [WP], [RESPONSE] and genre tags to the tokenizer as tokens."
    )
    loss_on_story_only: bool = Field(
        False, description="Mask the prompt part out of the loss (labels = -100)."
    )
    tokenizer: str | None = Field(None, description="Tokenizer spec; default: model.spec.")
    packing: Literal["pack", "pad"] = Field(
        "pack",
        description="pack: concatenate and cut into blocks; pad: one text per row, "
        "truncated and padded with EOS (the seed recipe).",
    )
    block_size: int = Field(256, ge=16, le=32_768, description="Tokens per packed block.")
    max_length: int = Field(128, ge=8, le=32_768, description="Row length when packing = pad.")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share for validation.")
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share for test.")
    split_salt: str = Field(
        "taleforge", description="Salt of the content hash that assigns splits."
    )
    num_proc: int = Field(2, ge=1, le=64, description="Processes for tokenization.")


class TrainConfig(_Section):
    """Fine-tuning: the dozen knobs that matter, mapped in one place to TrainingArguments."""

    data: str | None = Field(
        None,
        description="A prepared dataset directory; default: prepare [data] first (cached).",
    )
    output_dir: str | None = Field(None, description="Run directory; default runs/<run_name>.")
    run_name: str = Field("finetune", min_length=1, description="Name of the run.")
    method: Literal["lora", "full"] = Field(
        "lora", description="LoRA adapters (small, CPU-friendly) or full fine-tuning."
    )
    lora_r: int = Field(8, ge=1, le=512, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, le=4096, description="LoRA scaling (alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on LoRA inputs.")
    lora_target_modules: tuple[str, ...] = Field(
        (), description="Modules to adapt; default: peft's choice for the architecture."
    )
    merge_lora: bool = Field(False, description="Merge the adapter into full weights at the end.")
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of steps to warm up.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    batch_size: int = Field(8, ge=1, le=4096, description="Rows (blocks) per device step.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Steps per update.")
    epochs: float = Field(3.0, gt=0.0, le=1000.0, description="Passes over the training set.")
    max_steps: int = Field(0, ge=0, description="Stop after this many updates; 0 = use epochs.")
    eval_steps: int = Field(25, ge=1, description="Evaluate every this many updates.")
    save_steps: int = Field(25, ge=1, description="Checkpoint every this many updates.")
    save_total_limit: int = Field(2, ge=1, le=100, description="Complete checkpoints kept.")
    logging_steps: int = Field(5, ge=1, description="Log the training loss this often.")
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after this many evaluations without improvement; 0 = off."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0.0, description="Smallest drop in validation loss that counts as improvement."
    )
    seed: int = Field(42, ge=0, lt=2**32, description="Seed for initialization and data order.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="fp32; bf16 mixed precision (Ampere or newer GPUs; also runs on CPUs); "
        "fp16 mixed precision (CUDA GPUs only). Full fine-tunes keep fp32 weights.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: "
        "much less memory for one extra forward pass per step (works with LoRA).",
    )
    streaming: bool = Field(
        False,
        description="Read the training split as a stream from the prepared files instead of "
        "by random access; needs max_steps (a stream has no length). Shuffles in a buffer.",
    )
    shuffle_buffer: int = Field(
        10_000, ge=1, description="With streaming: rows held in memory to shuffle the stream."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    eval_rows: int = Field(
        0,
        ge=0,
        description="Validation and test rows scored during training (the first N; 0 = "
        "all): a large corpus's splits would take longer to score than to train on.",
    )
    tracking: bool = Field(True, description="Track the run in MLflow.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///runs/mlflow.db."
    )
    experiment: str = Field("taleforge", min_length=1, description="MLflow experiment name.")
    register_model: bool = Field(True, description="Register the final model in MLflow.")
    sample_prompts: tuple[str, ...] = Field(
        (
            "A lighthouse keeper finds a door at the bottom of the sea.",
            "The last robot on Earth opens a bakery.",
            "A detective is hired to find a ghost's missing memory.",
        ),
        description="Prompts written at every evaluation to show progress.",
    )
    sample_max_new_tokens: int = Field(60, ge=1, le=2048, description="Length of samples.")

    @model_validator(mode="after")
    def _streams_have_max_steps(self) -> TrainConfig:
        if self.streaming and self.max_steps == 0:
            raise ValueError(
                "streaming needs max_steps: a stream has no length, so epochs cannot be "
                "counted. Set --train.max-steps (one epoch is about training rows / "
                "(batch_size x gradient_accumulation_steps x processes)), or drop "
                "--train.streaming"
            )
        return self

    @model_validator(mode="after")
    def _checkpoints_follow_evaluations(self) -> TrainConfig:
        if self.early_stopping_patience and self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps "
                f"({self.eval_steps}) so the best model can be restored: e.g. set both to "
                f"{self.eval_steps}"
            )
        return self


_HOST_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ORIGIN = re.compile(r"^https?://(?:[a-z0-9.-]+|\[[0-9a-f:]+\])(?::[0-9]{1,5})?$")


def _is_host_name(value: str) -> bool:
    """A DNS name or an IP address; a leading dot (every subdomain) is allowed."""
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    labels = value.lower().removeprefix(".").removesuffix(".").split(".")
    return len(value) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


class ServeConfig(_Section):
    """The web app and HTTP API (``taleforge serve``)."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to bind.")
    port: int = Field(7860, ge=0, le=65_535, description="Port (0 = any free port).")
    models: tuple[str, ...] = Field(
        (),
        description="Model specs offered besides the default, the embedded model and the "
        "trained runs found in runs_dir.",
    )
    runs_dir: str = Field("runs", description="Where trained runs are looked for.")
    max_loaded_models: int = Field(2, ge=1, le=32, description="Models kept in memory at once.")
    max_waiting: int = Field(
        8, ge=0, le=10_000, description="Requests queued per model before 'busy' is answered."
    )
    max_prompt_chars: int = Field(
        20_000, ge=100, le=10_000_000, description="Longest prompt or story text accepted."
    )
    max_new_tokens: int = Field(
        1024, ge=1, le=16_384, description="Most tokens one request may ask for."
    )
    max_story_chars: int = Field(
        2_000_000,
        ge=1_000,
        le=50_000_000,
        description="Longest manuscript the library saves and the studio continues (a novel "
        "fits in 2 M characters); the model itself reads only its window's end of it.",
    )
    share: bool = Field(False, description="Open a public gradio.live share link.")
    ssl_certfile: str | None = Field(None, description="TLS certificate (PEM) for HTTPS.")
    ssl_keyfile: str | None = Field(None, description="TLS private key (PEM) for HTTPS.")
    auth: str | None = Field(
        None, description="'user:password' to require HTTP basic auth in front of everything."
    )
    accounts: bool = Field(
        False,
        description="Require writers to sign up and log in (always on when host is not local); "
        "off: one anonymous local writer.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database (default: $TALEFORGE_DATABASE_URL, else "
        "a SQLite file in ~/.local/share/taleforge).",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL shared by several server processes for the generation cache "
        "and rate limits (default: $TALEFORGE_REDIS_URL, else in-process).",
    )
    cache_size: int = Field(
        512, ge=0, le=1_000_000, description="Seeded generations kept in memory (0 = no cache)."
    )
    rate_limit_generate: str = Field(
        "30/minute", description="Generations per account and per IP address (limits syntax)."
    )
    rate_limit_login: str = Field(
        "10/minute", description="Log-in attempts per IP address and per user name."
    )
    max_body_bytes: int = Field(
        12_000_000,
        ge=1_000,
        le=1_000_000_000,
        description="Largest request body accepted (room for a manuscript of max_story_chars "
        "in JSON).",
    )
    undo_seconds: int = Field(
        600, ge=0, le=30 * 86_400, description="How long a deleted story can be restored."
    )

    allowed_hosts: tuple[str, ...] = Field(
        (),
        description="Host names (or addresses) the server answers to besides the bound "
        "address, localhost and the loopback range, e.g. stories.example.org; a leading dot "
        "allows every subdomain (.example.org). Requests naming any other Host get 400, which "
        "stops DNS-rebinding pages.",
    )
    cors_origins: tuple[str, ...] = Field(
        (),
        description="Origins (scheme://host[:port]) whose pages may call the API with the "
        "writer's cookies; other cross-origin requests get 403 (default: none).",
    )
    forwarded_allow_ips: tuple[str, ...] = Field(
        (),
        description="Addresses or networks (CIDR) of the reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed, e.g. 127.0.0.1 for nginx on the "
        "same machine; '*' believes every peer (only when nothing but the proxy can reach the "
        "server). Default: none, so no client can claim another address.",
    )
    session_idle_seconds: int = Field(
        3 * 86_400,
        ge=60,
        le=90 * 86_400,
        description="A log-in session unused this long ends (the writer logs in again).",
    )
    session_max_seconds: int = Field(
        14 * 86_400,
        ge=60,
        le=365 * 86_400,
        description="A log-in session ends this long after log-in, however much it is used.",
    )
    export_max_age_seconds: int = Field(
        3_600,
        ge=60,
        le=7 * 86_400,
        description="Files exported from the studio are deleted this long after they were made.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not _is_host_name(value):
                raise ValueError(
                    f"{value!r} is not a host name: give the name alone, without scheme, port "
                    "or path (stories.example.org, 192.168.1.5, or .example.org for every "
                    "subdomain)"
                )
        return tuple(value.lower().rstrip(".") for value in values)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not _ORIGIN.match(value.lower()):
                raise ValueError(
                    f"{value!r} is not an origin: write scheme://host[:port] with no path, "
                    "e.g. https://editor.example.org"
                )
        return tuple(value.lower() for value in values)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        addresses = tuple(part.strip() for value in values for part in value.split(","))
        for address in addresses:
            if address == "*":
                continue
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(
                    f"{address!r} is not an IP address or network: give the proxy's address, "
                    "e.g. 127.0.0.1 or 10.0.0.0/8 (or '*' for every peer)"
                ) from None
        return addresses

    @field_validator("rate_limit_generate", "rate_limit_login")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate limit: write e.g. '30/minute' or '5/second;100/hour'"
            ) from None
        return value

    @field_validator("auth")
    @classmethod
    def _user_and_password(cls, value: str | None) -> str | None:
        if value is not None and (":" not in value or value.startswith(":")):
            raise ValueError("give it as user:password, e.g. --auth writer:s3cret")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServeConfig:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
        if self.session_idle_seconds > self.session_max_seconds:
            raise ValueError(
                f"session_idle_seconds ({self.session_idle_seconds}) is longer than "
                f"session_max_seconds ({self.session_max_seconds}): make it shorter"
            )
        return self


#: The metric groups of ``taleforge evaluate``, declared once (evaluate.dataset derives its list).
MetricGroup = Literal[
    "perplexity", "diversity", "repetition", "references", "relevance", "genre", "length", "cliche"
]


class EvalConfig(_Section):
    """Evaluation (``taleforge evaluate``): perplexity, generation metrics, reports, sweeps.

    Stories are written with the [sampling] settings (num_stories per prompt); without a
    sampling seed they start from seed 0, so a report can be reproduced.
    """

    models: tuple[str, ...] = Field(
        (), description="Models to compare side by side (specs); default: model.spec."
    )
    data: str | None = Field(
        None,
        description="A prepared dataset directory, or a file of stories (JSONL, CSV, text; "
        ".gz too) scored as given: every record, no cleaning, no split; [data] column and "
        "format settings apply. Default: prepare [data] (cached).",
    )
    split: Literal["test", "validation", "train"] = Field(
        "test",
        description="Split of a prepared dataset whose stories are scored and whose prompts "
        "are written for (a file is scored whole).",
    )
    prompts: str = Field(
        "dataset",
        min_length=1,
        description="'dataset' (the split's prompts) or a text file with one prompt per line.",
    )
    max_prompts: int = Field(0, ge=0, description="Use at most this many prompts; 0 = all.")
    max_texts: int = Field(
        0,
        ge=0,
        description="Score the perplexity of at most this many texts, evenly spread over the "
        "split or file; 0 = all.",
    )
    metrics: tuple[MetricGroup, ...] = Field(
        (),
        description="Metric groups to compute: perplexity, diversity, repetition, references "
        "(BLEU/chrF), relevance, genre, length, cliche; default: all that apply.",
    )
    context: Literal["model", "dataset", "none"] = Field(
        "model",
        description="Context of a scored story: its prompt as the model is asked (model), the "
        "data template's prefix (dataset), or none.",
    )
    window: int = Field(512, ge=16, description="Perplexity window, tokens (at most the model's).")
    stride: int = Field(256, ge=1, description="Tokens the perplexity window moves by.")
    ranking_prompts: int = Field(
        10, ge=2, le=100, description="Prompt ranking: the true prompt among this many."
    )
    ranking_tokens: int = Field(
        128, ge=8, description="Prompt ranking scores this many first tokens of each story."
    )
    batch_tokens: int = Field(2048, ge=64, description="Most tokens per scoring forward pass.")
    cliche_threshold: float = Field(
        1.5,
        ge=0.0,
        description="Cliché score: smallest log-odds ratio of a phrase in the stories over the "
        "human texts (1.5: about 4.5 times the odds).",
    )
    sweep: tuple[str, ...] = Field(
        (),
        description="Decoding sweep items such as temperature=0.7,0.9,1.1; every combination "
        "is evaluated.",
    )
    name: str = Field("eval", min_length=1, description="Name of the report.")
    output_dir: str | None = Field(
        None, description="Report directory; default runs/evaluate/<name>."
    )
    tracking: bool = Field(True, description="Log the report to MLflow.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///runs/mlflow.db."
    )
    experiment: str = Field(
        "taleforge-evaluate", min_length=1, description="MLflow experiment name."
    )
    ratings: str = Field(
        "runs/ratings.jsonl", min_length=1, description="Human ratings file (taleforge rate)."
    )

    @model_validator(mode="after")
    def _stride_within_window(self) -> EvalConfig:
        if self.stride > self.window:
            raise ValueError(
                f"stride ({self.stride}) is larger than window ({self.window}): tokens would "
                "be skipped; lower --evaluate.stride"
            )
        return self


class TaleforgeConfig(_Section):
    """The whole configuration tree."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Model selection.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="What to write.")
    sampling: SamplingParams = Field(default_factory=SamplingParams, description="Decoding.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data preparation.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Web app and API.")
    evaluate: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")


def describe_validation_error(
    error: ValidationError, flags: Mapping[str, str] | None = None
) -> str:
    """Turn a pydantic error into lines that name the setting and how to change it.

    Args:
        error: The validation error.
        flags: Optional map from dotted key to the command-line flag that sets it.
    """
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown setting{_did_you_mean(item['loc'])}"
        elif "input" in item and not isinstance(item["input"], dict):
            message = f"{message} (got {item['input']!r})"
        hint = f" (set with {flags[key]})" if flags and key in flags else ""
        lines.append(f"{key or 'config'}: {message}{hint}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] = TaleforgeConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return ""
        model = field.annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def find_preset(name_or_path: str | Path) -> Path:
    """Resolve ``--config`` to a TOML file: a path, or the stem of a file in ``configs/``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for directory in PRESET_DIRS:
        candidate = directory / f"{path.name}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in PRESET_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(
        f"config preset '{name_or_path}' not found: give a path to a TOML file or one of: "
        + (", ".join(known) or "(no presets found)")
    )


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML preset, with a message naming the file and line on a syntax error."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. Fix the file or pick another.") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``key='a.b'``; dashes in keys become underscores."""
    parts = [p.replace("-", "_") for p in key.split(".")]
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, str]:
    """Split ``section.key=value`` into its key and (string) value."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    return key.strip(), value


#: The variable that names a preset when ``--config`` is not given.
ENV_PRESET = "TALEFORGE_CONFIG"
#: ``TALEFORGE_<SECTION>__<KEY>``: only names with the double underscore are settings; the
#: plain ``TALEFORGE_DATABASE_URL``, ``TALEFORGE_SECRET_KEY``, ... are read where they are used.
ENV_PREFIX, ENV_SEPARATOR = "TALEFORGE_", "__"


def env_overrides(environ: Mapping[str, str] | None = None) -> list[tuple[str, Any, str]]:
    """Dotted overrides from ``TALEFORGE_<SECTION>__<KEY>`` variables, as (key, value, name).

    Values are strings, validated like the command line's (``TALEFORGE_SERVE__ACCOUNTS=true``,
    ``TALEFORGE_SAMPLING__TOP_P=0.9``); a list setting takes a JSON array
    (``TALEFORGE_SERVE__MODELS='["gpt2", "distilgpt2"]'``) or one item. An empty variable
    counts as unset, as ``${VAR:-}`` in a compose file leaves it.

    Args:
        environ: The variables to read; default ``os.environ``.

    Raises:
        ConfigError: A variable names no setting (the message names it and the likely one).
    """
    environ = os.environ if environ is None else environ
    found: list[tuple[str, Any, str]] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        value = environ[name]
        if value == "":
            continue
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition(ENV_SEPARATOR)
        section_field = TaleforgeConfig.model_fields.get(section)
        if section_field is None:
            raise ConfigError(
                _unknown_variable(name, section, list(TaleforgeConfig.model_fields), key=key)
            )
        model = section_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(key)
        if field is None:
            raise ConfigError(_unknown_variable(name, key, list(model.model_fields), section))
        if get_origin(field.annotation) is tuple:
            value = _env_list(name, value)
        found.append((f"{section}.{key}", value, name))
    return found


def _unknown_variable(
    name: str, part: str, known: list[str], section: str = "", key: str = ""
) -> str:
    close = difflib.get_close_matches(part, known, n=1)
    prefix = f"{ENV_PREFIX}{section.upper()}{ENV_SEPARATOR}" if section else ENV_PREFIX
    suffix = "" if section else f"{ENV_SEPARATOR}{key.upper()}"
    hint = f" (did you mean {prefix}{close[0].upper()}{suffix}?)" if close else ""
    what = f"[{section}] setting" if section else "section"
    return (
        f"environment variable {name}: no {what} '{part}'{hint}. Settings are "
        f"{ENV_PREFIX}<SECTION>{ENV_SEPARATOR}<KEY> with a section of "
        f"{', '.join(TaleforgeConfig.model_fields)}; unset the variable or correct its name"
    )


def _env_list(name: str, value: str) -> Any:
    if not value.lstrip().startswith("["):
        return [value]
    try:
        items = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"environment variable {name}: not a JSON array ({exc.msg}); write a list as "
            '["first", "second"] or a single value without brackets'
        ) from None
    return items


def load_config(
    preset: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    flags: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TaleforgeConfig:
    """Build the config from defaults, a TOML preset, the environment and dotted overrides.

    Args:
        preset: A preset name from ``configs/`` or a path to a TOML file; default
            ``$TALEFORGE_CONFIG`` when set.
        overrides: Dotted keys and values, e.g. ``{"sampling.temperature": 0.9}``.
        flags: Map from dotted key to the CLI flag that sets it, used in error messages.
        environ: Where ``TALEFORGE_CONFIG`` and ``TALEFORGE_<SECTION>__<KEY>`` are read
            (see :func:`env_overrides`); default ``os.environ``, ``{}`` to ignore it.

    Raises:
        ConfigError: The preset cannot be read, a variable or a value is invalid; the
            message says which.
    """
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    if preset is not None:
        tree = read_toml(find_preset(preset))
    elif environ.get(ENV_PRESET):
        try:
            tree = read_toml(find_preset(environ[ENV_PRESET]))
        except ConfigError as exc:
            raise ConfigError(f"environment variable {ENV_PRESET}: {exc}") from None
    hints = dict(flags or {})
    for key, value, name in env_overrides(environ):
        set_dotted(tree, key, value)
        hints[key] = name
    items = list(overrides.items() if isinstance(overrides, Mapping) else overrides)
    for key, value in items:
        set_dotted(tree, key, value)
        # A value given on the command line is the one validated: name its flag.
        normalized = key.replace("-", "_")
        if flags and normalized in flags:
            hints[normalized] = flags[normalized]
        elif normalized in hints and hints[normalized].startswith(ENV_PREFIX):
            del hints[normalized]
    try:
        return TaleforgeConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, hints)) from None


def make_sampling(base: SamplingParams | None = None, **changes: Any) -> SamplingParams:
    """Return ``base`` with ``changes`` applied and validated (unknown names are errors)."""
    data = (base or SamplingParams()).model_dump()
    unknown = sorted(set(changes) - set(SamplingParams.model_fields))
    if unknown:
        hints = [
            f"'{name}'"
            + (
                f" (did you mean '{m[0]}'?)"
                if (m := difflib.get_close_matches(name, list(SamplingParams.model_fields), 1))
                else ""
            )
            for name in unknown
        ]
        raise ConfigError("unknown sampling parameter " + ", ".join(hints))
    data.update(changes)
    try:
        return SamplingParams.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def optional_fields(
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    annotation: Mapping[str, Any] = {},
    rename: Mapping[str, str] = {},
) -> dict[str, Any]:
    """``model``'s fields for :func:`pydantic.create_model`, each optional (None = not given)
    with the same bounds and help text: a request body derived from, never copied from, the
    model that owns the parameters.

    Args:
        model: The owning model (e.g. :class:`SamplingParams`).
        exclude: Fields left out.
        annotation: A different type for some fields (e.g. text cleaned at the edge), still
            carrying the owner's bounds.
        rename: Another name for some fields (e.g. OpenAI's ``max_tokens``).
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        kind = annotation.get(name, info.annotation) | None
        if info.metadata:
            kind = Annotated[(kind, *info.metadata)]
        fields[rename.get(name, name)] = (kind, Field(None, description=info.description))
    return fields


def field_bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """The (lowest, highest) value ``model`` accepts for a numeric field; None = unbounded.
    A strict bound (``gt``/``lt``) is reported as the bound itself."""
    low = high = None
    for item in model.model_fields[name].metadata:
        for attr in ("ge", "gt"):
            if getattr(item, attr, None) is not None:
                low = getattr(item, attr)
        for attr in ("le", "lt"):
            if getattr(item, attr, None) is not None:
                high = getattr(item, attr)
    return low, high


def slider_range(name: str) -> tuple[float, float, float]:
    """(minimum, maximum, step) of the studio's slider for a sampling parameter: its bounds
    in :class:`SamplingParams`, the top end lowered where the field says so, a strict lower
    bound raised by one step."""
    info = SamplingParams.model_fields[name]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    hint: dict[str, Any] = extra.get("slider") or {}  # type: ignore[assignment]
    step = float(hint.get("step") or 0.01)
    low, high = field_bounds(SamplingParams, name)
    strict = any(getattr(item, "gt", None) is not None for item in info.metadata)
    minimum = float(low or 0.0) + (step if strict else 0.0)
    maximum = float(
        hint["max"] if hint.get("max") is not None else high if high is not None else 1.0
    )
    return minimum, maximum, step


def sampling_preset(name: str) -> SamplingParams:
    """The ``[sampling]`` of a preset in ``configs/`` (or a TOML path) over the defaults, as
    ``--config NAME`` would set it."""
    tree = read_toml(find_preset(name))
    try:
        return SamplingParams.model_validate(tree.get("sampling", {}))
    except ValidationError as exc:
        raise ConfigError(f"{name}: {describe_validation_error(exc)}") from None
