"""LRP in lib.explain against zennit (the reference implementation), and conservation layer by layer."""

import copy
import json

import pytest
import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonPlusFlat, LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.rules import AlphaBeta, Epsilon, Pass, ZBox
from zennit.types import Activation, BatchNorm, Convolution

from explain_nets import GRID, rel_l2, small_net, volumes
from lib.explain import METHODS, UnsupportedLayerError, canonical_params, explain
from lib.explain.lrp import LRPParams, lrp

AD = 1


def zennit_relevance(model, x, composite, start="probability", target=AD):
    """zennit's relevance with the same starting relevance (the target's probability or logit at its output)."""
    model = copy.deepcopy(model).eval()
    xx = x.clone().requires_grad_(True)
    with Gradient(model, composite) as attributor:
        out = model(xx).detach()
        value = out.softmax(1)[:, target] if start == "probability" else out[:, target]
        seed = torch.zeros_like(out)
        seed[:, target] = value
        _, rel = attributor(xx, seed)
    return rel


def layer_map(rule, merge):
    return LayerMapComposite([(Activation, Pass()), (BatchNorm, Pass()), (Convolution, rule), (nn.Linear, rule)],
                             canonizers=[SequentialMergeBatchNorm()] if merge else None)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("batchnorm", ["merge", "pass"])
def test_beta_rule_matches_zennit(beta, bias, batchnorm):
    model, x = small_net(), volumes()
    zero = None if bias else ["bias"]
    ref = zennit_relevance(model, x, layer_map(AlphaBeta(1 + beta, beta, zero_params=zero), batchnorm == "merge"))
    ours = explain(model, x, "lrp", beta=beta, bias=bias, batchnorm=batchnorm)
    assert ours.shape == x.shape
    assert rel_l2(ours, ref) <= 1e-4


@pytest.mark.parametrize("epsilon", [0.01, 0.25])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("batchnorm", ["merge", "pass"])
def test_epsilon_rule_matches_zennit(epsilon, bias, batchnorm):
    model, x = small_net(1), volumes(seed=2)
    zero = None if bias else ["bias"]
    ref = zennit_relevance(model, x, layer_map(Epsilon(epsilon, zero_params=zero), batchnorm == "merge"))
    ours = explain(model, x, "lrp", composite="epsilon", epsilon=epsilon, bias=bias, batchnorm=batchnorm)
    assert rel_l2(ours, ref) <= 1e-4


def test_logit_start_and_hc_target_match_zennit():
    model, x = small_net(2), volumes(seed=3)
    comp = layer_map(AlphaBeta(1.5, 0.5, zero_params=["bias"]), True)
    ref = zennit_relevance(model, x, comp, start="logit", target=0)
    ours = explain(model, x, "lrp", beta=0.5, start="logit", target="HC")
    assert rel_l2(ours, ref) <= 1e-4
    assert torch.equal(ours, explain(model, x, "lrp", beta=0.5, start="logit", target=0))


def test_composites_match_zennit():
    model, x = small_net(3), volumes(seed=4)
    ours = explain(model, x, "lrp", composite="epsilon_alpha_beta", beta=1.0, epsilon=0.1, bias=True)
    ref = zennit_relevance(model, x, EpsilonAlpha2Beta1(epsilon=0.1, canonizers=[SequentialMergeBatchNorm()]))
    assert rel_l2(ours, ref) <= 1e-4

    ours = explain(model, x, "lrp", composite="epsilon_plus_flat", epsilon=0.1, bias=True)
    ref = zennit_relevance(model, x, EpsilonPlusFlat(epsilon=0.1, canonizers=[SequentialMergeBatchNorm()]))
    assert rel_l2(ours, ref) <= 1e-4

    low, high = float(x.min()), float(x.max())
    ours = explain(model, x, "lrp", composite="epsilon_alpha_beta_box", beta=0.5, epsilon=0.1, low=low, high=high)
    zero = ["bias"]
    ref = zennit_relevance(model, x, SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (BatchNorm, Pass()),
                   (Convolution, AlphaBeta(1.5, 0.5, zero_params=zero)), (nn.Linear, Epsilon(0.1, zero_params=zero))],
        first_map=[(Convolution, ZBox(low, high, zero_params=zero))], canonizers=[SequentialMergeBatchNorm()]))
    assert rel_l2(ours, ref) <= 1e-4


