"""Story generation: prompt formatting, sampling, streaming, long stories."""

from taleforge.generate.generator import StoryGenerator, StoryRequest, StoryStream
from taleforge.generate.result import GenerationResult, Story, StreamChunk

__all__ = [
    "GenerationResult",
    "Story",
    "StoryGenerator",
    "StoryRequest",
    "StoryStream",
    "StreamChunk",
]
