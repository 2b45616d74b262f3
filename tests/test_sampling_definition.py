"""One definition: `SamplingParams` alone declares a sampling parameter's default and bounds.

Every other module derives them (the API bodies, the studio's sliders and presets, the
server's defaults). This test reads the source of every module and fails on a redeclared
default or bound: a number given for a sampling parameter as a keyword argument, in a dict
literal (a preset table), or a pydantic field of that name with bounds of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

from taleforge.config import SamplingParams
from taleforge.serve.api import SAMPLING_NAMES

SRC = Path(__file__).resolve().parents[1] / "src" / "taleforge"
#: OpenAI's n (num_stories) is every library's keyword for a count (difflib, statistics):
#: not scanned for; num_stories, its taleforge name, is.
GENERIC = {"n"}
NAMES = set(SamplingParams.model_fields) | set(SAMPLING_NAMES) - GENERIC
BOUNDS = {"ge", "gt", "le", "lt", "max_length", "min_length"}
#: Deliberate values, not defaults: each with the reason it is not the configured one.
NEUTRAL = "transformers' GenerationConfig set to 'off', so generate adds no processor of its own"
ALLOWED = {
    **{
        ("generate/decoding.py", name): NEUTRAL
        for name in (
            "min_new_tokens",
            "repetition_penalty",
            "no_repeat_ngram_size",
            "temperature",
            "top_k",
            "top_p",
            "typical_p",
        )
    },
    ("evaluate/judge.py", "temperature"): "the judge reads greedily, by design",
    ("train/callbacks.py", "seed"): "training samples use one seed so steps can be compared",
    ("config.py", "max_new_tokens"): "serve.max_new_tokens: the most a request may ask for",
    ("config.py", "seed"): "train.seed: initialization and data order, not decoding",
    ("data/clean.py", "seed"): "the MinHash of near-duplicate detection, not decoding",
}


def _number(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )


def declarations(source: str) -> list[tuple[int, str]]:
    """(line, parameter) of every sampling default or bound declared in ``source``, outside
    the body of a class named ``SamplingParams``."""
    tree = ast.parse(source)
    owner = {
        id(node)
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef) and cls.name == "SamplingParams"
        for node in ast.walk(cls)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in owner:
            continue
        if isinstance(node, ast.keyword) and node.arg in NAMES and _number(node.value):
            found.append((node.value.lineno, node.arg))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in NAMES and _number(value):
                    found.append((key.lineno, str(key.value)))
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id in NAMES
            and isinstance(node.value, ast.Call)
            and (
                any(k.arg in BOUNDS for k in node.value.keywords)
                or any(_number(a) for a in node.value.args)
            )
        ):
            found.append((node.lineno, node.target.id))
    return found


def test_the_scan_finds_a_redeclared_default_or_bound():
    copied = """
PRESETS = {"creative": {"temperature": 1.05, "top_k": 0}}
class Body(BaseModel):
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    min_new_tokens: int = Field(0)
generator.generate(prompt, repetition_penalty=1.1, seed=None)
class SamplingParams(BaseModel):
    temperature: float = Field(0.8, ge=0.0)
"""
    assert sorted(declarations(copied)) == [
        (2, "temperature"),
        (2, "top_k"),
        (4, "top_p"),
        (5, "min_new_tokens"),
        (6, "repetition_penalty"),
    ]


def test_no_module_but_sampling_params_declares_a_sampling_default_or_bound():
    redeclared = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        for line, name in declarations(path.read_text(encoding="utf-8")):
            if (module, name) not in ALLOWED:
                redeclared.append(f"{module}:{line}: {name}")
    assert not redeclared, (
        "sampling defaults or bounds declared outside SamplingParams (derive them from it: "
        "taleforge.config.optional_fields, slider_range, sampling_preset):\n"
        + "\n".join(redeclared)
    )
