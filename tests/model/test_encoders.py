import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from model.encoders import ImageEncoder

torch.set_num_threads(2)

# ImageNet class indices 281..285: tabby, tiger cat, Persian, Siamese, Egyptian cat.
IMAGENET_CATS = set(range(281, 286))


def test_minilm_loads_offline_and_gives_token_vectors(text_encoder):
    assert (text_encoder.dim, text_encoder.num_layers) == (384, 6)
    batch = text_encoder.tokenize(["What a great day @friend http://t.co/x", "meh"])
    with torch.inference_mode():
        tokens = text_encoder(**batch)
    assert tokens.shape == (2, batch["input_ids"].shape[1], 384)
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # padding is masked
    words = text_encoder.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert "http" in words and "user" in words  # normalised before tokenising


def test_long_posts_are_truncated_and_emoji_spelled_out(text_encoder):
    batch = text_encoder.tokenize(["ok " * 3000, "\U0001f602\U0001f602"])
    assert batch["input_ids"].shape[1] == text_encoder.max_length
    words = text_encoder.tokenizer.convert_ids_to_tokens(batch["input_ids"][1])
    assert "joy" in words and text_encoder.tokenizer.unk_token not in words


def test_forward_from_a_cached_layer_reproduces_the_last_layer(text_encoder):
    batch = text_encoder.tokenize(["I hate waiting in line", "best concert ever, thank you!!"])
    with torch.inference_mode():
        last = text_encoder(**batch)
        layer4 = text_encoder.hidden_at(**batch, layer=4)
        rebuilt = text_encoder.forward_from(layer4, batch["attention_mask"], layer=4)
    assert not torch.allclose(layer4, last)
    torch.testing.assert_close(rebuilt, last, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        text_encoder.hidden_at(**batch, layer=7)


def test_efficientnet_weights_classify_a_cat_as_a_cat(image_encoder):
    pixels = image_encoder.transform(Image.fromarray(skimage_data.chelsea())).unsqueeze(0)
    assert pixels.shape == (1, 3, 224, 224)
    assert -1.0 <= pixels.min() and pixels.max() <= 1.0  # (x - 127) / 128 range
    with torch.inference_mode():
        logits = image_encoder.backbone.classify(pixels)
        features = image_encoder(pixels)
    assert int(logits.argmax()) in IMAGENET_CATS
    assert features.shape == (1, 1280)


def test_transform_handles_grayscale_and_randomises_only_in_training(image_encoder):
    gray = Image.fromarray(skimage_data.camera())  # mode "L"
    assert image_encoder.transform(gray).shape == (3, 224, 224)
    cat = Image.fromarray(skimage_data.chelsea())
    torch.testing.assert_close(image_encoder.transform(cat), image_encoder.transform(cat))
    torch.manual_seed(0)
    augmented = [image_encoder.transform(cat, train=True) for _ in range(3)]
    assert all(view.shape == (3, 224, 224) for view in augmented)
    assert not torch.equal(augmented[0], augmented[1])


def test_gradcam_layer_yields_the_last_feature_map(image_encoder):
    captured = []
    handle = image_encoder.gradcam_layer().register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        with torch.inference_mode():
            image_encoder(torch.zeros(2, 3, 224, 224))
    finally:
        handle.remove()
    assert captured[0].shape == (2, 1280, 7, 7)


def test_unknown_image_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown image encoder"):
        ImageEncoder("vgg-nonexistent")
