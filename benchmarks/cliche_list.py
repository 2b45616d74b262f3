"""The shipped cliché list: the phrases the story model over-uses, found by the evaluation's
own cliché score on stories it wrote for prompts the decoding benchmark never uses.

    python benchmarks/cliche_list.py --prompts 96 --output src/taleforge/assets/cliches.txt \
        --evidence benchmarks/results/cliche_list.json

The model writes one story (300 new tokens, the default sampling) for each of ``--prompts``
premises drawn (fixed seed) from the training headers of the prepared corpus, the ideas it
was taught with (the benchmark and the evaluation report write for the hand-written
data/corpus/eval-prompts.txt instead); :func:`taleforge.evaluate.cliche.find_cliches`
compares its phrases with every human text of the corpus (the evaluation's threshold, in at
least ``--min-stories`` stories). The list is those phrases, most frequent first; the JSON keeps
each phrase's counts and log-odds, the evidence a reader can check.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

from tqdm import tqdm

from story_model import (
    add_model_arguments,
    corpus_records,
    human_texts,
    model_config,
    run_record,
)
from taleforge.evaluate.cliche import find_cliches
from taleforge.generate import StoryGenerator

#: A story's training header: "Write a long sci-fi story based on this idea: ...".
IDEA = re.compile(r"Write a (?:long |short )?(?:([\w-]+) )?story based on this idea: (.+?)<\|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1000, help="first seed (then +1 per story)")
    parser.add_argument("--min-stories", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("src/taleforge/assets/cliches.txt"))
    evidence = Path("benchmarks/results/cliche_list.json")
    parser.add_argument("--evidence", type=Path, default=evidence)
    args = parser.parse_args()

    config = model_config(args)
    records = corpus_records(config)
    human = human_texts(records)
    ideas = [m.groups() for row in records["train"] if (m := IDEA.search(row["formatted"]))]
    chosen = random.Random(args.seed).sample(ideas, min(args.prompts, len(ideas)))
    generator = StoryGenerator.from_config(config.model, sampling=config.sampling)
    started = time.perf_counter()
    texts = []
    for number, (genre, idea) in enumerate(tqdm(chosen, desc="writing", unit="story")):
        story = generator.generate(
            idea, mode="story", genre=genre or "none", seed=args.seed + number
        ).stories[0]
        texts.append(story.generated_text)
    seconds = time.perf_counter() - started
    print("comparing with the corpus's human texts …", flush=True)
    found = find_cliches(
        texts,
        human,
        threshold=config.evaluate.cliche_threshold,
        min_stories=args.min_stories,
    )
    phrases = [c.phrase for c in found.cliches]
    header = [
        "# The story model's clichés: phrases it over-uses against the corpus's human texts.",
        f"# Made by: python benchmarks/cliche_list.py --prompts {args.prompts} "
        f"--min-stories {args.min_stories} (model {args.model}, {args.backend}; "
        f"{len(texts)} stories of {args.tokens} tokens for training premises).",
        f"# Each: log-odds > {config.evaluate.cliche_threshold} and in >= {args.min_stories} "
        f"stories; evidence in {args.evidence.as_posix()}. Banned with ban_cliches = true.",
    ]
    args.output.write_text("\n".join([*header, *phrases]) + "\n", encoding="utf-8")
    evidence = {
        **run_record("cliche_list.py", args),
        "stories": len(texts),
        "seconds_writing": round(seconds, 1),
        "cliche_score": found.score,
        "words": found.words,
        "cliches": [c.__dict__ for c in found.cliches],
    }
    args.evidence.parent.mkdir(parents=True, exist_ok=True)
    args.evidence.write_text(json.dumps(evidence, indent=2) + "\n", encoding="utf-8")
    print(f"{len(phrases)} phrases -> {args.output}; score {found.score:.1f} per 1,000 words")


if __name__ == "__main__":
    main()