def test_explicit_rules_override_the_composite_and_hash_alike():
    a = canonical_params("lrp", composite="epsilon_plus")
    b = canonical_params("lrp", conv_rule="zplus", dense_rule="epsilon")
    assert a == b
    assert canonical_params("lrp", composite="epsilon_plus", dense_rule="zplus")["dense_rule"] == "zplus"
    model, x = small_net(), volumes(2)
    assert torch.equal(explain(model, x, "lrp", composite="epsilon_plus"),
                       explain(model, x, "lrp", conv_rule="zplus", dense_rule="epsilon"))


@pytest.mark.parametrize("first,conv,dense,maxpool", [
    ("same", "alpha_beta", "alpha_beta", "winner"),       # β = 0
    ("same", "alpha_beta", "alpha_beta", "proportional"),
    ("same", "zplus", "epsilon", "winner"),
    ("flat", "zplus", "epsilon", "proportional"),
    ("wsquare", "alpha_beta", "zplus", "winner"),
    ("zbox", "alpha_beta", "epsilon", "winner"),
])
def test_relevance_is_conserved_layer_by_layer(first, conv, dense, maxpool):
    """With zero biases (BatchNorm passed through) every layer passes on all of its relevance (float64, ε tiny).

    Each volume is explained for its larger logit, which is positive: an output with no positive contribution
    has nothing to pass on under the z⁺/β rules."""
    model = small_net(4).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                m.bias.zero_()
    x = volumes(4, seed=5, dtype=torch.float64)
    logits = model(x).detach()
    assert (logits.max(1).values > 0).all()
    target = logits.argmax(1)
    params = LRPParams(first_rule=first, conv_rule=conv, dense_rule=dense, maxpool=maxpool, bias=True,
                       batchnorm="pass", epsilon=1e-12, stabilizer=1e-12)
    r, per_layer = lrp(model, x, target, params, keep_layers=True)
    start = logits.softmax(1).gather(1, target[:, None])[:, 0]
    assert torch.equal(r, explain(model, x, "lrp", target=target.tolist(), **params.__dict__))
    assert len(per_layer) == 15  # relevance at the input of each of the 14 layers, and at the output
    for i, rl in enumerate(per_layer):
        sums = rl.flatten(1).sum(1)
        assert torch.allclose(sums, start, rtol=1e-8, atol=0), (i, sums, start)
    assert torch.equal(per_layer[0], r)
    if (first, conv, dense) == ("same", "alpha_beta", "alpha_beta"):
        # β = 0 on non-negative starting relevance: every layer's relevance is non-negative
        assert all(bool((rl >= 0).all()) for rl in per_layer)


def test_beta_redistributes_but_ignoring_bias_conserves_the_total():
    """With the default (biases ignored) relevance is conserved even with biases in the model; β > 0 brings in
    negative relevance, more of it with larger β."""
    model, x = small_net(5).double(), volumes(4, seed=6, dtype=torch.float64)
    start = model(x).softmax(1)[:, AD].detach()
    r0 = explain(model, x, "lrp", beta=0.0)
    assert torch.allclose(r0.flatten(1).sum(1), start, rtol=1e-6)
    assert (r0 >= 0).all()
    neg = [float(explain(model, x, "lrp", beta=b).clamp(max=0).sum()) for b in (0.25, 1.0)]
    assert neg[1] < neg[0] < 0


def test_default_is_the_papers_setting():
    p = canonical_params("lrp")
    assert p == {"method": "lrp", "beta": 0.0, "first_rule": "same", "conv_rule": "alpha_beta",
                 "dense_rule": "alpha_beta", "epsilon": 1e-6, "stabilizer": 1e-6, "low": None, "high": None,
                 "batchnorm": "merge", "bias": False, "maxpool": "winner", "start": "probability"}
    json.dumps(p)
    assert "Böhle" in METHODS["lrp"].citation and METHODS["lrp"].defaults == LRPParams()


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Sequential(nn.AvgPool3d(2)), nn.Flatten(), nn.Linear(2 * 4 * 5 * 4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"1\.0 \(AvgPool3d\)"):
        explain(model, volumes(1))

    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(UnsupportedLayerError, match="Custom"):
        explain(Custom(nn.Conv3d(1, 1, 3)), volumes(1))


def test_bad_parameters_are_refused_before_any_work():
    model, x = small_net(), volumes(1)
    with pytest.raises(TypeError, match="gamma"):
        explain(model, x, "lrp", gamma=0.25)
    with pytest.raises(ValueError, match="composite"):
        explain(model, x, "lrp", composite="nope")
    with pytest.raises(ValueError, match="beta"):
        explain(model, x, "lrp", beta=-0.5)
    with pytest.raises(ValueError, match="method"):
        explain(model, x, "deeplift")
    with pytest.raises(ValueError, match="target"):
        explain(model, x, target="MCI")
