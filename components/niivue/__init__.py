"""The NiiVue viewer (``@niivue/niivue``) as a Streamlit component: slices and a 3D rendering of an anatomy
with a map over it in the paper's colours, threshold and opacity changed in the browser, the MNI coordinate,
map value and atlas region under the cursor, and a click that moves the page's crosshair.

The browser code lives in ``frontend/`` and is bundled by ``./setup.sh`` (``npm ci`` + esbuild) into
``frontend/build/``; without that build :func:`available` is False and pages show their PNG views.
Volumes come as gzipped 8-bit NIfTI bytes from :mod:`lib.views.viewer_volumes`, each with a content key: the
browser reloads only when a key changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

FRONTEND = Path(__file__).resolve().parent / "frontend"
BUILD = FRONTEND / "build"
BUILD_HINT = ("The 3D viewer is not built: run `./setup.sh` (it bundles the NiiVue viewer with npm; Node 20 "
              "is needed). The slice images below are shown meanwhile.")

_component = None


def available() -> bool:
    """Whether the browser bundle has been built."""
    return (BUILD / "index.html").is_file() and (BUILD / "viewer.js").is_file()


def _declared():
    global _component
    if _component is None:
        import streamlit.components.v1 as components

        _component = components.declare_component("niivue_viewer", path=str(BUILD))
    return _component


def viewer(*, anatomy: bytes, anatomy_key: str, anatomy_range: Sequence[float], crosshair_mm: Sequence[float],
           overlay: bytes | None = None, overlay_key: str = "", layer: Mapping | None = None,
           atlas: bytes | None = None, atlas_key: str = "", atlas_names: Mapping[int, str] | None = None,
           height: int = 520, key: str, on_click: Callable[[list[float]], None] | None = None) -> None:
    """Mount the viewer.

    Parameters
    ----------
    anatomy, overlay, atlas : gzipped NIfTI bytes (:mod:`lib.views.viewer_volumes`); the ``*_key`` strings name
        their content, so the browser parses a volume again only when its key changes
    anatomy_range : grey window of the anatomy
    layer : the overlay's colours (:func:`lib.views.viewer_volumes.layer`)
    atlas_names : label → region name, shown under the cursor
    crosshair_mm : the page's crosshair (MNI mm); the viewer follows it
    on_click : called with the MNI mm ``[x, y, z]`` of a click on a slice, before the page reruns
    """
    import streamlit as st

    def changed() -> None:
        value = st.session_state.get(key)
        if on_click is not None and isinstance(value, dict) and len(value.get("mm") or []) == 3:
            on_click([float(v) for v in value["mm"]])

    _declared()(anatomy=anatomy, anatomy_key=anatomy_key, anatomy_range=[float(v) for v in anatomy_range],
                overlay=overlay, overlay_key=overlay_key if overlay is not None else "", layer=layer,
                atlas=atlas, atlas_key=atlas_key if atlas is not None else "",
                atlas_names={str(int(k)): str(v).replace("_", " ") for k, v in (atlas_names or {}).items()},
                crosshair=[round(float(v), 2) for v in crosshair_mm], height=int(height),
                key=key, default=None, on_change=changed)
