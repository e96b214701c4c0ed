import dataclasses
import json

import numpy as np
import pytest
import torch

from model.data import Example, load_mvsa, load_tweeteval_val
from model.features import (
    CachedFeatureDataset,
    FeatureCache,
    collate_features,
    default_cache_root,
    main,
)
from tests.fixtures.mini_data import mini_data_dir

torch.set_num_threads(2)

@pytest.fixture(scope="module")
def val_examples() -> list[Example]:
    return load_tweeteval_val(root=mini_data_dir())[:12]


def test_cache_root_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SENTISTREAM_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c"
    assert FeatureCache().root == tmp_path / "c"


def test_cached_tokens_match_a_fresh_encoder_pass(tmp_path, text_encoder, val_examples):
    cache = FeatureCache(tmp_path)
    meta = cache.build_text(text_encoder, "tweeteval", "val", val_examples, layers=(None, 4), batch_size=5)
    assert meta["layers"] == [4, 6] and meta["count"] == len(val_examples)
    last, layer4 = cache.load_text("tweeteval", "val"), cache.load_text("tweeteval", "val", layer=4)
    assert last.ids == [example.id for example in val_examples]
    assert last.labels == [example.label for example in val_examples]
    for index in (0, 5, 11):  # batches are length-sorted; rows must still be in example order
        batch = text_encoder.tokenize([val_examples[index].text])
        with torch.inference_mode():
            expected_last = text_encoder(**batch)[0]
            expected_4 = text_encoder.hidden_at(**batch, layer=4)[0]
        cached = torch.from_numpy(np.asarray(last.example(index), dtype=np.float32))
        assert cached.shape == expected_last.shape  # trimmed to the mask, no padding rows
        torch.testing.assert_close(cached, expected_last, atol=2e-2, rtol=1e-2)
        cached_4 = torch.from_numpy(np.asarray(layer4.example(index), dtype=np.float32))
        torch.testing.assert_close(cached_4, expected_4, atol=2e-2, rtol=1e-2)
    assert last.tokens.dtype == np.float16


def test_second_build_is_instant_and_changed_examples_rebuild(tmp_path, text_encoder, val_examples):
    cache = FeatureCache(tmp_path)
    cache.build_text(text_encoder, "tweeteval", "val", val_examples[:4])
    folder = cache.text_dir(text_encoder.name, "tweeteval", "val")
    stamp = (folder / "layer6.npy").stat().st_mtime_ns
    cache.build_text(text_encoder, "tweeteval", "val", val_examples[:4])
    assert (folder / "layer6.npy").stat().st_mtime_ns == stamp
    edited = [dataclasses.replace(val_examples[0], text="a different tweet"), *val_examples[1:4]]
    cache.build_text(text_encoder, "tweeteval", "val", edited)
    assert (folder / "layer6.npy").stat().st_mtime_ns != stamp
    with pytest.raises(FileNotFoundError, match="layer-4"):
        cache.load_text("tweeteval", "val", layer=4)


def test_pictures_are_cached_and_a_corrupt_one_is_marked_absent(tmp_path, text_encoder, image_encoder):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 definitely not a jpeg")
    examples = load_mvsa("dev", root=mini_data_dir())[:3]
    examples.append(dataclasses.replace(examples[0], id="broken", image_path=corrupt))
    cache = FeatureCache(tmp_path / "cache")
    cache.build_text(text_encoder, "mvsa", "dev", examples)
    cache.build_images(image_encoder, "mvsa", "dev", examples, batch_size=2)
    images = cache.load_images("mvsa", "dev")
    assert images.present.tolist() == [True, True, True, False]
    assert images.vectors.shape == (4, 1280) and not images.vectors[3].any()
    assert np.abs(np.asarray(images.vectors[0], dtype=np.float32)).sum() > 0

    dataset = CachedFeatureDataset(cache, "mvsa", "dev")
    items = [dataset[index] for index in range(len(dataset))]
    assert items[0]["image"].shape == (1, 1280) and items[3]["image"] is None
    assert [item["label"] for item in items] == [example.label for example in examples]
    batch = collate_features(items)
    assert batch["visual"].shape == (4, 1, 1280)
    assert batch["visual_mask"][:, 0].tolist() == [True, True, True, False]
    assert batch["present"].tolist() == [[True, True, False]] * 3 + [[True, False, False]]
    assert not batch["visual"][3].any()


def test_collate_pads_text_and_gives_text_only_posts_an_empty_image_slot():
    items = [
        {"text": torch.ones(3, 384), "image": None, "label": 2, "id": "a"},
        {"text": torch.full((5, 384), 2.0), "image": None, "label": 0, "id": "b"},
    ]
    batch = collate_features(items)
    assert batch["text"].shape == (2, 5, 384)
    assert batch["text_mask"].sum(dim=1).tolist() == [3, 5]
    assert not batch["text"][0, 3:].any()
    assert batch["visual"].shape == (2, 1, 1280) and not batch["visual_mask"].any()
    assert batch["present"].tolist() == [[True, False, False], [True, False, False]]
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [2, 0]
    assert "intensity" not in batch
    with pytest.raises(ValueError):
        collate_features([])


def test_text_only_split_serves_no_images(tmp_path, text_encoder, val_examples):
    cache = FeatureCache(tmp_path)
    cache.build_text(text_encoder, "tweeteval", "val", val_examples[:3])
    dataset = CachedFeatureDataset(cache, "tweeteval", "val")
    assert len(dataset) == 3 and dataset.labels == [example.label for example in val_examples[:3]]
    assert dataset[0]["image"] is None and dataset[0]["text"].shape[1] == 384
    with pytest.raises(FileNotFoundError, match="python -m model.features build"):
        CachedFeatureDataset(cache, "mvsa", "train")


def test_command_line_builds_a_small_split(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    assert main(["build", "--dataset", "tweeteval", "--limit", "6", "--cache-dir", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "text" / "minilm-l6" / "tweeteval-val" / "meta.json").read_text())
    assert meta["count"] == 6 and meta["layers"] == [4, 6] and meta["texts_per_second"] > 0
    assert "tweeteval/val" in capsys.readouterr().out
