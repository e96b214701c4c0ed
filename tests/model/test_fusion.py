"""Every fusion: shapes, presence masks, and learning on a tiny set of real MVSA tweets."""

import pytest
import torch

from model.config import ModelConfig
from model.fusion import ContextNorm, build_fusion
from model.network import SentimentNet
from tests.model.real_features import tiny_real_batch

torch.set_num_threads(2)

FUSIONS = ["concat", "gmu", "lowrank", "crossattn"]
DIMS = [512, 256, 256]


def _inputs(batch_size: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    contexts = [torch.randn(batch_size, d, generator=generator) for d in DIMS]
    sequences = [
        (torch.randn(batch_size, 6, DIMS[0], generator=generator), torch.ones(batch_size, 6, dtype=torch.bool)),
        (torch.randn(batch_size, 1, DIMS[1], generator=generator), torch.ones(batch_size, 1, dtype=torch.bool)),
        (torch.randn(batch_size, 8, DIMS[2], generator=generator), torch.ones(batch_size, 8, dtype=torch.bool)),
    ]
    present = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.bool)[:batch_size]
    for index, context in enumerate(contexts):  # the network zeroes absent contexts before fusion
        context *= present[:, index : index + 1]
    return contexts, sequences, present


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_shapes_and_modality_weights(fusion):
    torch.manual_seed(0)
    module = build_fusion(ModelConfig(fusion=fusion, modalities=("text", "visual", "audio")), DIMS, DIMS).eval()
    contexts, sequences, present = _inputs()
    fused, weights = module(contexts, sequences, present)
    assert fused.shape == (5, 128) and weights.shape == (5, 3)
    assert torch.isfinite(fused).all() and torch.isfinite(weights).all()  # even the row with nothing present
    assert torch.all(weights[~present] == 0)
    assert torch.allclose(weights[:4].sum(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(weights[1], torch.tensor([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_what_sits_in_an_absent_slot_cannot_change_the_result(fusion):
    torch.manual_seed(0)
    module = build_fusion(ModelConfig(fusion=fusion, modalities=("text", "visual", "audio")), DIMS, DIMS).eval()
    contexts, sequences, present = _inputs()
    reference = module(contexts, sequences, present)[0]
    # fill every absent modality's sequence with garbage; contexts stay zero as the network makes them
    noisy = []
    for index, (sequence, mask) in enumerate(sequences):
        absent_rows = ~present[:, index]
        sequence = sequence.clone()
        sequence[absent_rows] = 1e3
        noisy.append((sequence, mask))
    assert torch.equal(module(contexts, noisy, present)[0], reference)


def test_gmu_gates_follow_the_inputs():
    torch.manual_seed(0)
    module = build_fusion(ModelConfig(fusion="gmu", modalities=("text", "visual", "audio")), DIMS, DIMS).eval()
    contexts, sequences, present = _inputs()
    _, weights = module(contexts, sequences, present)
    other = [c * 3 for c in contexts]
    _, weights_other = module(other, sequences, present)
    assert not torch.allclose(weights[0], weights_other[0])  # learned gates, not a constant split


def test_context_norm_l2_and_masked_batch_norm():
    context = torch.randn(6, 16) * 5 + 2
    present = torch.tensor([True, True, True, False, True, False])
    l2 = ContextNorm("l2", 16)
    out = l2(context, present)
    assert torch.allclose(out[present].norm(dim=1), torch.full((4,), 4.0), atol=1e-4)  # scale sqrt(16)
    assert torch.all(out[~present] == 0)
    batch_norm = ContextNorm("batch", 16).train()
    out = batch_norm(context, present)
    assert torch.all(out[~present] == 0)
    assert torch.allclose(out[present].mean(dim=0), torch.zeros(16), atol=1e-5)  # stats of present rows only
    batch_norm.eval()
    single = batch_norm(context[:1], present[:1])  # one row in eval mode: running stats, no error
    assert single.shape == (1, 16) and torch.isfinite(single).all()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_fusion_learns_a_tiny_real_subset(fusion):
    """36 shipped tweets (half with their picture): 30 AdamW steps must cut the loss clearly.

    A narrow network (same structure, fewer units) keeps this cheap on a shared 2-core CPU."""
    torch.manual_seed(0)
    batch = tiny_real_batch()
    net = SentimentNet(ModelConfig(fusion=fusion, dropout=0.1, cnn_filters=32, text_hidden=64, visual_hidden=32,
                                   fusion_dim=128, head_dim=64, attention_dim=32, crossattn_dim=64))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.eval()
    with torch.no_grad():
        first = float(net(batch).loss)
    net.train()
    for _ in range(30):
        optimizer.zero_grad()
        loss = net(batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
    net.eval()
    with torch.no_grad():
        out = net(batch)
    last = float(out.loss)
    assert last < 0.5 * first, (first, last)
    accuracy = float((out.logits.argmax(dim=1) == batch["label"]).float().mean())
    assert accuracy > 0.9
    # posts with a picture report a visual weight, text-only posts none
    has_picture = batch["visual_mask"][:, 0]
    assert torch.all(out.modality_weights[~has_picture, 1] == 0)
    assert torch.all(out.modality_weights[has_picture, 1] > 0)
