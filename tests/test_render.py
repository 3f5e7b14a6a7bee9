import numpy as np

from lib.views.render import Overlay, label_outlines, ortho_image, slice_2d


def test_slices_follow_neurological_display_convention():
    vol = np.zeros((10, 12, 8), np.float32)
    vol[1, 10, 6] = 1.0  # left (x small), anterior (y large), superior (z large)
    axial = slice_2d(vol, 2, 6)
    r, c = np.argwhere(axial)[0]
    assert c == 1 and r == 12 - 1 - 10  # left on the left, anterior at the top
    coronal = slice_2d(vol, 1, 10)
    r, c = np.argwhere(coronal)[0]
    assert c == 1 and r == 8 - 1 - 6  # superior at the top
    sagittal = slice_2d(vol, 0, 1)
    r, c = np.argwhere(sagittal)[0]
    assert c == 10 and r == 8 - 1 - 6  # anterior on the right


def test_label_outlines_mark_region_borders_only():
    lab = np.zeros((6, 6), int)
    lab[1:5, 1:5] = 3
    edge = label_outlines(lab)
    assert edge[1, 1] and edge[4, 2] and not edge[2, 2] and not edge[0, 0]


def test_ortho_image_sizes_and_overlay_colour():
    bg = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    ov = np.zeros_like(bg)
    ov[10, 12, 8] = 1.0
    img = ortho_image(bg, (10, 12, 8), overlay=Overlay(ov, 0, 1, cmap="hot", alpha=1.0, threshold=0.5),
                      crosshair=False, height=64)
    scale = 4
    assert img.height == 24 * scale  # the tallest panel (axial: Y rows)
    arr = np.asarray(img)
    # the overlaid voxel is white-hot (saturated) while the background stays grey
    assert (arr.reshape(-1, 3) == [255, 255, 255]).all(axis=1).any()


def test_opaque_wide_outlines_stay_visible_over_the_overlay():
    """The Individual view's top-region outlines: drawn after the colour, opaque and 2 px wide, so an outline
    over the brightest relevance keeps its own colour (a blended one takes on the overlay's)."""
    bg = np.full((20, 24, 16), 0.5, np.float32)
    ov = Overlay(np.ones_like(bg), 0, 1, cmap="hot", alpha=1.0)   # every voxel saturated
    labels = np.zeros(bg.shape, int)
    labels[5:15, 6:18, 4:12] = 1
    cyan = np.array([0, 230, 255])

    def pixels(**outline):
        arr = np.asarray(ortho_image(bg, (10, 12, 8), overlay=ov, labels=labels, crosshair=False, height=64,
                                     outline_color=tuple(cyan), **outline)).reshape(-1, 3)
        return (arr == cyan).all(axis=1).sum()

    assert pixels() == 0                                   # the default blend: no pixel is the outline's colour
    thin = pixels(outline_alpha=1.0)
    assert thin > 0 and pixels(outline_alpha=1.0, outline_width=2) > 1.5 * thin
