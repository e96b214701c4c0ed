"""Training: ``train_one_epoch``, ``evaluate``, ``fit`` and the ``sentistream model train`` command.

Seed paper 4.5: AdamW, LR 1e-4 for the CNN/LSTM/fusion parts and 2e-5 for fine-tuned encoder layers
(with layer-wise decay), linear warmup then cosine decay, weight decay, gradient clipping at 1.0,
early stopping (patience 5) on validation macro-F1, the best state kept, seeds fixed, several seeds
reported as mean +- std.

It trains on cached frozen encoder outputs (``model.features``), so an epoch over ~50k tweets is
minutes on two CPU cores.  One model learns from all data sets at once: the SemEval pool (text
only: its posts carry an absent-image mask), MVSA-Single train (text + picture, with cached
augmented picture views, ``model.picture_views``) and SemEval-2016 4C (five-point labels: the real
intensity target, multitask with the 3-class head; rows without an intensity label mask that loss).
``fit`` is a plain function so ablations (``model.ablate``) call it directly.

Honest selection: epochs and seeds are chosen on "select" splits carved from the training pools
(a tenth of SemEval and MVSA train by id hash, a tenth of the 4C training topics); the reported
sets (TweetEval val, MVSA dev, the topic-disjoint 4C val) are scored once, on the chosen state.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset

from model import metrics
from model.checkpoint import build_network
from model.config import ModelConfig
from model.data import FIVE_POINT_SCALE, intensity_to_five_point
from model.network import PROXY_INTENSITY, SentimentNet
from model.progress import progress_bar
from model.split_view import SplitView

logger = logging.getLogger(__name__)


def _optional_path(value: str) -> Path | None:
    """``--log-dir ''`` turns logging off (``Path('')`` would be the working directory)."""
    return Path(value).expanduser() if value.strip() else None


def default_runs_dir() -> Path:
    """TensorBoard logs: ``$SENTISTREAM_RUNS_DIR`` or ``~/.cache/sentistream/runs`` (outside the repo)."""
    configured = os.environ.get("SENTISTREAM_RUNS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sentistream" / "runs"


def set_seed(seed: int) -> None:
    """Fix python, numpy and torch generators so a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------
# data plumbing
# ---------------------------------------------------------------------------------------------


class IntensityLabelled(SplitView):
    """A cached split whose items also carry ``intensity`` (-3..+3) looked up by id; ids without one
    get None, and their intensity loss is masked.  ``label_by_id`` replaces the class label of the
    ids it lists (4C tweets take their SemEval 4A label, the 3-class head's own definition)."""

    def __init__(self, dataset: Dataset, intensity_by_id: dict[str, float],
                 label_by_id: dict[str, int] | None = None) -> None:
        super().__init__(dataset)
        self.intensity_by_id = intensity_by_id
        self.label_by_id = label_by_id or {}

    @property
    def labels(self) -> Any:
        labels = getattr(self.dataset, "labels", None)
        ids = getattr(self.text, "ids", None)
        if labels is None or ids is None or not self.label_by_id:
            return labels
        return [self.label_by_id.get(item_id, label) for item_id, label in zip(ids, labels, strict=True)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["intensity"] = self.intensity_by_id.get(item["id"])
        item["label"] = self.label_by_id.get(item["id"], item["label"])
        return item


def has_intensity_labels(dataset: Any) -> bool:
    """Whether any part of ``dataset`` brings real intensity labels (then every batch masks, and the
    label-derived proxy is never used)."""
    if isinstance(dataset, IntensityLabelled):
        return True
    if isinstance(dataset, ConcatDataset):
        return any(has_intensity_labels(part) for part in dataset.datasets)
    inner = getattr(dataset, "dataset", None)
    if isinstance(dataset, Subset) or isinstance(inner, Dataset):
        return has_intensity_labels(inner)
    if isinstance(dataset, Sequence) and dataset and isinstance(dataset[0], dict):
        return any("intensity" in item for item in dataset)
    return False


def dataset_lengths(dataset: Dataset) -> np.ndarray:
    """Token count per item, read from the cache offsets where possible (no item is loaded)."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([dataset_lengths(part) for part in dataset.datasets])
    if isinstance(dataset, Subset):
        return dataset_lengths(dataset.dataset)[np.asarray(dataset.indices)]
    text = getattr(dataset, "text", None)
    offsets = getattr(text, "offsets", None)
    if offsets is not None:
        return np.diff(np.asarray(offsets))
    return np.array([int(dataset[i]["text"].shape[0]) for i in range(len(dataset))])


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Class index per item, without loading features where the dataset lists its labels."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([dataset_labels(part) for part in dataset.datasets])
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.array([int(dataset[i]["label"]) for i in range(len(dataset))], dtype=np.int64)


class LengthBucketSampler(Sampler[list[int]]):
    """Shuffled batches of similar length: padding costs the CNN real work, so group by length.

    Each epoch: shuffle, cut into pools of ``batch_size * pool_batches``, sort each pool by length,
    cut into batches, shuffle the batches.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, pool_batches: int = 50) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.pool = batch_size * pool_batches
        self.generator = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.generator.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i : i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size))
        for index in self.generator.permutation(len(batches)):
            yield batches[index]


