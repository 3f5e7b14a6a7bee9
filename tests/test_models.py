import pytest
import torch
from torch import nn

from lib.learn.models import CLASSES, REGISTRY, build_model, default_device


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("grid", [(65, 77, 65), (97, 115, 97), (40, 48, 40), (12, 14, 12)])
def test_output_shape_for_several_grids(name, grid):
    model = build_model(name, grid).eval()
    x = torch.randn(2, 1, *grid)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 2)
    assert torch.isfinite(out).all()


def test_boehle2019_matches_the_paper():
    model = build_model("boehle2019", (97, 115, 97))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64]
    assert all(c.kernel_size == (3, 3, 3) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool3d)]
    assert [p.kernel_size for p in pools] == [2, 3, 2, 3]
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.modules()) == 4
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [d.out_features for d in dense] == [128, 2]
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.4, 0.4]
    # ReLUs are not in-place: explanation hooks need their inputs intact
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert CLASSES == ("HC", "AD")


def test_first_dense_layer_is_sized_from_the_grid():
    small = build_model("boehle2019", (40, 48, 40))
    large = build_model("boehle2019", (97, 115, 97))
    first = lambda m: next(x for x in m.modules() if isinstance(x, nn.Linear)).in_features
    assert first(small) < first(large)


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="boehle2019"):
        build_model("resnet", (10, 10, 10))


def test_default_device_is_cpu_without_cuda():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
