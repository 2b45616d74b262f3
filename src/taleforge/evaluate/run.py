"""``evaluate``: data → per model (perplexity, generation at each sweep point, metrics) → report.

Everything is computed before anything is written; the report directory is then written in
a temporary directory and renamed into place, so a failure (a bad prompt file, a model that
does not load, an interrupt) leaves no partial report and an older report untouched.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from taleforge.config import EvalConfig, TaleforgeConfig, make_sampling
from taleforge.data import DataError
from taleforge.data.tokenize import spread_indices
from taleforge.evaluate import metrics as m
from taleforge.evaluate.cliche import find_cliches
from taleforge.evaluate.dataset import (
    GENERATION_GROUPS,
    EvalData,
    base_seed,
    known_genre,
    load_data,
    selected_groups,
)
from taleforge.evaluate.errors import EvaluationError
from taleforge.evaluate.perplexity import PerplexityResult, TokenSequence, perplexity
from taleforge.evaluate.perplexity import score_sequences as _score
from taleforge.evaluate.relevance import (
    TfidfSimilarity,
    genre_adherence,
    ranking_accuracy,
    ranking_candidates,
)
from taleforge.evaluate.scoring import encode_story, pad_id, story_context
from taleforge.evaluate.sweep import SweepPoint, sweep_points
from taleforge.generate import Story, StoryGenerator
from taleforge.models import load_model, resolve_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRun:
    """Stories written at one sweep point, and their metrics."""

    point: SweepPoint
    stories: tuple[Story, ...]
    #: For each story, the index of its prompt in ``EvalData.prompts``.
    owners: tuple[int, ...]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class ModelEvaluation:
    """What one model scored."""

    label: str
    spec: str
    kind: str
    perplexity: PerplexityResult | None
    #: Fan et al.'s prompt ranking on the dataset's own stories (how much the model uses
    #: the prompt), independent of sampling.
    reference_ranking: float | None
    runs: tuple[GenerationRun, ...]
    seconds: float

    @property
    def generation(self) -> GenerationRun | None:
        """The run at the base sampling parameters."""
        return self.runs[0] if self.runs else None


@dataclass(frozen=True)
class EvalResult:
    """A finished evaluation: its report directory and what it measured."""

    directory: Path
    report: dict[str, Any]
    models: tuple[ModelEvaluation, ...]
    mlflow_run_id: str | None
    seconds: float

    def model(self, label: str) -> ModelEvaluation:
        return next(e for e in self.models if e.label == label)


def model_labels(specs: Sequence[str]) -> list[str]:
    """Short, unique names for model specs (``runs/x/model`` -> ``x/model``)."""
    labels: list[str] = []
    for spec in specs:
        path = Path(spec)
        label = spec
        if path.exists():
            label = f"{path.parent.name}/{path.name}" if path.name == "model" else path.name
        base, n = label, 2
        while label in labels:
            label, n = f"{base}#{n}", n + 1
        labels.append(label)
    return labels


def evaluate(
    config: TaleforgeConfig,
    models: Sequence[str] | None = None,
    *,
    command: str | None = None,
) -> EvalResult:
    """Evaluate one or more models side by side and write the report.

    Args:
        config: The whole config; ``evaluate``, ``data``, ``sampling``, ``generate`` and
            ``model`` sections are used.
        models: Model specs (default: ``evaluate.models``, else ``model.spec``).
        command: The command line that produced the run, shown in the report.

    Raises:
        EvaluationError: Bad evaluation input; the message says what to change.
        ModelNotFoundError, ModelLoadError: A model cannot be loaded.
        DataError, ConfigError: Bad data or settings.
    """
    from taleforge.evaluate.report import check_output_dir, log_to_mlflow, output_dir, write_report

    started = time.perf_counter()
    ev = config.evaluate
    specs = list(models or ev.models or [config.model.spec])
    for spec in specs:
        resolve_spec(spec)  # a typo fails now, not after the first model's minutes of work
    directory = output_dir(config)
    check_output_dir(directory)
    groups, strict = selected_groups(config)
    base = make_sampling(config.sampling, seed=base_seed(config))
    points = [SweepPoint("base", base)]
    for point in sweep_points(base, ev.sweep):
        if point.params != base:
            points.append(point)
    data = load_data(config)
    if "references" in groups and not any(item.reference for item in data.prompts):
        if strict:
            raise EvaluationError(
                f"BLEU/chrF need reference stories, and the prompts ({data.prompt_source}) "
                "have none: use --evaluate.prompts dataset with a dataset that has prompts, or "
                "drop 'references' from --evaluate.metrics"
            )
        groups.discard("references")
    if not data.prompts:
        groups &= {"perplexity"}
    classifier = None
    if "genre" in groups:
        from taleforge.data.genres import load_classifier

        try:
            # The classifier fitted to the dataset (whose accuracy its data card reports)
            # where there is one.
            classifier = load_classifier(data.directory)
        except DataError as exc:
            raise EvaluationError(f"genre adherence: {exc}") from None
    tfidf = TfidfSimilarity.fit(data.corpus) if "relevance" in groups else None

    evaluations = []
    labels = model_labels(specs)
    for spec, label in zip(specs, labels, strict=True):
        evaluations.append(
            _evaluate_model(config, spec, label, data, points, groups, classifier, tfidf)
        )
        gc.collect()
    extras = {
        "classifier": None
        if classifier is None
        else {
            "cv_accuracy": classifier.cv_accuracy,
            "trained_on": classifier.trained_on,
            "on_references": genre_adherence(
                classifier.predict,
                [i.reference or "" for i in data.prompts],
                [i.genre if i.reference else None for i in data.prompts],
                classifier.genres,
            )[0],
            "hand_check": _hand_check(data.directory),
        },
        "groups": sorted(groups),
    }
    seconds = time.perf_counter() - started
    report = write_report(
        directory, config, data, evaluations, extras, command=command, seconds=seconds
    )
    run_id = log_to_mlflow(config, report, directory)
    return EvalResult(directory, report, tuple(evaluations), run_id, round(seconds, 1))


def _hand_check(directory: Path | None) -> dict[str, Any] | None:
    """The agreement of a prepared dataset's genres with hand-checked labels (its data card's
    ``--data.genre-check``), which is how good its classifier is as a judge of adherence."""
    from taleforge.data.prepare import read_manifest

    manifest = read_manifest(directory) if directory is not None else None
    check = (manifest or {}).get("genres", {}).get("check")
    if not check:
        return None
    return {key: check[key] for key in ("file", "checked", "accuracy", "by_source") if key in check}


def _evaluate_model(
    config: TaleforgeConfig,
    spec: str,
    label: str,
    data: EvalData,
    points: list[SweepPoint],
    groups: set[str],
    classifier: Any,
    tfidf: TfidfSimilarity | None,
) -> ModelEvaluation:
    ev = config.evaluate
    started = time.perf_counter()
    log.info("loading %s ...", spec)
    model = load_model(
        spec, dtype=config.model.dtype, trust_remote_code=config.model.trust_remote_code
    )
    # Stories are written on the backend asked for (llama.cpp is about 5x faster on a CPU and
    # samples the same way); "auto" keeps the transformers model already loaded for scoring.
    backend = config.model.backend if config.model.backend in ("llama.cpp",) else None
    generator = StoryGenerator(
        model,
        sampling=points[0].params,
        context_length=config.generate.context_length,
        backend=backend,
    )
    result_ppl = None
    if "perplexity" in groups:
        window = min(ev.window, generator.context_length)
        records = [data.records[i] for i in spread_indices(len(data.records), ev.max_texts)]
        sequences = []
        for record in records:
            context, chat = story_context(
                generator,
                ev.context,
                prompt=record["prompt"],
                genre=known_genre(record["genre"]),
                dataset_prefix=record["prefix"],
            )
            sequences.append(encode_story(generator, context, record["text"], chat=chat))
        result_ppl = perplexity(
            model.model,
            sequences,
            [len(r["text"].split()) for r in records],
            window=window,
            stride=min(ev.stride, window),
            context=ev.context,
            pad_id=pad_id(generator),
            batch_tokens=ev.batch_tokens,
            progress=f"{label}: perplexity",
        )
        log.info(
            "%s: perplexity %.2f per token, %.2f per word (%d tokens)",
            label,
            result_ppl.per_token,
            result_ppl.per_word,
            result_ppl.tokens,
        )
    candidates = ranking_candidates(len(data.prompts), ev.ranking_prompts, base_seed(config))
    reference_ranking = None
    with_refs = [i for i, item in enumerate(data.prompts) if item.reference]
    if "relevance" in groups and len(data.prompts) >= 2 and with_refs:
        reference_ranking = _ranking(
            generator,
            data,
            [data.prompts[i].reference or "" for i in with_refs],
            with_refs,
            candidates,
            ev.ranking_tokens,
            ev.batch_tokens,
            f"{label}: prompt ranking (references)",
        )
    runs = []
    if groups & GENERATION_GROUPS:
        for point in points:
            stories, owners = _write(generator, data, point, config, label)
            measured = _generation_metrics(
                generator, data, stories, owners, groups, candidates, classifier, tfidf, ev, label
            )
            runs.append(GenerationRun(point, tuple(stories), tuple(owners), measured))
    kind = model.kind.value
    del generator, model
    return ModelEvaluation(
        label=label,
        spec=spec,
        kind=kind,
        perplexity=result_ppl,
        reference_ranking=reference_ranking,
        runs=tuple(runs),
        seconds=round(time.perf_counter() - started, 1),
    )


def _write(
    generator: StoryGenerator,
    data: EvalData,
    point: SweepPoint,
    config: TaleforgeConfig,
    label: str,
) -> tuple[list[Story], list[int]]:
    """Write ``num_stories`` (k) stories per prompt; prompt n's first seed is seed + n*k."""
    per_prompt = point.params.num_stories
    options = point.params.model_dump()
    stories: list[Story] = []
    owners: list[int] = []
    bar = tqdm(
        total=len(data.prompts) * per_prompt,
        desc=f"{label} · {point.label}: writing",
        unit="story",
        mininterval=1.0,
    )
    with bar:
        for number, item in enumerate(data.prompts):
            options["seed"] = (base_seed(config) + number * per_prompt) % 2**32
            result = generator.generate(
                item.prompt,
                mode="story",
                genre=item.genre or config.generate.genre,
                **options,
            )
            stories.extend(result.stories)
            owners.extend([number] * len(result.stories))
            bar.update(len(result.stories))
    return stories, owners


