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
