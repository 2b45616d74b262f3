"""The ``taleforge`` command: one subcommand per stage, each a thin call into the library.

Standard output carries only results (the story, JSON, a table); progress, timings and
loading messages go to standard error, so output can be piped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from taleforge.config import (
    DataConfig,
    EvalConfig,
    GenerateConfig,
    ModelConfig,
    SamplingParams,
    ServeConfig,
    TaleforgeConfig,
    TrainConfig,
    load_config,
    parse_override,
)
from taleforge.errors import ConfigError, TaleforgeError

log = logging.getLogger("taleforge")

#: Flags offered under short names, mapped to their dotted config keys.
_SHORT_FLAGS: dict[str, str] = {
    "--input": "data.input",
    "--output": "data.output",
    "--format": "data.format",
    "--model": "model.spec",
    "--dtype": "model.dtype",
    "--backend": "model.backend",
    "--mode": "generate.mode",
    "--genre": "generate.genre",
    "--context-length": "generate.context_length",
    # one value per flag, repeated for several (as nginx's and Django's settings read)
    "--allowed-host": "serve.allowed_hosts",
    "--cors-origin": "serve.cors_origins",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _model_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--model SPEC`` (the ``model.spec`` setting), with what it means for this command."""
    parser.add_argument("--model", dest="model.spec", default=argparse.SUPPRESS, help=help_text)


def _add_section_flags(
    parser: argparse.ArgumentParser,
    section: str,
    model: type[BaseModel],
    flags: dict[str, str],
    short: bool,
) -> None:
    """Add ``--section.field`` (and, when ``short``, ``--field``) for every config field."""
    group = parser.add_argument_group(f"[{section}] settings", model.__doc__)
    for name, field in model.model_fields.items():
        if section == "generate" and name == "prompt":
            continue
        key = f"{section}.{name}"
        names = [_flag(f"{section}.{name}")]
        short_name = next((f for f, k in _SHORT_FLAGS.items() if k == key), None)
        if short_name:
            names.insert(0, short_name)
        elif short:
            names.insert(0, _flag(name))
        flags[key] = names[0]
        kwargs: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS}
        annotation = field.annotation
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} (default: {'none' if default is None else default})"
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(annotation) is dict:  # a JSON object, e.g. --word-bias '{"x": -5}'
            kwargs["metavar"] = "JSON"
        elif get_origin(annotation) is tuple:
            kwargs.update(action="append", metavar="TEXT")
            help_text = f"{field.description} Repeat for several."
        else:
            literal = get_args(annotation) if "Literal" in str(annotation) else ()
            if literal:
                kwargs["choices"] = literal
            kwargs["metavar"] = "VALUE" if not literal else None
        group.add_argument(*names, help=help_text, **kwargs)