def _collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from model.features import collate_features

    return collate_features(items)


def _collate_multitask(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``collate_features`` plus intensity (B,) and intensity_mask (B,): False where an item has none."""
    from model.features import collate_features

    batch = collate_features(items)
    values = [item.get("intensity") for item in items]
    batch["intensity_mask"] = torch.tensor([value is not None for value in values], dtype=torch.bool)
    batch["intensity"] = torch.tensor([0.0 if value is None else float(value) for value in values])
    return batch


def make_loader(dataset: Dataset, batch_size: int, train: bool, seed: int = 0) -> DataLoader:
    """Length-bucketed shuffled batches for training; length-sorted fixed batches for evaluation.

    A dataset with any intensity labels gets the multitask batches in every batch (masked where a
    row has none), so no batch falls back to the label-derived proxy."""
    lengths = dataset_lengths(dataset)
    collate = _collate_multitask if has_intensity_labels(dataset) else _collate
    if train:
        return DataLoader(dataset, batch_sampler=LengthBucketSampler(lengths, batch_size, seed), collate_fn=collate)
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def class_weights_for(labels: np.ndarray, mode: str) -> tuple[float, ...] | None:
    """"balanced": n / (3 * count_c) (each class counts equally, what macro recall rewards);
    "sqrt": the square root of that (half-way); "none": plain cross-entropy."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=3).astype(np.float64)
    weights = len(labels) / (3.0 * np.maximum(counts, 1.0))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise ValueError(f"unknown class weighting {mode!r}")
    weights = weights / (weights * counts).sum() * counts.sum()  # mean weight per example = 1
    return tuple(round(float(w), 4) for w in weights)


# ---------------------------------------------------------------------------------------------
# optimisation
# ---------------------------------------------------------------------------------------------


def make_optimizer(net: SentimentNet, lr: float, encoder_lr: float, layer_decay: float,
                   weight_decay: float) -> torch.optim.AdamW:
    """AdamW with LR ``lr`` for the network and ``encoder_lr * layer_decay**depth`` for fine-tuned
    encoder layers (depth 0 = the top layer); no weight decay on biases and norms."""
    encoder_params: dict[int, list[nn.Parameter]] = {}
    encoder_ids = set()
    top = getattr(net.branches["text"], "encoder_top", None) if "text" in net.branches else None
    if top is not None:
        for depth, layer in enumerate(reversed(list(top.layers))):
            params = [p for p in layer.parameters() if p.requires_grad]
            encoder_params[depth] = params
            encoder_ids.update(id(p) for p in params)
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if not param.requires_grad or id(param) in encoder_ids:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups: list[dict[str, Any]] = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "network"},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "network-no-decay"},
    ]
    for depth, params in encoder_params.items():
        groups.append({"params": params, "lr": encoder_lr * layer_decay**depth, "weight_decay": weight_decay,
                       "name": f"encoder-top-{depth}"})
    return torch.optim.AdamW([g for g in groups if g["params"]])


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to each group's LR over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


