"""What a generation returns: stories that record how they were made."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from taleforge.config import SamplingParams

FinishReason = Literal["eos", "stop", "length", "cancelled"]


@dataclass(frozen=True)
class Story:
    """One generated story and everything needed to make it again."""

    #: The finished story as a reader sees it (for ``continue``: the given text plus the new).
    text: str
    #: Only the part the model wrote, post-processed.
    generated_text: str
    prompt: str
    mode: str
    genre: str | None
    #: How the genre was chosen: explicit, auto (detected from the prompt), or none.
    genre_source: str
    model: str
    seed: int
    params: SamplingParams
    prompt_tokens: int
    generated_tokens: int
    finish_reason: FinishReason
    seconds: float
    time_to_first_token: float | None
    #: The inference backend that wrote it (transformers, llama.cpp).
    backend: str = "transformers"
    #: How often the context window slid forward (stories longer than the model's window).
    window_shifts: int = 0
    formatted_prompt: str = field(default="", repr=False)
    #: The generated token ids (before post-processing).
    token_ids: tuple[int, ...] = field(default=(), repr=False)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = self.params.model_dump()
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        return data


@dataclass(frozen=True)
class GenerationResult:
    """All stories of one request."""

    stories: tuple[Story, ...]

    @property
    def text(self) -> str:
        """The first story's text (the usual case of one story)."""
        return self.stories[0].text if self.stories else ""

    def to_dict(self) -> dict[str, Any]:
        return {"stories": [s.to_dict() for s in self.stories]}


@dataclass(frozen=True)
class TokenChoice:
    """One token the model could write next: its text, id and probability."""

    text: str
    token_id: int
    probability: float


@dataclass(frozen=True)
class StreamChunk:
    """A piece of streamed text for story number ``index``."""

    index: int
    text: str
