"""Accuracy on labelled images: the figures equal an independent computation."""

from __future__ import annotations

import math

import pytest
import torch

from resbench.engine import evaluate


def _exact_mcnemar(lost: int, gained: int) -> float:
    """Two-sided exact binomial p by summing the outcomes as likely as the one seen, or less."""
    n = lost + gained
    if n == 0:
        return 1.0
    pk = [math.comb(n, k) / 2**n for k in range(n + 1)]
    return min(1.0, sum(p for p in pk if p <= pk[lost] * (1 + 1e-7)))


def test_every_accuracy_field_equals_a_plain_loop():
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 10, (400,), generator=gen)
    ref = torch.randn(400, 10, generator=gen)
    ref[torch.arange(400)[:300], labels[:300]] += 4  # fp32: right on 300 of them, about
    out = ref + 0.8 * torch.randn(400, 10, generator=gen)  # a noisy row: some flips
    got = evaluate.compare(out, ref, labels)

    right = [int(out[i].argmax()) == int(labels[i]) for i in range(400)]
    ref_right = [int(ref[i].argmax()) == int(labels[i]) for i in range(400)]
    top5 = [int(labels[i]) in out[i].topk(5).indices.tolist() for i in range(400)]
    lost = sum(r and not w for r, w in zip(ref_right, right, strict=True))
    gained = sum(w and not r for r, w in zip(ref_right, right, strict=True))
    assert got["top1_accuracy"] == pytest.approx(sum(right) / 400)
    assert got["top5_accuracy"] == pytest.approx(sum(top5) / 400)
    assert got["accuracy_drop"] == pytest.approx(100 * (sum(ref_right) - sum(right)) / 400)
    assert (got["flips_lost"], got["flips_gained"]) == (lost, gained) and lost + gained > 0
    assert got["accuracy_drop_p"] == pytest.approx(_exact_mcnemar(lost, gained), rel=1e-6)
    assert got["eval_images"] == 400
    low, high = got["accuracy_drop_ci"]
    assert low < got["accuracy_drop"] < high
    kl = 0.0
    for i in range(400):
        p, q = ref[i].double().softmax(0), out[i].double().softmax(0)
        kl += float((p * (p / q).log()).sum())
    assert got["kl_divergence"] == pytest.approx(kl / 400, rel=1e-6)
    assert got["logit_rel_error"] == pytest.approx(
        math.sqrt(float(((out - ref) ** 2).sum()) / float((ref**2).sum())), rel=1e-5
    )


def test_the_reference_itself_drops_nothing_and_five_classes_have_no_top5():
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    ref = torch.eye(5)[[0, 1, 2, 3, 3, 1]]  # right on 4 of 6
    got = evaluate.compare(ref, ref, labels)
    assert got["accuracy_drop"] == 0.0 and got["flips_lost"] == got["flips_gained"] == 0
    assert got["accuracy_drop_p"] == 1.0 and got["accuracy_drop_ci"] == [0.0, 0.0]
    assert "top5_accuracy" not in got and got["kl_divergence"] == pytest.approx(0.0, abs=1e-12)


def test_a_subset_is_seeded_sorted_and_never_repeats():
    a = evaluate.choose(1000, 50, seed=7)
    assert torch.equal(a, evaluate.choose(1000, 50, seed=7))
    assert not torch.equal(a, evaluate.choose(1000, 50, seed=8))
    assert len(set(a.tolist())) == 50 and a.tolist() == sorted(a.tolist())
    assert torch.equal(evaluate.choose(30, None), torch.arange(30))
    assert torch.equal(evaluate.choose(30, 99), torch.arange(30))


def test_a_tied_top_logit_is_credited_1_over_k_and_flips_nothing():
    # bf16 logits tie often; argmax gives a tie to the lowest class index, so a model that
    # over-predicts a high class (Shirt, 6) gains every tie it shares with a lower one: the
    # 1-epoch Fashion-MNIST checkpoint's bf16 "gain" was half that rule
    labels = torch.tensor([0, 0, 2, 1])
    ref = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    got = evaluate.compare(out, ref, labels)
    # image 0: fp32 said 2 (wrong), the row ties 0 and 2: half a right answer, not a whole one
    assert got["top1_accuracy"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert got["accuracy_drop"] == pytest.approx(100 * (3 / 4 - 3.5 / 4))
    assert got["top1_ties"] == 1 and (got["flips_lost"], got["flips_gained"]) == (0, 0)
    assert got["accuracy_drop_p"] == 1.0  # a tie is no prediction to flip
