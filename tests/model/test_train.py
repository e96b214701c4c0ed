"""The trainer: batching, schedule, optimiser groups, fit/early stopping, and the CLI end to end."""

import math

import numpy as np
import pytest
import torch

from model import checkpoint
from model import train as training
from model.config import ModelConfig
from model.network import SentimentNet
from tests.fixtures.mini_data import mini_data_dir
from tests.model.real_features import encoders, tiny_real_items

torch.set_num_threads(2)

SMALL = {"cnn_filters": 32, "text_hidden": 64, "visual_hidden": 32, "fusion_dim": 128, "head_dim": 64,
         "attention_dim": 32}
"""Same structure, fewer units: keeps fit() tests cheap on a shared 2-core CPU."""


def test_length_buckets_cover_every_item_once_in_similar_length_batches():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    sampler = training.LengthBucketSampler(lengths, batch_size=16, seed=0, pool_batches=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(1000 / 16)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # random batches would spread ~50 tokens
    assert [b for b in sampler] != batches  # a new order each epoch


def test_warmup_then_cosine():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = training.warmup_cosine(optimizer, warmup_steps=10, total_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5, abs=0.02)  # half-way through the cosine
    assert lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_class_weights():
    labels = np.array([0] * 10 + [1] * 30 + [2] * 60)
    balanced = training.class_weights_for(labels, "balanced")
    assert balanced[0] > balanced[1] > balanced[2]
    counts = np.bincount(labels)
    assert float(np.dot(balanced, counts)) == pytest.approx(len(labels), rel=1e-3)  # mean weight 1
    sqrt = training.class_weights_for(labels, "sqrt")
    assert balanced[0] / balanced[2] > sqrt[0] / sqrt[2] > 1
    assert training.class_weights_for(labels, "none") is None


def test_encoder_top_reproduces_the_encoder_and_gets_layerwise_learning_rates():
    from model.encoder_top import EncoderTop

    text_encoder, _ = encoders()
    tokens = text_encoder.tokenize(["not bad at all", "the worst queue ever, two hours"])
    with torch.inference_mode():
        hidden4 = text_encoder.hidden_at(tokens["input_ids"], tokens["attention_mask"], 4)
        expected = text_encoder(tokens["input_ids"], tokens["attention_mask"])
    top = EncoderTop.from_encoder(text_encoder, 2)
    with torch.inference_mode():
        got = top(hidden4, tokens["attention_mask"].bool())
    mask = tokens["attention_mask"].bool()
    assert torch.allclose(got[mask], expected[mask], atol=1e-4)
    assert all(p.requires_grad for p in top.parameters())
    # the copies are trainable without touching the frozen encoder
    assert top.layers[0] is not text_encoder.model.encoder.layer[4]

    net = SentimentNet(ModelConfig(finetune_layers=2, **SMALL), encoder_top=top)
    optimizer = training.make_optimizer(net, lr=1e-4, encoder_lr=2e-5, layer_decay=0.8, weight_decay=1e-5)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates["network"] == 1e-4
    assert rates["encoder-top-0"] == pytest.approx(2e-5) and rates["encoder-top-1"] == pytest.approx(1.6e-5)
    in_groups = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert in_groups == sum(p.numel() for p in net.parameters())  # every parameter exactly once


def test_fit_keeps_the_best_epoch_and_returns_predictions_in_dataset_order():
    items = list(tiny_real_items())
    train_items, val_items = items[::2] + items[1::4], items[1::2]
    args = training.default_fit_args(epochs=3, batch_size=8, eval_batch_size=7, lr=1e-3, warmup_steps=2,
                                     log_dir=None, progress=False, device="cpu")
    result = training.fit(ModelConfig(**SMALL), train_items, {"a": val_items, "b": val_items[:9]}, args)
    assert len(result.history) == 3
    scores = [record["score"] for record in result.history]
    assert result.best_epoch == 1 + int(np.argmax(scores)) and result.best_score == max(scores)
    assert set(result.val_results) == {"a", "b"}
    assert result.val_results["a"].labels.tolist() == [item["label"] for item in val_items]
    assert result.val_results["a"].probabilities.shape == (len(val_items), 3)
    # the returned network carries the best state
    for key, value in result.net.state_dict().items():
        assert torch.equal(value, result.best_state[key])
    again = training.evaluate(result.net, training.make_loader(val_items, 5, train=False), torch.device("cpu"))
    assert np.array_equal(again.predictions, result.val_results["a"].predictions)
    assert set(result.val_results["a"].metrics) >= {"accuracy", "macro_recall", "macro_f1", "weighted_f1",
                                                    "intensity_mae_proxy", "intensity_ccc_proxy"}


def test_training_loss_falls_and_early_stopping_stops():
    items = list(tiny_real_items())
    args = training.default_fit_args(epochs=8, batch_size=12, lr=2e-3, warmup_steps=1, log_dir=None,
                                     progress=False, device="cpu")
    result = training.fit(ModelConfig(**SMALL), items, items, args)
    losses = [record["train_loss"] for record in result.history]
    assert losses[-1] < losses[0]
    frozen = training.default_fit_args(epochs=8, batch_size=12, lr=0.0, patience=2, log_dir=None,
                                       progress=False, device="cpu")
    stopped = training.fit(ModelConfig(**SMALL), items, items, frozen)
    assert len(stopped.history) == 3  # epoch 1 best, two more without improvement
    assert stopped.best_epoch == 1


def test_train_command_end_to_end(tmp_path, capsys, monkeypatch):
    """Tiny feature caches built by model.features, then the real command: 2 seeds, a checkpoint, TensorBoard.

    Over the miniature data folder, so it runs on a fresh clone."""
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    from model import features
    from model.scorer import ScoreInput, Scorer

    cache = tmp_path / "cache"
    assert features.main(["build", "--all", "--limit", "24", "--cache-dir", str(cache), "--threads", "2"]) == 0
    out = tmp_path / "model.pt"
    runs = tmp_path / "runs"
    argv = ["--cache-dir", str(cache), "--epochs", "2", "--seeds", "2", "--batch-size", "8", "--out", str(out),
            "--log-dir", str(runs), "--no-progress", "--text-hidden", "32", "--threads", "2"]
    assert training.main(argv) == 0
    printed = capsys.readouterr().out
    assert "mean ± std over 2 seeds" in printed and "tweeteval-val" in printed and "mvsa-dev" in printed
    assert len(list(runs.rglob("events.out.tfevents.*"))) == 2
    net, config, meta = checkpoint.load(out)
    assert config.text_hidden == 32 and config.class_weights is not None
    assert meta["extra"]["seeds"] == [0, 1] and "--seeds 2" in meta["extra"]["command"]
    assert len(meta["extra"]["per_seed_metrics"]["mvsa-dev"]["accuracy"]) == 2
    text_encoder, image_encoder = encoders()
    result = Scorer.from_checkpoint(out, device="cpu", text_encoder=text_encoder,
                                    image_encoder=image_encoder).score([ScoreInput("fine")])
    assert result[0].model_version == meta["model_version"]


def test_seeds_trained_in_parallel_processes_match_the_serial_run(tmp_path, capsys, monkeypatch):
    """--seed-processes trains each seed in its own spawned process; with the same torch threads per
    seed the figures are the serial loop's, seed for seed, and the checkpoint records them alike."""
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    from model import features

    cache = tmp_path / "cache"
    assert features.main(["build", "--all", "--limit", "24", "--cache-dir", str(cache), "--threads", "2"]) == 0
    common = ["--cache-dir", str(cache), "--epochs", "2", "--seeds", "2", "--batch-size", "8", "--log-dir", "",
              "--no-progress", "--text-hidden", "32", "--augment-views", "0"]
    serial, parallel = tmp_path / "serial.pt", tmp_path / "parallel.pt"
    assert training.main([*common, "--threads", "1", "--out", str(serial)]) == 0
    assert training.main([*common, "--threads", "2", "--seed-processes", "2", "--out", str(parallel)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("seed 1: best epoch") == 2
    extras = [checkpoint.load(path)[2]["extra"] for path in (serial, parallel)]
    assert [entry["seed"] for entry in extras[1]["per_seed"]] == [0, 1]
    for one, other in zip(extras[0]["per_seed"], extras[1]["per_seed"], strict=True):
        assert one["best_epoch"] == other["best_epoch"]
        assert one["selection_score"] == pytest.approx(other["selection_score"], abs=1e-6)
        assert one["reported"]["tweeteval-val"] == pytest.approx(other["reported"]["tweeteval-val"], abs=1e-6)
    assert extras[0]["chosen_seed"] == extras[1]["chosen_seed"]


def test_model_cli_routes_train_with_its_own_options(capsys):
    from model import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--fusion" in capsys.readouterr().out
    parser = training.get_args_parser()
    args = parser.parse_args(["--fusion", "gmu", "--no-text-cnn", "--pooling", "max"])
    config = training.config_from_args(args, None)
    assert (config.fusion, config.text_cnn, config.pooling) == ("gmu", False, "max")


@pytest.mark.skipif(not checkpoint.DEFAULT_CHECKPOINT.exists(), reason="default checkpoint not trained yet")
def test_training_defaults_build_the_shipped_network():
    """`model train` without options trains the network that ships (fusion, heads, loss weights), so a
    user retraining on their own data starts from the recipe the model card reports, not an older one."""
    shipped = ModelConfig.from_dict(checkpoint.read_payload()["config"])
    defaults = training.config_from_args(training.get_args_parser().parse_args([]), shipped.class_weights,
                                         text_dim=shipped.text_dim, visual_dim=shipped.visual_dim)
    assert defaults == shipped
