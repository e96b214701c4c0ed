"""int8 dynamic quantisation of the text encoder (SENTISTREAM_TEXT_INT8): really quantised, and its
verdicts stay close to the fp32 encoder's on real tweets (the recall cost is measured in bench/)."""

from __future__ import annotations

import torch

from model.scorer import ScoreInput, Scorer
from tests.fixtures.mini_data import fixture_tweets
from tests.model.verdict_agreement import agreement_and_drift

torch.set_num_threads(2)


def test_int8_text_encoder_is_quantised_and_agrees_with_fp32_on_most_tweets() -> None:
    texts = [t.raw_text for t in fixture_tweets()]
    fp32 = Scorer.from_checkpoint(device="cpu", encoder_runtime="torch")
    int8 = Scorer.from_checkpoint(device="cpu", text_int8=True, encoder_runtime="torch")
    assert int8.text_encoder.int8 and not fp32.text_encoder.int8
    kinds = {type(m).__module__ for m in int8.text_encoder.modules()}
    assert any("quantized" in k for k in kinds), kinds
    a = fp32.score([ScoreInput(t) for t in texts])
    b = int8.score([ScoreInput(t) for t in texts])
    agree, drift = agreement_and_drift(a, b)
    assert agree >= 0.85, f"int8 agrees with fp32 on only {agree:.0%} of {len(texts)} tweets"
    assert 0 < drift < 0.5  # quantised (not identical), not broken
