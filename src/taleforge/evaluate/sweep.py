"""Decoding sweeps: ``temperature=0.7,0.9,1.1 top_p=0.9,0.95`` -> every combination."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from taleforge.config import SamplingParams, make_sampling
from taleforge.errors import ConfigError


@dataclass(frozen=True)
class SweepPoint:
    """One set of sampling parameters to evaluate, and the settings that make it one."""

    label: str
    params: SamplingParams
    #: The swept settings and their values (empty for the base parameters).
    changes: tuple[tuple[str, str], ...] = ()


def parse_sweep(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["temperature=0.7,0.9", "top_p=0.9"]`` -> ``[("temperature", ["0.7", "0.9"]), ...]``.

    Raises:
        ConfigError: An item is not ``name=value,value`` or names a setting twice.
    """
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not choices:
            raise ConfigError(
                f"sweep item '{spec}' must look like name=value,value (e.g. temperature=0.7,1.0)"
            )
        if any(name == known for known, _ in axes):
            raise ConfigError(f"sweep names '{name}' twice: give all its values in one item")
        axes.append((name, choices))
    return axes


def sweep_points(base: SamplingParams, specs: Sequence[str]) -> list[SweepPoint]:
    """Every combination of the swept values applied to ``base`` (validated).

    Raises:
        ConfigError: Unknown setting (with a suggestion) or an invalid value.
    """
    axes = parse_sweep(specs)
    if not axes:
        return []
    points = []
    for values in itertools.product(*(choices for _, choices in axes)):
        changes = tuple((name, value) for (name, _), value in zip(axes, values, strict=True))
        try:
            params = make_sampling(base, **dict(changes))
        except ConfigError as exc:
            raise ConfigError(f"--sweep: {exc}") from None
        label = " ".join(f"{name}={value}" for name, value in changes)
        points.append(SweepPoint(label, params, changes))
    return points
