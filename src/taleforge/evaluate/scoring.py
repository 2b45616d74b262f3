"""From prompts and stories to token sequences a model scores, in the model's own format.

The context of a story is one of:

* ``model``: the prompt formatted the way :class:`~taleforge.StoryGenerator` asks this model
  for a story (a chat instruction for the base model, ``[GENRE] [WP] prompt [RESPONSE]`` for
  a model fine-tuned with that template); what the model sees when it is used;
* ``dataset``: the data step's template prefix, the text the fine-tuned model trained on;
* ``none``: no context, the story alone.
"""

from __future__ import annotations

from typing import Literal

from taleforge.evaluate.perplexity import TokenSequence
from taleforge.generate import StoryGenerator

ContextMode = Literal["model", "dataset", "none"]


def model_context(generator: StoryGenerator, prompt: str, genre: str | None) -> tuple[str, bool]:
    """The text in front of a story written for ``prompt``, and whether it is chat-rendered."""
    request = generator.make_request(prompt, mode="story", genre=genre or "none")
    plan = generator.plan(request)
    return plan.header + plan.opening, plan.chat


def story_context(
    generator: StoryGenerator,
    mode: ContextMode,
    *,
    prompt: str,
    genre: str | None,
    dataset_prefix: str = "",
) -> tuple[str, bool]:
    """The context of a story under ``mode`` (see the module docstring)."""
    if mode == "none":
        return "", False
    if mode == "dataset":
        return dataset_prefix, False
    if not prompt.strip():
        return "", False
    return model_context(generator, prompt, genre)


def encode_story(
    generator: StoryGenerator,
    context: str,
    story: str,
    *,
    chat: bool,
    max_story_tokens: int | None = None,
) -> TokenSequence:
    """Token ids of ``context + story`` with only the story's tokens labelled.

    Like the training data, context and story are tokenized separately; a text context gets
    a separating space (the templates end the prefix with one), a chat context does not.
    """
    tokenizer = generator.model.tokenizer
    if context and not chat and not context[-1].isspace():
        context += " "
    context_ids = (
        list(tokenizer(context, add_special_tokens=not chat)["input_ids"]) if context else []
    )
    story_ids = list(tokenizer(story, add_special_tokens=False)["input_ids"])
    if max_story_tokens is not None:
        story_ids = story_ids[:max_story_tokens]
    return TokenSequence.from_parts(context_ids, story_ids)


def pad_id(generator: StoryGenerator) -> int:
    tokenizer = generator.model.tokenizer
    value = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return int(value)
