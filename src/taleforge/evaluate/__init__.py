"""Evaluation: perplexity, diversity, repetition, relevance, genre adherence, human ratings.

from taleforge import evaluate, load_config
config = load_config("sample-finetune")
result = evaluate(config, ["smollm2-135m", "taleforge-stories"])
print(result.directory / "report.md")
"""

from taleforge.evaluate.errors import EvaluationError
from taleforge.evaluate.human import RatingSummary, read_ratings, summarize
from taleforge.evaluate.perplexity import PerplexityResult
from taleforge.evaluate.run import EvalResult, GenerationRun, ModelEvaluation, evaluate

__all__ = [
    "EvalResult",
    "EvaluationError",
    "GenerationRun",
    "ModelEvaluation",
    "PerplexityResult",
    "RatingSummary",
    "evaluate",
    "read_ratings",
    "summarize",
]
