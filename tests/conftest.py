"""Shared fixtures: a tiny GPT-2 with a byte-level BPE tokenizer trained here, built once.

Tests run offline: the Hugging Face hub is switched to offline mode before anything imports
it, and the taleforge cache is the user's (so the embedded model is converted once).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

from needs import need

TRAINING_TEXT = [
    "The dragon slept beneath the castle while the wizard read his spells by candlelight.",
    "A robot on the space station counted the stars and sent a message to the planet below.",
    "The detective found a clue in the locked room: a single wet footprint by the window.",
    "They met at the harbour at dawn, and she laughed when the wind stole his hat.",
    "Nobody went into the basement after the whispers started, not even the old cat.",
    "The map led the explorers across the desert, over the mountain and into the jungle.",
    "Once upon a time a girl found a door in the sea. She opened it and walked inside!",
    '"Who is there?" asked the keeper. No one answered, so he lit the lamp again.',
]

EOS = "<|endoftext|>"


def build_tiny_gpt2(directory: Path, *, n_positions: int = 64, seed: int = 0) -> Path:
    """Write a random tiny GPT-2 and a trained byte-level BPE tokenizer to ``directory``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TRAINING_TEXT * 4, vocab_size=400, min_frequency=1, special_tokens=[EOS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS
    )
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny GPT-2 (64-token context) and its tokenizer."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


#: A chat template for the tiny GPT-2, so that chat mode (and /v1/chat/completions) runs on
#: it: "role: content" lines, then "assistant:".
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with a chat template and a 512-token window (the chat scaffold with its
    system prompt does not fit in 64 tokens)."""
    from transformers import AutoTokenizer

    directory = build_tiny_gpt2(tmp_path_factory.mktemp("tiny-chat"), n_positions=512)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from taleforge.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_generator(tiny_model):
    from taleforge import StoryGenerator

    return StoryGenerator(tiny_model)


@pytest.fixture(scope="session")
def embedded_generator():
    """The real embedded model (converted once into the taleforge cache)."""
    from taleforge import StoryGenerator

    # The transformers backend: tests score with its torch model (``generator.model.model``).
    return StoryGenerator("smollm2-135m", backend="transformers")


# -- databases ---------------------------------------------------------------------------------
#
# Every test that stores anything runs against SQLite and against a real PostgreSQL. CI starts
# PostgreSQL (.ci/run) and sets TALEFORGE_TEST_POSTGRES_URL; on a machine without it the
# PostgreSQL half is skipped with the reason, and in CI (CI=true) it fails instead.

POSTGRES_ENV = "TALEFORGE_TEST_POSTGRES_URL"


@pytest.fixture(scope="session", autouse=True)
def _private_database(tmp_path_factory: pytest.TempPathFactory):
    """No test touches the user's own database: the default URL points into a temp dir."""
    folder = tmp_path_factory.mktemp("default-db")
    old = os.environ.get("TALEFORGE_DATABASE_URL")
    os.environ["TALEFORGE_DATABASE_URL"] = f"sqlite:///{folder / 'taleforge.db'}"
    yield
    if old is None:
        os.environ.pop("TALEFORGE_DATABASE_URL", None)
    else:
        os.environ["TALEFORGE_DATABASE_URL"] = old


@pytest.fixture(scope="session", autouse=True)
def _no_settings_from_the_environment():
    """A developer's own ``TALEFORGE_CONFIG`` or ``TALEFORGE_<SECTION>__<KEY>`` variables
    would change every config the tests build: they are hidden for the session."""
    from taleforge.config import ENV_PREFIX, ENV_PRESET, ENV_SEPARATOR

    hidden = {
        name: os.environ.pop(name)
        for name in list(os.environ)
        if name == ENV_PRESET or (name.startswith(ENV_PREFIX) and ENV_SEPARATOR in name)
    }
    yield
    os.environ.update(hidden)


def fresh_postgres_url() -> str:
    """A new, empty PostgreSQL database on the server of $TALEFORGE_TEST_POSTGRES_URL."""
    import secrets

    from sqlalchemy import create_engine, text

    from taleforge.store.db import parse_url

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        need(
            f"no PostgreSQL for the storage tests: set {POSTGRES_ENV}=postgresql://user:pw@host/db"
        )
    url = parse_url(base)
    name = f"tf_test_{secrets.token_hex(6)}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        need(f"cannot create a PostgreSQL test database on {base}: {exc}")
    finally:
        engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    from taleforge.store.db import parse_url

    base = parse_url(os.environ[POSTGRES_ENV])
    name = parse_url(url).database
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path):
    """An empty database, once SQLite and once PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'taleforge.db'}"
        return
    url = fresh_postgres_url()
    try:
        yield url
    finally:
        drop_postgres(url)


@pytest.fixture
def database(database_url: str):
    """A migrated :class:`taleforge.store.Database` on SQLite and on PostgreSQL."""
    from taleforge.store import Database

    db = Database(database_url)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def module_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """An empty database URL for a module's server: SQLite or PostgreSQL, as the module's
    ``params``-parametrized fixture asks (``request.param``)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'taleforge.db'}"
        return
    url = fresh_postgres_url()
    try:
        yield url
    finally:
        drop_postgres(url)
