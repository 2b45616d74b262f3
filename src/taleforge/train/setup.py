"""Setting a run up: the model (LoRA or full), TrainingArguments, the output model directory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from taleforge.config import TaleforgeConfig, TrainConfig
from taleforge.data import PreparedData
from taleforge.errors import ConfigError
from taleforge.files import replace_dir
from taleforge.models import LoadedModel, ModelMetadata, SourceKind, load_model, write_metadata

log = logging.getLogger(__name__)


def training_arguments(train: TrainConfig, checkpoint_dir: Path, has_eval: bool) -> Any:
    """The one place where taleforge's knobs become transformers' ``TrainingArguments``.

    Raises:
        ConfigError: A precision this machine cannot train in (fp16 without a CUDA GPU).
    """
    from transformers import TrainingArguments

    early = has_eval and train.early_stopping_patience > 0
    no_accelerator = _cpu_only()
    if train.precision == "fp16" and no_accelerator:
        # accelerate accepts fp16 on a CPU and then trains in fp32 without a word: say so.
        raise ConfigError(
            "precision fp16 needs a CUDA GPU and none is visible: use --train.precision bf16 "
            "(mixed precision on CPUs too) or fp32"
        )
    if no_accelerator and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        # The Trainer drops accelerate's FSDP setting on CPUs: say so rather than pretend.
        log.warning("FSDP needs GPUs: on this machine the processes train as plain DDP")
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        weight_decay=train.weight_decay,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=train.eval_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        # taleforge rotates checkpoints itself, deleting only complete ones.
        save_total_limit=None,
        logging_steps=train.logging_steps,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False,
        seed=train.seed,
        data_seed=train.seed,
        bf16=train.precision == "bf16",
        fp16=train.precision == "fp16",
        # Without it, processes started by torchrun/accelerate on a machine with no GPU each
        # train alone (no DDP, no gradient sync), and bf16 is refused.
        use_cpu=no_accelerator,
        activation_checkpointing=train.gradient_checkpointing,
        # Non-reentrant checkpointing lets gradients reach LoRA weights behind frozen inputs
        # and keeps dropout's random state, so the result matches a run without it.
        activation_checkpointing_kwargs={"use_reentrant": False}
        if train.gradient_checkpointing
        else None,
        max_grad_norm=train.max_grad_norm,
        report_to="none",  # MLflow is logged by taleforge's own callback
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        ddp_backend="gloo" if _distributed() and no_accelerator else None,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def stream_training_rows(prepared: PreparedData, seed: int, shuffle_buffer: int) -> Any:
    """The prepared training split as a shuffled stream over its Arrow files.

    Nothing is indexed or held beyond ``shuffle_buffer`` rows; the files are read in turn (in
    a seeded order when there are several) and reshuffled every epoch (the Trainer sets the
    epoch). Under DDP accelerate lets the first process read and sends every process its
    slice of each batch, so the processes never see the same rows.

    Raises:
        ConfigError: The split has no rows.
    """
    import datasets

    split_dir = prepared.directory / "dataset" / "train"
    state = json.loads((split_dir / "state.json").read_text("utf-8"))
    files = [str(split_dir / entry["filename"]) for entry in state["_data_files"]]
    stream = datasets.load_dataset(
        "arrow", data_files={"train": files}, split="train", streaming=True
    )
    if next(iter(stream), None) is None:
        raise ConfigError(
            f"{prepared.directory} has no training rows: the data is shorter than one block; "
            "lower --data.block-size or use --data.packing pad"
        )
    return stream.shuffle(seed=seed, buffer_size=shuffle_buffer)


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _cpu_only() -> bool:
    import torch

    return not torch.accelerator.is_available()


def prepare_model(config: TaleforgeConfig, tokenizer: Any) -> tuple[LoadedModel, Any, list[int]]:
    """Load the base model, grow its embeddings for the data's new tokens, wrap it in LoRA.

    Returns:
        The loaded base, the model to train, and the ids of tokens the data step added.
    """
    base = load_model(
        config.model.spec,
        dtype=_dtype(config.train.precision, config.train.method),
        trust_remote_code=config.model.trust_remote_code,
    )
    if base.kind is SourceKind.ADAPTER:
        raise ConfigError(
            f"'{config.model.spec}' is a LoRA adapter: train from its base model "
            f"('{base.metadata.base_model}'), or merge it first"
        )
    model = base.model
    old_size = model.get_input_embeddings().num_embeddings
    new_ids = list(range(old_size, len(tokenizer)))
    if new_ids:
        model.resize_token_embeddings(len(tokenizer))
    if config.train.method == "full":
        return base, model, new_ids
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.train.lora_r,
        lora_alpha=config.train.lora_alpha,
        lora_dropout=config.train.lora_dropout,
        target_modules=list(config.train.lora_target_modules) or None,
        # Only the rows of the added marker tokens are trained, not the whole embedding.
        trainable_token_indices=new_ids or None,
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(
            f"LoRA cannot adapt this model: {str(exc).splitlines()[0]}. Set "
            "--train.lora-target-modules to its attention projections (e.g. q_proj v_proj)"
        ) from None
    return base, model, new_ids


def _dtype(precision: str, method: str) -> str:
    """Weights dtype: a LoRA base is frozen and may be bf16; trained weights stay fp32.

    Mixed precision computes in bf16/fp16 under autocast; AdamW updates to bf16 weights would
    round small steps away, so full fine-tunes keep fp32 master weights.
    """
    return "bfloat16" if precision == "bf16" and method == "lora" else "float32"


def write_model_dir(
    target: Path,
    model: Any,
    tokenizer: Any,
    config: TaleforgeConfig,
    prepared: PreparedData,
    evaluation: dict[str, Any],
) -> Path:
    """Save the trained model as a self-describing directory, atomically.

    LoRA runs save the adapter (or, with ``merge_lora``, merged full weights); full runs save
    the weights. Tokenizer and ``taleforge.json`` (template, genre tags, special tokens, data
    fingerprint, config, evaluation) go alongside.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        to_save = model
        if config.train.method == "lora" and config.train.merge_lora:
            to_save = model.merge_and_unload()
        if hasattr(to_save, "peft_config"):
            # The adapter names its base by the spec the user gave, not a cache path.
            for peft_config in to_save.peft_config.values():
                peft_config.base_model_name_or_path = config.model.spec
            # The added tokens' rows are saved as trainable tokens; the resized embedding
            # matrix itself (100+ MB for a real model) need not be.
            to_save.save_pretrained(str(staging), save_embedding_layers=False)
        else:
            to_save.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        template = prepared.manifest["template"]
        write_metadata(
            staging,
            ModelMetadata(
                name=config.train.run_name,
                base_model=config.model.spec,
                template=template["name"],
                genre_tags=tuple(template["genre_tags"]),
                special_tokens=tuple(template["special_tokens"]),
                data_fingerprint=prepared.fingerprint,
                description=f"{config.train.method} fine-tune of {config.model.spec} on "
                f"{prepared.manifest['source']['input']}",
                config=config.model_dump(mode="json"),
                evaluation=evaluation,
            ),
        )
        # peft writes a card full of "[More Information Needed]": say what this model is.
        (staging / "README.md").write_text(model_card(config, prepared, evaluation, target))
        replace_dir(staging, target, mode=0o700)  # owner-only, like the run folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def model_card(
    config: TaleforgeConfig, prepared: PreparedData, evaluation: dict[str, Any], where: Path
) -> str:
    """A short Markdown model card: what was trained on what, how well, and how to use it."""
    train = config.train
    method = "LoRA" if train.method == "lora" else "full"
    lines = [
        f"# {train.run_name}",
        "",
        f"A {method} fine-tune of `{config.model.spec}` on "
        f"`{prepared.manifest['source']['input']}`, trained with taleforge.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{config.model.spec}` |",
        f"| method | {method}"
        + (f" (r={train.lora_r}, alpha={train.lora_alpha})" if train.method == "lora" else "")
        + " |",
        f"| template | `{prepared.manifest['template']['name']}` |",
        f"| data fingerprint | `{prepared.fingerprint[:16]}` |",
    ]
    before = evaluation.get("test_perplexity_before")
    after = evaluation.get("test_perplexity_after")
    if before is not None and after is not None:
        lines.append(f"| held-out perplexity | {before:.2f} before, {after:.2f} after |")
    lines += [
        "",
        "Use it:",
        "",
        "```bash",
        f'taleforge generate "A lighthouse keeper finds a door" --model {where}',
        "```",
        "",
        "`taleforge.json` holds the template, genre tags, special tokens and the full config.",
        "",
    ]
    return "\n".join(lines)