def train_one_epoch(net: SentimentNet, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None, device: torch.device,
                    epoch: int = 0, writer: Any = None, clip_norm: float = 1.0, progress: bool = True,
                    global_step: int = 0, max_steps: int | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, steps and examples/s."""
    net.train()
    total_loss, steps, examples = 0.0, 0, 0
    started = time.perf_counter()
    bar = progress_bar(loader, enabled=progress, desc=f"epoch {epoch}", unit="batch", leave=False, mininterval=1.0)
    for batch in bar:
        batch = _to_device(batch, device)
        output = net(batch)
        assert output.loss is not None
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss = float(output.loss.detach())
        total_loss += loss
        steps += 1
        examples += int(batch["label"].shape[0])
        if writer is not None and (global_step + steps) % 20 == 0:
            writer.add_scalar("train/loss", loss, global_step + steps)
            writer.add_scalar("train/grad_norm", float(grad_norm), global_step + steps)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step + steps)
        if steps % 50 == 0:
            bar.set_postfix(loss=f"{total_loss / steps:.4f}", refresh=False)
        if max_steps is not None and steps >= max_steps:
            break
    seconds = time.perf_counter() - started
    return {"loss": total_loss / max(1, steps), "steps": steps, "examples_per_second": examples / max(seconds, 1e-9)}


@dataclass
class EvalResult:
    """Predictions on one validation set, in the dataset's own order, and their metrics."""

    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    intensity: np.ndarray
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    intensity_target: np.ndarray | None = None  # real labels (-3..+3), NaN where a row has none


def intensity_metrics(target: np.ndarray, intensity: np.ndarray) -> dict[str, float]:
    """Against real five-point labels (rows with a label only): the task's MAE^M and MAE on the
    five-point scale (predictions rounded back to -2..+2, as the task's systems submit labels), and
    CCC of the raw -3..+3 predictions (CCC is unchanged by applying x1.5 to both sides)."""
    rows = ~np.isnan(target)
    gold = np.rint(target[rows] / FIVE_POINT_SCALE)
    predicted = intensity_to_five_point(intensity[rows])
    return {
        "intensity_macro_mae": metrics.macro_mean_absolute_error(gold, predicted, classes=(-2, -1, 0, 1, 2)),
        "intensity_mae": metrics.mean_absolute_error(gold, predicted),
        "intensity_ccc": metrics.concordance_correlation(target[rows], intensity[rows]),
    }


def summary_metrics(labels: np.ndarray, predictions: np.ndarray, intensity: np.ndarray,
                    intensity_target: np.ndarray | None = None) -> dict[str, float]:
    """The figures the targets and the model card use; intensity against real labels where the set
    has them (``intensity_metrics``), else against the label-derived proxy (named ``*_proxy``)."""
    summary = {
        "accuracy": metrics.accuracy(labels, predictions),
        "macro_recall": metrics.macro_recall(labels, predictions),
        "macro_f1": metrics.macro_f1(labels, predictions),
        "weighted_f1": metrics.weighted_f1(labels, predictions),
    }
    if intensity_target is not None and bool((~np.isnan(intensity_target)).any()):
        return {**summary, **intensity_metrics(intensity_target, intensity)}
    proxy = np.asarray(PROXY_INTENSITY)[labels]
    return {**summary,
            "intensity_mae_proxy": metrics.mean_absolute_error(proxy, intensity),
            "intensity_ccc_proxy": metrics.concordance_correlation(proxy, intensity)}


def selection_score(results: dict[str, EvalResult]) -> float:
    """What epochs and seeds are chosen by: the mean over the selection sets of macro-F1 for a class
    set and of 1 - MAE^M / 4 for an intensity set (4 = the largest five-point error), so both heads
    count and higher is better for each."""
    scores = []
    for result in results.values():
        if "intensity_macro_mae" in result.metrics:
            scores.append(1.0 - result.metrics["intensity_macro_mae"] / 4.0)
        else:
            scores.append(result.metrics["macro_f1"])
    return float(np.mean(scores))


def evaluate(net: SentimentNet, loader: DataLoader, device: torch.device, progress: bool = False,
             desc: str = "eval") -> EvalResult:
    """Score a loader under ``inference_mode``; results are put back in the dataset's order."""
    net.eval()
    indices: list[int] = []
    labels, probabilities, intensity, targets = [], [], [], []
    total_loss, count = 0.0, 0
    batch_sampler = loader.batch_sampler
    batch_indices = iter(batch_sampler) if batch_sampler is not None else None
    with torch.inference_mode():
        for batch in progress_bar(loader, enabled=progress, desc=desc, unit="batch", leave=False):
            if batch_indices is not None:
                indices.extend(next(batch_indices))
            batch = _to_device(batch, device)
            output = net(batch)
            size = int(batch["label"].shape[0])
            if output.loss is not None:
                total_loss += float(output.loss) * size
                count += size
            labels.append(batch["label"].cpu().numpy())
            probabilities.append(output.probabilities.cpu().numpy())
            intensity.append(output.intensity.float().cpu().numpy())
            if "intensity_mask" in batch:
                target = batch["intensity"].float().cpu().numpy().copy()
                target[~batch["intensity_mask"].cpu().numpy()] = np.nan
                targets.append(target)
    if not labels:
        empty = np.zeros(0, dtype=np.int64)
        return EvalResult(empty, empty, np.zeros((0, 3)), np.zeros(0), float("nan"))
    label_array = np.concatenate(labels)
    prob_array = np.concatenate(probabilities)
    intensity_array = np.concatenate(intensity)
    target_array = np.concatenate(targets) if targets else None
    if len(indices) == len(label_array):
        order = np.argsort(np.asarray(indices), kind="stable")
        label_array, prob_array, intensity_array = label_array[order], prob_array[order], intensity_array[order]
        target_array = target_array[order] if target_array is not None else None
    predictions = prob_array.argmax(axis=1)
    result = EvalResult(label_array, predictions, prob_array, intensity_array, total_loss / max(1, count),
                        intensity_target=target_array)
    result.metrics = summary_metrics(label_array, predictions, intensity_array, target_array)
    return result


@dataclass
class FitResult:
    """What ``fit`` hands back: the best network (weights loaded), its state, and the run's record."""

    net: SentimentNet
    config: ModelConfig
    best_state: dict[str, Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]
    val_results: dict[str, EvalResult]
    seconds: float
    report_results: dict[str, EvalResult] = field(default_factory=dict)

    def val_metrics(self) -> dict[str, dict[str, float]]:
        """Metrics of the selection sets at the chosen epoch."""
        return {name: result.metrics for name, result in self.val_results.items()}

    def report_metrics(self) -> dict[str, dict[str, float]]:
        """Metrics of the reported sets, scored once on the chosen state (never used to choose)."""
        return {name: result.metrics for name, result in self.report_results.items()}


def default_fit_args(**overrides: Any) -> argparse.Namespace:
    """The parser's defaults as a Namespace, for programmatic callers (ablations, tests)."""
    args = get_args_parser().parse_args([])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise AttributeError(f"unknown training argument {key!r}")
        setattr(args, key, value)
    return args


def fit(config: ModelConfig, train_ds: Dataset, val_ds: Dataset | dict[str, Dataset],
        args: argparse.Namespace | None = None, encoder_top_factory: Any = None,
        report_ds: dict[str, Dataset] | None = None) -> FitResult:
    """Train ``config`` on ``train_ds``; pick the epoch with the best ``selection_score`` on ``val_ds``.

    ``val_ds`` (the selection sets) is one dataset or ``{name: dataset}``; with several, each counts
    equally, whatever its size.  ``report_ds`` are scored once, after training, on the chosen state:
    never looked at while choosing.  ``args`` as from ``get_args_parser`` (or
    ``default_fit_args(...)``); ``args.seed`` fixes the run.
    """
    args = args or default_fit_args()
    started = time.perf_counter()
    set_seed(args.seed)
    device = resolve_device(args.device)
    val_sets = val_ds if isinstance(val_ds, dict) else {"val": val_ds}
    net = build_network(config, encoder_top_factory).to(device)
    train_loader = make_loader(train_ds, args.batch_size, train=True, seed=args.seed)
    val_loaders = {name: make_loader(ds, args.eval_batch_size, train=False) for name, ds in val_sets.items()}
    steps_per_epoch = len(train_loader) if args.max_steps_per_epoch is None else min(
        len(train_loader), args.max_steps_per_epoch)
    total_steps = max(1, steps_per_epoch * args.epochs)
    warmup = min(args.warmup_steps, max(1, total_steps // 10))
    optimizer = make_optimizer(net, args.lr, args.encoder_lr, args.layer_decay, args.weight_decay)
    scheduler = warmup_cosine(optimizer, warmup, total_steps)
    writer = None
    if args.log_dir:
        from torch.utils.tensorboard import SummaryWriter

        run_name = (f"{args.run_name}-seed{args.seed}" if args.run_name
                    else f"{config.fusion}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        writer = SummaryWriter(str(Path(args.log_dir) / run_name))
    history: list[dict[str, Any]] = []
    best_score, best_epoch, best_state, best_results = -1.0, -1, None, {}
    stale = 0
    global_step = 0
    try:
        for epoch in range(1, args.epochs + 1):
            train_stats = train_one_epoch(net, train_loader, optimizer, scheduler, device, epoch, writer,
                                          args.clip_norm, args.progress, global_step, args.max_steps_per_epoch)
            global_step += int(train_stats["steps"])
            results = {name: evaluate(net, loader, device, progress=False, desc=name)
                       for name, loader in val_loaders.items()}
            score = selection_score(results)
            record = {"epoch": epoch, "train_loss": train_stats["loss"], "score": score,
                      "examples_per_second": train_stats["examples_per_second"],
                      **{f"{name}/{k}": v for name, r in results.items() for k, v in r.metrics.items()},
                      **{f"{name}/loss": r.loss for name, r in results.items()}}
            history.append(record)
            if writer is not None:
                for key, value in record.items():
                    if key != "epoch":
                        writer.add_scalar(key if "/" in key else f"epoch/{key}", value, epoch)
                writer.flush()
            logger.info("epoch %d: train loss %.4f, %s, score %.4f (%.0f ex/s)", epoch, train_stats["loss"],
                        ", ".join(f"{n} acc {r.metrics['accuracy']:.4f} mR {r.metrics['macro_recall']:.4f} "
                                  f"mF1 {r.metrics['macro_f1']:.4f}" for n, r in results.items()),
                        score, train_stats["examples_per_second"])
            if score > best_score:
                best_score, best_epoch, stale = score, epoch, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
                best_results = results
            else:
                stale += 1
                if stale >= args.patience:
                    logger.info("early stop: no better score for %d epochs (best epoch %d)", stale, best_epoch)
                    break
    finally:
        if writer is not None:
            writer.close()
    assert best_state is not None
    net.load_state_dict(best_state)
    net.eval()
    reported = {name: evaluate(net, make_loader(ds, args.eval_batch_size, train=False), device, desc=name)
                for name, ds in (report_ds or {}).items()}
    return FitResult(net, config, best_state, best_epoch, best_score, history, best_results,
                     time.perf_counter() - started, reported)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace, class_weights: tuple[float, ...] | None,
                     text_dim: int = 384, visual_dim: int = 1280) -> ModelConfig:
    """The checkpoint's config: the options plus the encoders' names and widths (read from the cache),
    so the Scorer later loads the very encoders the network was trained on."""
    from model.encoders import DEFAULT_TEXT_ENCODER

    return ModelConfig(
        modalities=tuple(args.modalities.split(",")),
        fusion=args.fusion,
        text_encoder=args.text_encoder or DEFAULT_TEXT_ENCODER,
        text_dim=text_dim,
        visual_encoder=args.image_encoder,
        visual_dim=visual_dim,
        text_cnn=not args.no_text_cnn,
        pooling=args.pooling,
        cnn_pool=args.cnn_pool,
        text_hidden=args.text_hidden,
        context_norm=args.context_norm,
        dropout=args.dropout,
        input_dropout=args.input_dropout,
        intensity_weight=args.intensity_weight,
        finetune_layers=args.finetune_layers,
        class_weights=class_weights,
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentistream model train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sentistream model train`` (registered by ``model.cli``)."""
    add = parser.add_argument
    add("--fusion", default="gmu", choices=["concat", "gmu", "lowrank", "crossattn"],
        help="gmu (the shipped model): a learned gate, so modality weights say which modality drove a score")
    add("--modalities", default="text,visual", help="comma-separated subset of text,visual,audio")
    add("--no-text-cnn", action="store_true", help="ablation: token vectors straight into the BiLSTM")
    add("--pooling", default="attention", choices=["attention", "mean", "max"])
    add("--cnn-pool", type=int, default=2, help="max-pool window/stride after the text CNN")
    add("--text-hidden", type=int, default=256, help="BiLSTM hidden size per direction")
    add("--context-norm", default="l2", choices=["l2", "batch", "none"])
    add("--dropout", type=float, default=0.3)
    add("--input-dropout", type=float, default=0.1)
    add("--intensity-weight", type=float, default=0.5, help="weight of the intensity loss (smooth L1)")
    add("--class-weights", default="sqrt", choices=["none", "sqrt", "balanced"])
    add("--finetune-layers", type=int, default=0, help="fine-tune the top k encoder layers from cache")
    add("--text-encoder", default=None,
        help="text encoder whose cached features train the model (default: the packaged minilm-l6); "
             "recorded in the checkpoint, loaded by the Scorer")
    add("--image-encoder", default="efficientnet_lite0", choices=["efficientnet_lite0", "resnet50"])
    add("--text-data", default="semeval", choices=["semeval", "none"])
    add("--intensity-data", default="ce", choices=["ce", "none"],
        help="ce: SemEval-2016 4C five-point tweets train the intensity head (multitask); none: the "
             "label-derived proxy, as before")
    add("--image-data", default="mvsa", choices=["mvsa", "none"])
    add("--augment-views", type=int, default=4,
        help="augmented views cached per MVSA train picture, one drawn per step (0: no augmentation)")
    add("--image-repeat", type=int, default=2, help="times MVSA train is repeated per epoch")
    add("--train-limit", type=int, default=None, help="first N training examples only (smoke runs)")
    add("--epochs", type=int, default=8)
    add("--max-steps-per-epoch", type=int, default=None)
    add("--batch-size", type=int, default=32)
    add("--eval-batch-size", type=int, default=128)
    add("--lr", type=float, default=1e-4, help="CNN/LSTM/fusion learning rate")
    add("--encoder-lr", type=float, default=2e-5, help="LR of the top fine-tuned encoder layer")
    add("--layer-decay", type=float, default=0.8, help="LR factor per encoder layer further down")
    add("--weight-decay", type=float, default=1e-5)
    add("--warmup-steps", type=int, default=500)
    add("--clip-norm", type=float, default=1.0)
    add("--patience", type=int, default=5)
    add("--seed", type=int, default=0, help="first seed")
    add("--seeds", type=int, default=1, help="train this many seeds (seed, seed+1, ...); report mean +- std")
    add("--seed-processes", type=int, default=1,
        help="train the seeds in this many processes at once, --threads shared among them (at least one "
             "torch thread each): on a CPU, small LSTM batches use one core far better than two")
    add("--device", default="auto")
    add("--threads", type=int, default=2)
    add("--cache-dir", type=Path, default=None)
    add("--log-dir", type=_optional_path, default=default_runs_dir(),
        help="TensorBoard log root ('' = no TensorBoard logs)")
    add("--run-name", default=None)
    add("--out", type=Path, default=None, help="write the best checkpoint here")
    add("--no-progress", dest="progress", action="store_false")


@dataclass
class TrainingData:
    """What ``run`` trains on: the fit set, the selection sets carved from the training pools, the
    reported sets, and the encoders' widths as cached."""

    train: Dataset
    select: dict[str, Dataset]
    report: dict[str, Dataset]
    text_dim: int
    visual_dim: int


def _subset_by_id(dataset: Dataset, ids: list[str], keep: set[str]) -> Subset:
    return Subset(dataset, [index for index, item_id in enumerate(ids) if item_id in keep])


def load_data(args: argparse.Namespace) -> TrainingData:
    """Training pools (SemEval minus TweetEval val, MVSA train, SemEval-2016 4C) split into fit and
    select parts; TweetEval val, MVSA dev and the topic-disjoint 4C val as the reported sets."""
    from model import data
    from model.encoders import DEFAULT_TEXT_ENCODER, TextEncoder
    from model.features import CachedFeatureDataset, FeatureCache

    cache = FeatureCache(args.cache_dir)
    text_encoder = args.text_encoder or DEFAULT_TEXT_ENCODER
    encoders = {"text_encoder": TextEncoder.cache_name(text_encoder), "image_encoder": args.image_encoder}
    layer = None
    if args.finetune_layers > 0:  # the input of the top k layers of whichever encoder was cached
        layer = cache.resolve_layer(encoders["text_encoder"], "tweeteval", "val", None) - args.finetune_layers
    modalities = args.modalities.split(",")
    images = "visual" in modalities
    parts: list[Dataset] = []
    select: dict[str, Dataset] = {}
    report: dict[str, Dataset] = {}

    ce_examples = data.load_split("ce", "train") if args.intensity_data == "ce" else []
    semeval_examples = data.load_split("semeval", "train") if ce_examples else []
    pool_label = {data.duplicate_key(e.text): e.label for e in semeval_examples}  # 4A label by text
    pools: dict[str, tuple[Any, set[str] | None]] = {}
    if args.text_data == "semeval":
        semeval = CachedFeatureDataset(cache, "semeval", "train", text_layer=layer, images=False, **encoders)
        usable = None
        if ce_examples:
            # Nearly every 4C tweet is also a SemEval-2016 4A tweet: trained through the pool, the
            # topic-disjoint 4C val would be seen in training.  4C brings them (with both labels) instead.
            in_ce = {data.duplicate_key(example.text) for example in ce_examples}
            usable = {example.id for example in semeval_examples if data.duplicate_key(example.text) not in in_ce}
        pools["semeval-select"] = (semeval, usable)
    if args.image_data == "mvsa":
        pools["mvsa-select"] = (
            CachedFeatureDataset(cache, "mvsa", "train", text_layer=layer, images=images, **encoders), None)
    # A tenth of each pool by id hash (one salt, so a tweet in two pools falls on the same side) is
    # selection only; whatever is selected anywhere is trained on nowhere.
    selected: set[str] = set()
    for name, (dataset, usable) in pools.items():
        ids = [item_id for item_id in dataset.text.ids if usable is None or item_id in usable]
        chosen = data.carve(ids, data.SELECT_FRACTION, "select")
        select[name] = _subset_by_id(dataset, dataset.text.ids, chosen)
        selected |= chosen
    for name, (dataset, usable) in pools.items():
        fit_ids = {item_id for item_id in dataset.text.ids
                   if (usable is None or item_id in usable) and item_id not in selected}
        fit_part: Dataset = _subset_by_id(dataset, dataset.text.ids, fit_ids)
        if name == "mvsa-select":
            if images and args.augment_views > 0:
                fit_part = _with_picture_views(cache.root, args, dataset, fit_part)
            parts.extend([fit_part] * max(1, args.image_repeat))
        else:
            parts.append(fit_part)
    if args.intensity_data == "ce":
        ce = CachedFeatureDataset(cache, "ce", "train", text_layer=layer, images=False, **encoders)
        by_id = {example.id: example for example in ce_examples}
        if any(item_id not in by_id for item_id in ce.text.ids):
            raise SystemExit("the cached ce/train features list tweets the data folder lacks; rebuild them "
                             "with `python -m model.features build --dataset ce`")
        examples = [by_id[item_id] for item_id in ce.text.ids]  # a --limit'ed cache holds a prefix
        # The class label of a 4C tweet is its SemEval 4A label where it has one (29,189 of 29,199;
        # the sign of the five-point label disagrees with it on ~21 %: 4C rates the tweet's stance
        # toward its topic, 4A the message, which is what the 3-class head and TweetEval measure).
        labelled = IntensityLabelled(
            ce, {e.id: float(e.intensity) for e in examples if e.intensity is not None},
            {e.id: pool_label[key] for e in examples if (key := data.duplicate_key(e.text)) in pool_label})
        ce_parts = data.split_ce(examples)
        for part, target in (("fit", None), ("select", select), ("val", report)):
            subset = _subset_by_id(labelled, ce.text.ids, {example.id for example in ce_parts[part]})
            if target is None:
                parts.append(subset)
            else:
                target[f"ce-{part}"] = subset
    if not parts:
        raise SystemExit("no training data selected")
    train: Dataset = ConcatDataset(parts) if len(parts) > 1 else parts[0]
    if args.train_limit is not None:
        rng = np.random.default_rng(args.seed)
        train = Subset(train, sorted(rng.choice(len(train), min(args.train_limit, len(train)), replace=False)))
    report = {
        "tweeteval-val": CachedFeatureDataset(cache, "tweeteval", "val", text_layer=layer, images=False, **encoders),
        "mvsa-dev": CachedFeatureDataset(cache, "mvsa", "dev", text_layer=layer, images=images, **encoders),
        **report,
    }
    probe = report["tweeteval-val"]
    text_dim = int(probe.text.tokens.shape[1])
    visual_dim = 1280
    mvsa_dev = report["mvsa-dev"]
    if getattr(mvsa_dev, "images", None) is not None:
        visual_dim = int(mvsa_dev.images.vectors.shape[1])
    return TrainingData(train, select, report, text_dim, visual_dim)


def _with_picture_views(cache_root: Path, args: argparse.Namespace, mvsa: Any, mvsa_fit: Dataset) -> Dataset:
    """MVSA train's fit part drawing augmented picture views (built once into the cache)."""
    from model import data
    from model.encoders import ImageEncoder
    from model.picture_views import AugmentedPictures, build_views

    examples = data.load_split("mvsa", "train")
    by_id = {example.id: example for example in examples}
    missing = [item_id for item_id in mvsa.text.ids if item_id not in by_id]
    if missing:
        raise SystemExit(f"{len(missing)} cached mvsa/train ids are not in the data folder; rebuild the cache")
    ordered = [by_id[item_id] for item_id in mvsa.text.ids]
    vectors, present = build_views(cache_root, ImageEncoder(args.image_encoder), "mvsa", "train", ordered,
                                   args.augment_views)
    views_by_id = {item_id: vectors[index] for index, item_id in enumerate(mvsa.text.ids) if present[index]}
    return AugmentedPictures(mvsa_fit, views_by_id)


def _mean_std(values: list[float]) -> str:
    array = np.asarray(values, dtype=np.float64)
    return f"{array.mean():.4f} ± {array.std(ddof=1) if len(array) > 1 else 0.0:.4f}"


def _write_metrics(out: Any, title: str, named: dict[str, dict[str, float]]) -> None:
    out.write(f"  {title}:\n")
    for name, values in named.items():
        out.write(f"    {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()) + "\n")


def _fit_seed(args: argparse.Namespace) -> FitResult:
    """One seed, in a spawned process: it loads the (memory-mapped) feature caches itself and trains
    exactly as the serial loop would, with ``args.threads`` torch threads."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s seed {args.seed} %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    loaded = load_data(args)
    weights = class_weights_for(dataset_labels(loaded.train), args.class_weights)
    config = config_from_args(args, weights, loaded.text_dim, loaded.visual_dim)
    return fit(config, loaded.train, loaded.select, args, report_ds=loaded.report)


def _fit_seeds_in_processes(args: argparse.Namespace, seeds: list[int]) -> list[FitResult]:
    """Train ``seeds`` in ``args.seed_processes`` spawned processes sharing ``args.threads``.

    Spawned, not forked: a fork after torch has started its OpenMP pool can hang the child.  The
    results come back in seed order, so the run reads and saves exactly as the serial loop's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    processes = min(args.seed_processes, len(seeds))
    per_process = []
    for seed in seeds:
        seed_args = copy.copy(args)
        seed_args.seed = seed
        seed_args.threads = max(1, args.threads // processes)
        per_process.append(seed_args)
    logger.info("training seeds %s in %d processes, %d torch thread(s) each", seeds, processes,
                per_process[0].threads)
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_fit_seed, per_process))


def run(args: argparse.Namespace) -> int:
    """Train ``args.seeds`` seeds; print each seed's selection and reported figures and the reported
    mean ± std; save the seed with the best selection score, every seed's figures recorded in it."""
    torch.set_num_threads(args.threads)
    loaded = load_data(args)
    train_ds = loaded.train
    weights = class_weights_for(dataset_labels(train_ds), args.class_weights)
    config = config_from_args(args, weights, loaded.text_dim, loaded.visual_dim)
    logger.info("training on %d examples (selection: %s); class weights %s; config %s", len(train_ds),
                {name: len(ds) for name, ds in loaded.select.items()}, weights, config)  # type: ignore[arg-type]
    first_seed = args.seed
    seeds = list(range(first_seed, first_seed + args.seeds))
    out = sys.stdout
    if args.seed_processes > 1 and len(seeds) > 1:
        results = _fit_seeds_in_processes(args, seeds)
    else:
        results = []
        for seed in seeds:
            args.seed = seed
            results.append(fit(config, train_ds, loaded.select, args, report_ds=loaded.report))
        args.seed = first_seed
    for seed, result in zip(seeds, results, strict=True):
        out.write(f"seed {seed}: best epoch {result.best_epoch}, selection score {result.best_score:.4f}, "
                  f"{result.seconds / 60:.1f} min\n")
        _write_metrics(out, "selection (chose the epoch)", result.val_metrics())
        _write_metrics(out, "reported (scored once)", result.report_metrics())
    reported = {name: {k: [r.report_results[name].metrics[k] for r in results] for k in res.metrics}
                for name, res in results[0].report_results.items()}
    if len(results) > 1:
        out.write(f"reported, mean ± std over {len(results)} seeds:\n")
        for name, values in reported.items():
            out.write(f"  {name}: " + ", ".join(f"{k} {_mean_std(v)}" for k, v in values.items()) + "\n")
    if args.out is not None:
        from model import checkpoint

        best = max(results, key=lambda r: r.best_score)
        version = checkpoint.save(
            args.out, best.net, config, metrics=best.report_metrics(),
            extra={"command": getattr(args, "command_line", None) or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                   "seeds": seeds, "chosen_seed": seeds[results.index(best)], "best_epoch": best.best_epoch,
                   "chosen_by": "selection score on " + ", ".join(loaded.select),
                   "per_seed": [{"seed": seed, "best_epoch": r.best_epoch, "selection_score": r.best_score,
                                 "selection": r.val_metrics(), "reported": r.report_metrics()}
                                for seed, r in zip(seeds, results, strict=True)],
                   "per_seed_metrics": reported, "history": best.history,
                   "train_examples": len(train_ds)})  # type: ignore[arg-type]
        out.write(f"saved {args.out} ({version})\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    # As it is typed: `python -m model.train ...` (sys.argv[0] is then the file's path, not the command).
    args.command_line = shlex.join(["python", "-m", "model.train", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
