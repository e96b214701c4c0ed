"""Multitask training: masked losses, real-intensity batches, honest selection, encoders from the config,
augmented picture views, and the train command end to end with five-point data."""

import numpy as np
import pytest
import torch

from model import checkpoint
from model import train as training
from model.config import ModelConfig
from model.network import SentimentNet
from model.picture_views import AugmentedPictures, build_views
from tests.fixtures.mini_data import mini_data_dir
from tests.model.real_features import encoders, tiny_real_items

torch.set_num_threads(2)

SMALL = {"cnn_filters": 32, "text_hidden": 64, "visual_hidden": 32, "fusion_dim": 128, "head_dim": 64,
         "attention_dim": 32}


def _items_with_intensity(every: int = 2) -> list[dict]:
    """The tiny real items; every ``every``-th gets a five-point-derived intensity, the rest none."""
    table = {0: -3.0, 1: 0.0, 2: 1.5}
    return [{**item, "intensity": table[item["label"]] if index % every == 0 else None}
            for index, item in enumerate(tiny_real_items())]


def _batch(items):
    return training.make_loader(items, len(items), train=False).collate_fn(items)


def test_rows_without_intensity_do_not_touch_the_intensity_loss():
    torch.manual_seed(0)
    net = SentimentNet(ModelConfig(intensity_weight=1.0, **SMALL)).eval().requires_grad_(False)
    items = _items_with_intensity()
    batch = _batch(items)
    assert batch["intensity_mask"].tolist() == [index % 2 == 0 for index in range(len(items))]
    base = float(net(batch).loss)
    changed = dict(batch, intensity=batch["intensity"].clone())
    changed["intensity"][~batch["intensity_mask"]] = 2.5  # a masked row's value must not count
    assert float(net(changed).loss) == pytest.approx(base, abs=1e-6)
    changed["intensity"][batch["intensity_mask"]] += 1.0  # a real row's value must
    assert abs(float(net(changed).loss) - base) > 1e-3
    without_class = dict(batch, label=batch["label"].clone())
    without_class["label"][1::2] = -1  # rows with intensity only: their class loss is masked
    output = net(without_class)
    assert torch.isfinite(output.loss)
    assert float(output.loss) != pytest.approx(base)


def test_no_intensity_rows_anywhere_means_no_intensity_gradient():
    net = SentimentNet(ModelConfig(intensity_weight=1.0, **SMALL))
    batch = _batch([{**item, "intensity": None} for item in tiny_real_items()])
    net(batch).loss.backward()
    assert net.intensity_head.weight.grad is None or float(net.intensity_head.weight.grad.abs().sum()) == 0.0
    proxy = SentimentNet(ModelConfig(intensity_weight=1.0, **SMALL))
    plain = training.make_loader(list(tiny_real_items()), 36, train=False).collate_fn(list(tiny_real_items()))
    assert "intensity" not in plain  # no 4C data at all: the older proxy target still applies
    proxy(plain).loss.backward()
    assert float(proxy.intensity_head.weight.grad.abs().sum()) > 0


def test_multitask_fit_learns_intensity_and_reports_once_on_the_chosen_state():
    items = _items_with_intensity(every=1)
    train_items, select_items, report_items = items[::2] + items[1::4], items[1::4], items[3::4]
    args = training.default_fit_args(epochs=3, batch_size=6, lr=2e-3, warmup_steps=1, log_dir=None,
                                     progress=False, device="cpu", seed=0)
    config = ModelConfig(intensity_weight=1.0, **SMALL)
    result = training.fit(config, train_items, {"select": select_items}, args, report_ds={"report": report_items})
    scores = [record["score"] for record in result.history]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    selection = result.val_results["select"].metrics
    assert result.best_score == pytest.approx(1 - selection["intensity_macro_mae"] / 4)
    assert set(result.report_results) == {"report"}
    assert "report/accuracy" not in result.history[0]  # never looked at while choosing
    again = training.evaluate(result.net, training.make_loader(report_items, 5, train=False), torch.device("cpu"))
    assert np.allclose(again.intensity, result.report_results["report"].intensity)
    assert set(result.report_metrics()["report"]) >= {"intensity_macro_mae", "intensity_mae", "intensity_ccc"}
    targets = result.report_results["report"].intensity_target
    assert targets.tolist() == [item["intensity"] for item in report_items]


def test_picture_views_are_seeded_cached_and_drawn(tmp_path):
    from model import data

    _, image_encoder = encoders()
    examples = data.load_mvsa("train", root=mini_data_dir())[:4]
    examples.append(data.Example("no-picture", "text only", 1, tmp_path / "missing.jpg", data.MVSA))
    vectors, present = build_views(tmp_path, image_encoder, "mvsa", "train", examples, views=3, seed=7)
    assert vectors.shape == (5, 3, image_encoder.dim) and present.tolist() == [True] * 4 + [False]
    assert not np.allclose(vectors[0, 0], vectors[0, 1])  # different crops/flips
    again, _ = build_views(tmp_path, image_encoder, "mvsa", "train", examples, views=3, seed=7)
    assert np.array_equal(np.asarray(again), vectors)  # read back, not rebuilt
    (tmp_path / "image-views" / image_encoder.name / "mvsa-train" / "meta.json").unlink()
    rebuilt, _ = build_views(tmp_path, image_encoder, "mvsa", "train", examples, views=3, seed=7)
    assert np.allclose(np.asarray(rebuilt, dtype=np.float32), vectors.astype(np.float32), atol=1e-2)
    items = [{"text": torch.zeros(2, 4), "image": torch.zeros(1, image_encoder.dim), "label": 1, "id": e.id}
             for e in examples[:2]]
    augmented = AugmentedPictures(items, {examples[0].id: vectors[0]})
    drawn = {tuple(augmented[0]["image"][0, :3].tolist()) for _ in range(30)}
    assert len(drawn) > 1
    assert drawn <= {tuple(np.asarray(view[:3], dtype=np.float32).tolist()) for view in vectors[0]}
    assert torch.equal(augmented[1]["image"], items[1]["image"])  # no views: the cached picture