def _ranking(
    generator: StoryGenerator,
    data: EvalData,
    stories: Sequence[str],
    owners: Sequence[int],
    candidates: Sequence[Sequence[int]],
    max_tokens: int,
    batch_tokens: int,
    progress: str,
) -> float | None:
    """Prompt-ranking accuracy of stories, each scored with its prompt's candidate prompts."""
    window = generator.context_length
    sequences: list[TokenSequence] = []
    shape: list[int] = []
    for story, owner in zip(stories, owners, strict=True):
        for candidate in candidates[owner]:
            item = data.prompts[candidate]
            context, chat = story_context(generator, "model", prompt=item.prompt, genre=item.genre)
            sequence = encode_story(
                generator, context, story, chat=chat, max_story_tokens=min(max_tokens, window // 2)
            )
            # too long for the model: the context's start goes, the story stays
            sequences.append(TokenSequence(sequence.input_ids[-window:], sequence.labels[-window:]))
        shape.append(len(candidates[owner]))
    scores = _score(
        generator.model.model,
        sequences,
        pad_id=pad_id(generator),
        batch_tokens=batch_tokens,
        progress=progress,
    )
    losses: list[list[float]] = []
    at = 0
    for size in shape:
        row = scores[at : at + size]
        at += size
        if all(count for _, count in row):
            losses.append([nll / count for nll, count in row])
    return ranking_accuracy(losses) if losses else None


def _generation_metrics(
    generator: StoryGenerator,
    data: EvalData,
    stories: Sequence[Story],
    owners: Sequence[int],
    groups: set[str],
    candidates: Sequence[Sequence[int]],
    classifier: Any,
    tfidf: TfidfSimilarity | None,
    ev: EvalConfig,
    label: str,
) -> dict[str, Any]:
    texts = [s.generated_text for s in stories]
    result: dict[str, Any] = {"stories": len(texts)}
    if "diversity" in groups:
        for n in (1, 2, 3):
            result[f"distinct_{n}"] = m.distinct_n(texts, n)
        result["self_bleu"] = m.self_bleu(texts) if len(texts) > 1 else None
    if "repetition" in groups:
        result["seq_rep_4"] = statistics.fmean(m.seq_rep_n(t, 4) for t in texts)
        result["repeated_lines"] = m.repeated_line_rate(texts)
    if "references" in groups:
        pairs = [
            (t, data.prompts[o].reference)
            for t, o in zip(texts, owners, strict=True)
            if data.prompts[o].reference
        ]
        result["bleu"] = m.bleu([t for t, _ in pairs], [r or "" for _, r in pairs])
        result["chrf"] = m.chrf([t for t, _ in pairs], [r or "" for _, r in pairs])
    if "relevance" in groups and tfidf is not None:
        prompts = [data.prompts[o].prompt for o in owners]
        result["tfidf_similarity"] = statistics.fmean(tfidf.pairwise(prompts, texts))
        others = tfidf.mismatched([p.prompt for p in data.prompts], texts, owners)
        result["tfidf_similarity_other_prompts"] = statistics.fmean(others) if others else None
        result["prompt_ranking"] = (
            _ranking(
                generator,
                data,
                texts,
                owners,
                candidates,
                ev.ranking_tokens,
                ev.batch_tokens,
                f"{label}: prompt ranking (generated)",
            )
            if len(data.prompts) >= 2
            else None
        )
    if "genre" in groups and classifier is not None:
        share, counted = genre_adherence(
            classifier.predict, texts, [s.genre for s in stories], classifier.genres
        )
        result["genre_adherence"] = share
        result["genre_stories"] = counted
    if "cliche" in groups:
        found = find_cliches(texts, data.human, threshold=ev.cliche_threshold)
        result.update(found.to_dict(top=20))
    if "length" in groups:
        word_counts = [len(t.split()) for t in texts]
        result.update({f"words_{k}": v for k, v in m.length_stats(word_counts).items()})
        result["empty_stories"] = sum(1 for n in word_counts if n == 0)
        result["empty_share"] = result["empty_stories"] / len(texts)
        result["lowercase_starts"] = sum(m.starts_lowercase(t) for t in texts)
        result["lowercase_start_share"] = result["lowercase_starts"] / len(texts)
        result["tokens_mean"] = statistics.fmean(s.generated_tokens for s in stories)
        # eos: the model's end token; stop: a stop sequence; length: cut at max_new_tokens
        reasons = Counter(s.finish_reason for s in stories)
        result["finish_reasons"] = dict(reasons)
        result["ended_share"] = (reasons["eos"] + reasons["stop"]) / len(stories)
        seconds = sum(s.seconds for s in stories)
        result["tokens_per_second"] = (
            sum(s.generated_tokens for s in stories) / seconds if seconds else None
        )
        result["word_counts"] = word_counts
    return result
