"""SmoothGrad and Integrated Gradients against Captum, on the paper's network and on a small random one."""

import copy

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from explain_nets import rel_l2, small_net, volumes
from lib.explain import explain
from lib.explain.methods.integrated_gradients import quadrature
from lib.learn.models import build_model
from lib.data.templates import Grid

AD, HC = 1, 0


def with_softmax(model):
    return nn.Sequential(copy.deepcopy(model).eval(), nn.Softmax(dim=1))


@pytest.fixture(scope="module")
def paper_net():
    """The paper's network (Böhle et al. 2019) on the 3 mm grid, random weights, and one random scan."""
    grid = Grid(3).shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("boehle2019", grid).eval()
    x = torch.randn((1, 1) + grid, generator=torch.Generator().manual_seed(0))
    return model, x


def captum_smoothgrad(model, x, target, n, noise, seed, output="probability", absolute=True):
    ref_model = with_softmax(model) if output == "probability" else copy.deepcopy(model).eval()
    out = []
    for v in x:  # Captum's stdevs are absolute: the noise level times this scan's range
        v = v[None]
        torch.manual_seed(seed)
        out.append(NoiseTunnel(Saliency(ref_model)).attribute(
            v.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=n,
            stdevs=noise * float(v.max() - v.min()), target=target, abs=absolute).detach())
    return torch.cat(out)


def test_smoothgrad_matches_captum_on_the_papers_network(paper_net):
    model, x = paper_net
    ref = captum_smoothgrad(model, x, AD, n=4, noise=0.15, seed=3)
    ours = explain(model, x, "smoothgrad", n_samples=4, noise=0.15, seed=3, batch_size=3)
    assert rel_l2(ours, ref) <= 1e-4
    # the noise matters: another seed gives another map, no noise gives plain sensitivity
    assert rel_l2(explain(model, x, "smoothgrad", n_samples=4, seed=4), ref) > 1e-3
    plain = explain(model, x, "sensitivity")
    assert torch.allclose(explain(model, x, "smoothgrad", n_samples=2, noise=0.0), plain, rtol=1e-4,
                          atol=1e-5 * float(plain.abs().max()))


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_smoothgrad_matches_captum_for_signed_gradients_and_every_scan_of_a_batch(output):
    model, x = small_net(3), volumes(3, seed=4)
    ref = captum_smoothgrad(model, x, HC, n=5, noise=0.2, seed=0, output=output, absolute=False)
    ours = explain(model, x, "smoothgrad", target="HC", n_samples=5, noise=0.2, output=output, absolute=False,
                   batch_size=2)
    assert rel_l2(ours, ref) <= 1e-5


@pytest.mark.parametrize("integration", ["gausslegendre", "riemann_middle", "riemann_right"])
def test_integrated_gradients_matches_captum_on_the_papers_network(paper_net, integration):
    model, x = paper_net
    ref = IntegratedGradients(with_softmax(model)).attribute(
        x.clone(), baselines=0.0, target=AD, n_steps=8, method=integration).detach()
    ours = explain(model, x, "integrated_gradients", steps=8, integration=integration, batch_size=3)
    assert rel_l2(ours, ref) <= 1e-4


def test_integrated_gradients_is_complete_and_matches_captum_with_a_baseline():
    model, x = small_net(4), volumes(2, seed=5)
    ref = IntegratedGradients(copy.deepcopy(model).eval()).attribute(
        x.clone(), baselines=-0.5, target=AD, n_steps=64, method="gausslegendre").detach()
    ours = explain(model, x, "integrated_gradients", steps=64, baseline=-0.5, output="logit")
    assert rel_l2(ours, ref) <= 1e-5
    # completeness (Sundararajan et al.): with enough steps the map sums to f(x) − f(baseline)
    fine = explain(model, x, "integrated_gradients", steps=1024, baseline=-0.5, output="logit",
                   integration="riemann_middle", batch_size=256)
    with torch.no_grad():
        f = model.eval()(x)[:, AD] - model(torch.full_like(x, -0.5))[:, AD]
    assert torch.allclose(fine.flatten(1).sum(1), f, rtol=2e-3, atol=1e-4)


def test_quadratures_integrate_polynomials():
    for rule, exact_degree in [("gausslegendre", 7), ("riemann_trapezoid", 1), ("riemann_middle", 1)]:
        a, w = quadrature(rule, 4)
        assert w.sum() == pytest.approx(1.0)
        assert float(np.sum(w * a ** exact_degree)) == pytest.approx(1 / (exact_degree + 1), rel=1e-9)
    with pytest.raises(ValueError, match="integration must be one of"):
        quadrature("simpson", 4)