def test_named_text_encoder_that_is_not_on_disk_fails_clearly():
    from model.encoders import TextEncoder

    with pytest.raises(FileNotFoundError, match="not available offline"):
        TextEncoder("sentistream-test/no-such-encoder")
    assert TextEncoder.cache_name(None) == TextEncoder.cache_name("all-MiniLM-L6-v2") == "minilm-l6"


def test_scorer_loads_the_encoder_the_checkpoint_names(tmp_path):
    from model.scorer import Scorer

    text_encoder, image_encoder = encoders()
    net = SentimentNet(ModelConfig(**SMALL))
    named = tmp_path / "named.pt"
    checkpoint.save(named, net, ModelConfig(text_encoder="sentistream-test/no-such-encoder", **SMALL))
    with pytest.raises(FileNotFoundError, match="no-such-encoder"):
        Scorer.from_checkpoint(named, device="cpu", image_encoder=image_encoder)
    with pytest.raises(ValueError, match="not the checkpoint's"):
        Scorer.from_checkpoint(named, device="cpu", text_encoder=text_encoder, image_encoder=image_encoder)
    plain = tmp_path / "plain.pt"
    checkpoint.save(plain, net, ModelConfig(**SMALL))
    scorer = Scorer.from_checkpoint(plain, device="cpu", image_encoder=image_encoder)
    assert scorer.text_encoder.name == "minilm-l6"


def test_train_command_with_five_point_data_records_every_seed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    from model import features

    cache = tmp_path / "cache"
    assert features.main(["build", "--all", "--cache-dir", str(cache), "--threads", "2"]) == 0
    out = tmp_path / "model.pt"
    argv = ["--cache-dir", str(cache), "--epochs", "2", "--seeds", "2", "--batch-size", "8", "--out", str(out),
            "--log-dir", "", "--no-progress", "--text-hidden", "32", "--threads", "2", "--augment-views", "2",
            "--intensity-weight", "0.5"]
    assert training.main(argv) == 0
    printed = capsys.readouterr().out
    assert "selection (chose the epoch)" in printed and "reported (scored once)" in printed
    assert "ce-val: " in printed and "intensity_macro_mae" in printed
    _, config, meta = checkpoint.load(out)
    assert (config.text_encoder, config.visual_encoder, config.text_dim) == ("minilm-l6", "efficientnet_lite0", 384)
    extra = meta["extra"]
    assert extra["seeds"] == [0, 1] and [entry["seed"] for entry in extra["per_seed"]] == [0, 1]
    assert extra["chosen_seed"] in (0, 1) and "semeval-select" in extra["chosen_by"]
    assert set(extra["per_seed"][0]["selection"]) == {"semeval-select", "mvsa-select", "ce-select"}
    assert set(extra["per_seed"][0]["reported"]) == {"tweeteval-val", "mvsa-dev", "ce-val"}
    assert len(extra["per_seed_metrics"]["ce-val"]["intensity_macro_mae"]) == 2
    assert set(meta["metrics"]) == {"tweeteval-val", "mvsa-dev", "ce-val"}
    assert (cache / "image-views" / "efficientnet_lite0" / "mvsa-train" / "views2.npy").is_file()
    # the same cache as load_data serves it: fit and selection parts disjoint, 4C val only reported,
    # and fine-tuning reads the input of the encoder's top k layers (MiniLM-L6: layer 6 - 2)
    loaded = training.load_data(training.default_fit_args(cache_dir=cache, augment_views=0, finetune_layers=2))
    train_ids = {loaded.train[i]["id"] for i in range(len(loaded.train))}
    for name, part in {**loaded.select, "ce-val": loaded.report["ce-val"]}.items():
        ids = {part[i]["id"] for i in range(len(part))}
        assert ids and not ids & train_ids, name
    assert str(loaded.report["tweeteval-val"].text.tokens.filename).endswith("layer4.npy")
    # a 4C tweet takes its SemEval 4A class label where the pool has one; its intensity stays
    cached = loaded.report["ce-val"].dataset.dataset
    first, second = cached.text.ids[:2]
    flipped = (cached.labels[0] + 1) % 3
    relabelled = training.IntensityLabelled(cached, {first: 3.0}, {first: flipped})
    assert relabelled.labels[:2] == [flipped, cached.labels[1]]
    assert (relabelled[0]["label"], relabelled[0]["intensity"]) == (flipped, 3.0)
    assert (relabelled[1]["label"], relabelled[1]["intensity"]) == (cached.labels[1], None)
