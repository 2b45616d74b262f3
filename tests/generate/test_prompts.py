import pytest

from taleforge.errors import ConfigError
from taleforge.generate.prompts import plan_prompt
from taleforge.genres import GenreChoice

FANTASY = GenreChoice("fantasy", "auto")
NONE = GenreChoice(None, "none")


def fake_chat(messages):
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_instruct_model_gets_a_natural_language_genre_instruction():
    plan = plan_prompt(
        "magic castle", mode="story", genre=FANTASY, template="chat", render_chat=fake_chat
    )
    assert plan.chat and plan.opening == ""
    assert "<user>Write a short fantasy story based on this idea: magic castle</user>" in (
        plan.header
    )
    assert "[FANTASY]" not in plan.header


def test_tagged_model_gets_the_tag_it_was_trained_with():
    plan = plan_prompt(
        "The dragon woke",
        mode="story",
        genre=FANTASY,
        template="genre_tagged",
        genre_tags=("fantasy", "horror"),
    )
    assert plan.header == "[FANTASY] " and plan.opening == "The dragon woke"


def test_tag_is_left_out_when_the_model_never_saw_it():
    plan = plan_prompt(
        "The dragon woke",
        mode="story",
        genre=FANTASY,
        template="genre_tagged",
        genre_tags=("horror",),
    )
    assert "[FANTASY]" not in plan.header


def test_writing_prompt_template():
    plan = plan_prompt(
        "A door in the sea",
        mode="writing-prompt",
        genre=FANTASY,
        template="plain",
        genre_tags=("fantasy",),
    )
    assert plan.header == "[FANTASY] [WP] A door in the sea [RESPONSE]"
    plan = plan_prompt("A door in the sea", mode="writing-prompt", genre=NONE, template="plain")
    assert plan.header == "[WP] A door in the sea [RESPONSE]"


def test_continue_keeps_the_text_as_the_opening_and_memory_in_the_header():
    plan = plan_prompt(
        "It was late.",
        mode="continue",
        genre=NONE,
        template="chat",
        memory="Ana is a pilot.",
        render_chat=fake_chat,
    )
    assert plan.opening == "It was late." and plan.header == "Ana is a pilot.\n\n"
    assert not plan.chat


def test_plain_model_story_starts_with_the_prompt():
    plan = plan_prompt("The dragon woke", mode="story", genre=FANTASY, template="plain")
    assert plan.header == "A fantasy story.\n\n" and plan.opening == "The dragon woke"


def test_chat_mode_carries_history_memory_and_note():
    history = [
        {"role": "user", "content": "a poem about the sea"},
        {"role": "assistant", "content": "Waves..."},
    ]
    plan = plan_prompt(
        "make it darker",
        mode="chat",
        genre=NONE,
        template="chat",
        memory="Keep it short.",
        authors_note="gothic",
        history=history,
        render_chat=fake_chat,
    )
    assert plan.header.index("a poem about the sea") < plan.header.index("make it darker")
    assert "Keep it short." in plan.header and "Author's note: gothic" in plan.header


def test_chat_mode_needs_a_chat_template():
    with pytest.raises(ConfigError, match="needs a model with a chat template"):
        plan_prompt("hi", mode="chat", genre=NONE, template="plain")


LORE = ("Mira is a smuggler.", "The harbour is closed.")


def spanned(plan):
    return [(span.kind, plan.header[span.start : span.end]) for span in plan.spans]


def test_text_models_read_memory_then_one_line_per_lore_entry_then_a_blank_line():
    for mode in ("continue", "story", "writing-prompt", "poem"):
        plan = plan_prompt(
            "Mira ran", mode=mode, genre=NONE, template="plain", memory="Night.", lore=LORE
        )
        assert plan.header.startswith("Night.\nMira is a smuggler.\nThe harbour is closed.\n\n")
        assert spanned(plan) == [("memory", "Night."), ("lore", LORE[0]), ("lore", LORE[1])]
    alone = plan_prompt("Mira ran", mode="continue", genre=NONE, template="plain", lore=LORE)
    assert alone.header == "Mira is a smuggler.\nThe harbour is closed.\n\n"


def test_chat_models_read_lore_in_the_system_prompt_after_the_memory():
    plan = plan_prompt(
        "Mira ran",
        mode="story",
        genre=NONE,
        template="chat",
        memory="Night.",
        lore=LORE,
        authors_note="terse",
        render_chat=fake_chat,
    )
    assert (
        "Keep in mind: Night.\n\nWhat matters now:\nMira is a smuggler.\nThe harbour is closed."
        "</system>"
    ) in plan.header
    assert spanned(plan) == [
        ("memory", "Night."),
        ("lore", LORE[0]),
        ("lore", LORE[1]),
        ("note", "Author's note: terse"),
    ]