def _backend_flag(parser: argparse.ArgumentParser) -> None:
    """``--backend`` (the ``model.backend`` setting)."""
    parser.add_argument(
        "--backend",
        dest="model.backend",
        choices=["auto", "transformers", "llama.cpp", "remote"],
        default=argparse.SUPPRESS,
        help="Inference backend: auto (llama.cpp when installed, else transformers; the "
        "default), transformers, llama.cpp, remote (an OpenAI-compatible server at "
        "--model.remote-url).",
    )
    for name in ("remote_url", "remote_model"):
        parser.add_argument(
            _flag(f"model.{name}"),
            dest=f"model.{name}",
            metavar="VALUE",
            default=argparse.SUPPRESS,
            help=ModelConfig.model_fields[name].description,
        )
    parser.add_argument(
        "--parallel",
        dest="model.parallel",
        type=int,
        default=argparse.SUPPRESS,
        help="Stories written at once per model on llama.cpp (default: 8).",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PRESET", help="TOML preset: a name in configs/ or a file path."
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="Override any setting by dotted key, e.g. --set sampling.top_k=40.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="More log output.")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only errors on stderr.")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The argument parser and the map from dotted key to the flag that sets it."""
    parser = argparse.ArgumentParser(
        prog="taleforge",
        description="Fine-tune language models on creative writing and co-write stories.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    flags: dict[str, str] = {}

    gen = commands.add_parser(
        "generate",
        help="Write a story (streamed to stdout).",
        description="Write a story with a model, streaming it to standard output.",
    )
    gen.add_argument("prompt", nargs="?", help="The idea, writing prompt or text to continue.")
    gen.add_argument("--json", action="store_true", help="Print the full result as JSON.")
    gen.add_argument("--memory", default="", help="Background kept in context (characters...).")
    gen.add_argument("--authors-note", default="", help="Direction for what comes next.")
    _common(gen)
    _add_section_flags(gen, "model", ModelConfig, flags, short=False)
    _add_section_flags(gen, "generate", GenerateConfig, flags, short=False)
    _add_section_flags(gen, "sampling", SamplingParams, flags, short=True)

    prep = commands.add_parser(
        "prepare",
        help="Prepare a dataset for training (clean, tag, tokenize, split).",
        description="Read a creative-writing dataset, clean it, tag genres, format it with a "
        "template, tokenize, pack and split it; writes a DatasetDict and a data card.",
    )
    prep.add_argument("--force", action="store_true", help="Rebuild even if up to date.")
    _common(prep)
    _add_section_flags(prep, "data", DataConfig, flags, short=False)
    _model_flag(
        prep, "Model whose tokenizer to use (default: smollm2-135m, the base of the default model)."
    )

    fit = commands.add_parser(
        "train",
        help="Fine-tune a model (LoRA or full); resumes after a crash.",
        description="Fine-tune a model on a prepared dataset (prepared on the fly from [data] "
        "when --train.data is not given). Re-running the same command resumes from the "
        "newest complete checkpoint.",
    )
    fit.add_argument("--force", action="store_true", help="Start over, deleting checkpoints.")
    fit.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Resume from the newest complete checkpoint (default: yes).",
    )
    _common(fit)
    _add_section_flags(fit, "train", TrainConfig, flags, short=False)
    _add_section_flags(fit, "data", DataConfig, flags, short=False)
    _model_flag(fit, "Model to fine-tune (default: smollm2-135m, the base of the default model).")

    web = commands.add_parser(
        "serve",
        help="Start the co-writing web app and the HTTP API (default http://127.0.0.1:7860).",
        description="Start the web app (Gradio studio at /) and the HTTP API (/api, the "
        "OpenAI-compatible /v1, /docs) on one server.",
    )
    _common(web)
    _add_section_flags(web, "serve", ServeConfig, flags, short=True)
    _model_flag(web, "Default model of the app (default: taleforge-stories).")
    _backend_flag(web)

    export = commands.add_parser(
        "export",
        help="Export a model to GGUF for the llama.cpp backend (cached next to the model).",
        description="Convert a model (the embedded model, a hub model such as gpt2, a trained "
        "run; LoRA adapters merged) to GGUF, the format of the llama.cpp backend. The file is "
        "cached and made again only when the model changes; its path is printed.",
    )
    export.add_argument(
        "--format", dest="export_format", default="gguf", choices=["gguf"], help="Format."
    )
    export.add_argument("--output", help="Write here instead of the cache.")
    export.add_argument("--force", action="store_true", help="Export even if up to date.")
    _common(export)
    _model_flag(export, "Model to export (default: taleforge-stories).")
    export.add_argument(
        "--quantization",
        dest="model.quantization",
        choices=["q8_0", "q5_1", "q4_1", "f16", "f32"],
        default=argparse.SUPPRESS,
        help="Weights: q8_0 (default; perplexity within 1%% of float32), q5_1, q4_1 "
        "(smaller, faster), f16, f32.",
    )

    ev = commands.add_parser(
        "evaluate",
        help="Compare models: perplexity, diversity, repetition, relevance, genre; a report.",
        description="Evaluate one or more models side by side on a dataset split (or on any "
        "file of stories, --data FILE): perplexity, and metrics of stories written for its "
        "prompts. Writes report.json, report.md, plots "
        "and the stories to runs/evaluate/<name>/ (tracked in MLflow).",
    )
    ev.add_argument(
        "--model",
        dest="evaluate.models",
        action="append",
        metavar="SPEC",
        default=argparse.SUPPRESS,
        help="A model to evaluate; repeat to compare (default: taleforge-stories).",
    )
    ev.add_argument(
        "--data",
        dest="evaluate.data",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="Score this file of stories (JSONL, CSV, text; .gz too) as written, every record, "
        "or a prepared dataset directory (default: prepare [data]). Same as --evaluate.data.",
    )
    ev.add_argument(
        "--sweep",
        dest="evaluate.sweep",
        nargs="+",
        metavar="NAME=V1,V2",
        default=argparse.SUPPRESS,
        help="Decoding sweep: e.g. --sweep temperature=0.7,0.9,1.1 top_p=0.9,0.95 "
        "evaluates every combination.",
    )
    _common(ev)
    _add_section_flags(ev, "evaluate", EvalConfig, flags, short=False)
    _add_section_flags(ev, "sampling", SamplingParams, flags, short=True)
    _add_section_flags(ev, "data", DataConfig, flags, short=False)

    rate = commands.add_parser(
        "rate",
        help="Rate generated stories blind (1-5 or pairwise); --summary aggregates the ratings.",
        description="Rate the stories of an evaluation without seeing the model: 1-5 for "
        "coherence, creativity, relevance and fluency, or --pairwise to pick the better of two "
        "models' stories for one prompt (or let an LLM judge pick: --judge-url). Answers are "
        "saved at once; --summary prints means and win rates with 95% intervals.",
    )
    rate.add_argument(
        "--stories",
        nargs="+",
        metavar="FILE",
        help="stories.jsonl files (default: the evaluation's, by --name); with --pairwise, "
        "the stories of several evaluations pair up by prompt.",
    )
    rate.add_argument("--rater", help="Your name (asked when not given).")
    rate.add_argument(
        "--pairwise",
        action="store_true",
        help="Compare two models' stories for the same prompt, shown as A and B in a seeded "
        "order: A, B or tie. With --summary: win rates per model pair only.",
    )
    rate.add_argument(
        "--models", nargs="+", metavar="MODEL", help="With --pairwise: only these models."
    )
    rate.add_argument(
        "--seed", type=int, help="With --pairwise: the seed of the A/B order (default: random)."
    )
    rate.add_argument("--ab", nargs="*", metavar="MODEL", help="Same as --pairwise --models.")
    rate.add_argument(
        "--judge-url",
        metavar="URL",
        help="With --pairwise: let the model at this OpenAI-compatible API judge every pair, "
        "in both orders (e.g. http://127.0.0.1:8000/v1).",
    )
    rate.add_argument(
        "--judge-model", metavar="NAME", help="The judge model (default: the first listed)."
    )
    rate.add_argument(
        "--judge-key", metavar="KEY", help="The judge server's API key (default: $OPENAI_API_KEY)."
    )
    rate.add_argument("--limit", type=int, help="Rate at most this many stories or pairs.")
    rate.add_argument("--summary", action="store_true", help="Aggregate the ratings and exit.")
    rate.add_argument("--json", action="store_true", help="With --summary: print JSON.")
    rate.add_argument(
        "--library",
        action="store_true",
        help="With --summary: add the 1-5 stars writers gave stories in the web app's library.",
    )
    rate.add_argument(
        "--database-url",
        help="The web app's database for --library (default: $TALEFORGE_DATABASE_URL or the "
        "SQLite file in ~/.local/share/taleforge).",
    )
    rate.add_argument("--name", dest="evaluate.name", default=argparse.SUPPRESS, help="Report.")
    rate.add_argument(
        "--ratings",
        dest="evaluate.ratings",
        default=argparse.SUPPRESS,
        help="Ratings file (default: runs/ratings.jsonl).",
    )
    _common(rate)

    db = commands.add_parser(
        "db",
        help="The web app's database: show or upgrade its schema (the server upgrades on start).",
    )
    db.add_argument("action", choices=["current", "upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="Target revision (default: the newest).")
    db.add_argument(
        "--database-url",
        help="Default: $TALEFORGE_DATABASE_URL or the SQLite file in ~/.local/share/taleforge.",
    )
    db.add_argument("-v", "--verbose", action="store_true", help="More log output.")
    db.add_argument("-q", "--quiet", action="store_true", help="Warnings and errors only.")

    models = commands.add_parser("models", help="List the models available here, with sizes.")
    models.add_argument("--json", action="store_true", help="Print JSON.")
    models.add_argument("--runs-dir", default=None, help="Where trained runs live (default runs/).")
    models.add_argument("-v", "--verbose", action="store_true", help="More log output.")
    models.add_argument("-q", "--quiet", action="store_true", help="Only errors on stderr.")

    config = commands.add_parser("config", help="Print the resolved configuration as JSON.")
    _common(config)
    return parser, flags


def _resolve_config(args: argparse.Namespace, flags: dict[str, str]) -> TaleforgeConfig:
    overrides: list[tuple[str, Any]] = [parse_override(item) for item in args.set]
    overrides += [(k, v) for k, v in vars(args).items() if "." in k]
    if getattr(args, "prompt", None):
        # Bytes the terminal's encoding could not decode arrive as lone surrogates, which
        # crashed the tokenizer (UnicodeEncodeError): they become U+FFFD.
        prompt = args.prompt.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        overrides.append(("generate.prompt", prompt))
    return load_config(args.config, overrides, flags)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if not args.verbose:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        for name in ("httpx", "httpx2"):  # a line per HTTP request (the remote backend's)
            logging.getLogger(name).setLevel(logging.WARNING)


def cmd_generate(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from taleforge.generate import StoryGenerator

    config = _resolve_config(args, flags)
    log.info("loading %s ...", config.model.spec)
    generator = StoryGenerator.from_config(
        config.model,
        sampling=config.sampling,
        context_length=config.generate.context_length,
        parallel=1,
    )
    stream = generator.stream(
        config.generate.prompt,
        mode=config.generate.mode,
        genre=config.generate.genre,
        memory=args.memory,
        authors_note=args.authors_note,
    )
    index = 0
    opening = stream.plan.opening
    if opening and not args.json:
        sys.stdout.write(opening)
    try:
        for chunk in stream:
            if args.json:
                continue
            if chunk.index != index:
                sys.stdout.write("\n\n---\n\n" + opening)
                index = chunk.index
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.cancel()
        stream.wait()
        generator.close()
        log.warning("\n[stopped]")
        return 130
    result = stream.result
    generator.close()
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    for story in result.stories:
        genre = f"{story.genre} ({story.genre_source})" if story.genre else "no genre"
        log.info(
            "[%s · seed %d · %d tokens in %.1f s · %.1f tokens/s · %s · %s on %s]",
            genre,
            story.seed,
            story.generated_tokens,
            story.seconds,
            story.tokens_per_second,
            story.finish_reason,
            story.model,
            story.backend,
        )
    return 0


def cmd_prepare(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from taleforge.data import prepare
    from taleforge.models import training_base

    config = _resolve_config(args, flags)
    prepared = prepare(config.data, training_base(config.model.spec), force=args.force)
    manifest = prepared.manifest
    counts = manifest["counts"]
    print(f"{prepared.directory}")
    state = "up to date" if prepared.cached else "written"
    log.info(
        "%s: %d of %d records kept; %s",
        state,
        counts["kept"],
        counts["read"],
        ", ".join(
            f"{s} {v['texts']} texts/{v['tokens']} tokens" for s, v in manifest["tokens"].items()
        ),
    )
    removed = manifest["cleaning"]["removed"]
    if removed:
        log.info("removed: %s", ", ".join(f"{k} {v}" for k, v in removed.items()))
    log.info("data card: %s", prepared.directory / "card.md")
    return 0


def cmd_train(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from taleforge.train import train

    config = _resolve_config(args, flags)
    result = train(config, force=args.force, resume=args.resume)
    print(result.model_dir)
    lines = [
        f"run           {result.run_dir}" + ("  (already trained)" if result.already_done else ""),
        f"steps         {result.global_step} of {result.max_steps}"
        + ("  (stopped early: no improvement)" if result.stopped_early else "")
        + (f"  (resumed from {Path(result.resumed_from).name})" if result.resumed_from else ""),
    ]
    if result.test_loss_before is not None and result.test_loss_after is not None:
        lines.append(
            f"perplexity    {result.perplexity_before:.2f} -> "
            f"{result.perplexity_after:.2f} on held-out data"
        )
    if result.best_eval_loss is not None:
        lines.append(f"best val loss {result.best_eval_loss:.4f}")
    lines += [f"time          {result.seconds:.0f} s", f"model         {result.model_dir}"]
    if result.mlflow_run_id:
        lines.append(f"mlflow run    {result.mlflow_run_id}  (make mlflow-ui)")
    lines.append(f'try it        taleforge generate "a prompt" --model {result.model_dir}')
    log.info("\n".join(lines))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taleforge.models.listing import format_size, list_models

    entries = list_models(Path(args.runs_dir) if args.runs_dir else None)
    if args.json:
        json.dump([e.__dict__ for e in entries], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    width = max(len(e.spec) for e in entries)
    for entry in entries:
        print(
            f"{entry.spec:<{width}}  {entry.kind:<9}  {format_size(entry.size_bytes):>9}  "
            f"{entry.status}"
        )
    return 0


def cmd_config(args: argparse.Namespace, flags: dict[str, str]) -> int:
    config = _resolve_config(args, flags)
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    return 0


def cmd_export(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from taleforge.models.export import export_gguf

    config = _resolve_config(args, flags)
    result = export_gguf(
        config.model.spec,
        quantization=config.model.quantization,
        output=Path(args.output) if args.output else None,
        force=args.force,
    )
    print(result.path)
    state = "up to date" if result.cached else f"written in {result.seconds:.0f} s"
    size = result.path.stat().st_size / 2**20
    log.info("%s (%s, %.0f MB): %s", result.spec, result.quantization, size, state)
    return 0


def cmd_serve(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from taleforge.serve import serve

    config = _resolve_config(args, flags)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how a server is stopped
        serve(config)
    return 0


def cmd_evaluate(args: argparse.Namespace, flags: dict[str, str], argv: Sequence[str]) -> int:
    import shlex

    from taleforge.evaluate import evaluate
    from taleforge.evaluate.report import comparison_table

    config = _resolve_config(args, flags)
    result = evaluate(config, command="taleforge " + shlex.join(argv))
    print(comparison_table(result.report))
    log.info("report: %s (%.0f s)", result.directory / "report.md", result.seconds)
    if result.mlflow_run_id:
        log.info("mlflow run: %s  (make mlflow-ui)", result.mlflow_run_id)
    return 0


def cmd_rate(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from taleforge.evaluate import EvaluationError, human, pairwise
    from taleforge.evaluate.report import output_dir

    config = _resolve_config(args, flags)
    ratings = config.evaluate.ratings
    pairwise_models = args.models or args.ab or None
    if args.ab is not None or args.judge_url:
        args.pairwise = True
    if args.summary:
        records = human.read_ratings(ratings)
        if args.pairwise:
            results = pairwise.summarize(records)
            text = json.dumps([r.to_dict() for r in results], indent=2) if args.json else None
            print(text or pairwise.format_results(results))
            return 0
        if args.library:
            from taleforge.store import Database, Library

            db = Database(args.database_url)
            db.migrate()
            records += human.from_library(Library(db).ratings())
        summary = human.summarize(records)
        text = json.dumps(summary.to_dict(), indent=2) if args.json else None
        print(text or human.format_summary(summary))
        return 0
    stories = human.load_story_files(args.stories or [output_dir(config) / "stories.jsonl"])
    if args.judge_url:
        from taleforge.evaluate.judge import Judge, judge_pairs

        judge = Judge.connect(args.judge_url, args.judge_model, args.judge_key)
        judge_pairs(
            stories, judge, ratings, models=pairwise_models, seed=args.seed, limit=args.limit
        )
        results = pairwise.summarize(human.read_ratings(ratings))
        print(pairwise.format_results([r for r in results if r.source == judge.rater]))
        return 0
    rater = args.rater
    if not rater:
        with contextlib.suppress(EOFError):
            rater = input("Your name: ")
    if not (rater or "").strip():
        raise EvaluationError("ratings are stored with the rater's name: pass --rater NAME")
    if args.pairwise:
        human.pairwise_session(
            stories,
            rater.strip(),
            ratings,
            models=pairwise_models,
            seed=args.seed,
            limit=args.limit,
        )
    else:
        human.score_session(stories, rater.strip(), ratings, limit=args.limit)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from taleforge.store import Database

    db = Database(args.database_url)
    if args.action == "upgrade":
        db.migrate(args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            raise ConfigError("say which revision to go back to: taleforge db downgrade 0001")
        db.downgrade(args.revision)
    print(f"{db!r}: schema revision {db.revision() or 'none (empty database)'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taleforge`` console script."""
    parser, flags = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        if args.command == "generate":
            return cmd_generate(args, flags)
        if args.command == "train":
            return cmd_train(args, flags)
        if args.command == "prepare":
            return cmd_prepare(args, flags)
        if args.command == "serve":
            return cmd_serve(args, flags)
        if args.command == "evaluate":
            return cmd_evaluate(args, flags, sys.argv[1:] if argv is None else argv)
        if args.command == "export":
            return cmd_export(args, flags)
        if args.command == "rate":
            return cmd_rate(args, flags)
        if args.command == "models":
            return cmd_models(args)
        if args.command == "db":
            return cmd_db(args)
        return cmd_config(args, flags)
    except TaleforgeError as exc:
        print(f"taleforge: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
