"""L2-SP: the penalty α/2·‖w − w0‖² + β/2·‖w_new‖² and its pull toward the pretrained weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weitiao.strategies.l2sp import L2SP, l2sp_for

NEW = {"1.weight", "1.bias"}  # the second Linear plays the newly initialised head


def two_layers() -> nn.Sequential:
    """Linear(3, 4) "pretrained" (all ones, bias 0) and Linear(4, 2) "new" (all twos, bias [1, -1])."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[1].weight.fill_(2.0)
        net[1].bias.copy_(torch.tensor([1.0, -1.0]))
    return net


def test_penalty_and_gradient_match_the_hand_computation():
    net = two_layers()
    reg = l2sp_for(net, NEW, alpha=0.3, beta=0.2)
    with torch.no_grad():
        net[0].weight.add_(0.5)  # 12 weights moved by 0.5 from the start
    penalty = reg.penalty()
    # α/2 · 12 · 0.5² = 0.15 · 3 = 0.45;  β/2 · (8 · 2² + 1² + 1²) = 0.1 · 34 = 3.4
    assert penalty.item() == pytest.approx(3.85, rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(net[0].weight.grad, torch.full((4, 3), 0.15))  # α (w − w0)
    torch.testing.assert_close(net[0].bias.grad, torch.zeros(4))
    torch.testing.assert_close(net[1].weight.grad, torch.full((2, 4), 0.4))  # β w
    torch.testing.assert_close(net[1].bias.grad, torch.tensor([0.2, -0.2]))


def test_the_starting_point_is_a_copy_and_frozen_parameters_do_not_count():
    net = two_layers()
    reg = l2sp_for(net, NEW, alpha=2.0, beta=0.0)
    assert reg.penalty().item() == 0.0
    with torch.no_grad():
        net[0].bias.add_(1.0)  # 4 biases moved by 1: 2/2 · 4 = 4
    assert reg.penalty().item() == pytest.approx(4.0)
    net[0].bias.requires_grad_(False)  # a frozen parameter cannot move back: no penalty on it
    assert reg.penalty().item() == 0.0


def test_no_regularizer_without_alpha_or_beta():
    assert l2sp_for(two_layers(), NEW, 0.0, 0.0) is None
    only_beta = l2sp_for(two_layers(), NEW, 0.0, 1.0)
    assert only_beta.penalty().item() == pytest.approx(0.5 * 34)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the model moves there after L2-SP is built")
def test_starting_values_follow_the_model_to_the_gpu_once():
    net = two_layers()
    reg = L2SP(list(net[0].parameters()), [], alpha=1.0, beta=0.0)  # built on the CPU, as in recipe.fit
    net.cuda()
    assert reg.penalty().item() == 0.0
    starts = [p0 for _, p0 in reg.pairs]
    assert all(p0.is_cuda for p0 in starts)
    reg.penalty()
    assert all(a is b for a, b in zip(starts, (p0 for _, p0 in reg.pairs)))  # no copy on every step


def train(alpha: float, steps: int = 30) -> tuple[float, float, float]:
    """A toy regression; returns (‖w − w0‖ of the pretrained layer, loss at start, loss at end)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y = torch.sin(3 * x[:, :1]) + x[:, 1:2] ** 2
    reg = l2sp_for(net, {"2.weight", "2.bias"}, alpha, 0.0)
    w0 = net[0].weight.detach().clone()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-2, weight_decay=0.0)
    start = nn.functional.mse_loss(net(x), y).item()
    for _ in range(steps):
        loss = nn.functional.mse_loss(net(x), y)
        if reg:
            loss = loss + reg.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (net[0].weight - w0).norm().item(), start, nn.functional.mse_loss(net(x), y).item()


def test_l2sp_keeps_the_pretrained_weights_closer_to_their_start():
    free, start, end = train(0.0)
    assert end < 0.6 * start  # without L2-SP the task pulls the pretrained layer a long way (|Δw| ≈ 4.6)
    assert free > 2.0
    light, _, _ = train(0.1)
    strong, _, _ = train(1.0)
    assert strong < light < free
    assert strong < 0.2 * free  # measured ≈ 0.39 vs 4.63
