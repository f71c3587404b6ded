"""Bird's-eye views of voxel labels (top-most non-free voxel per column, Occ3D palette)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from occlabel.conventions import FREE, OCC3D_CLASSES, occ3d_palette

UNKNOWN_RGB = (40, 40, 40)
#: observed columns with no occupied voxel (Occ3D's white would hide "manmade")
FREE_RGB = (208, 200, 182)


def bev_rgb(
    semantics: np.ndarray,
    mask: np.ndarray | None = None,
    free: int = FREE,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Top-down colour image of a label grid.

    Args:
        semantics: <np.uint8: X, Y, Z> class ids, grid frame [x, y, z].
        mask: optional <bool: X, Y, Z> of observed voxels; columns never observed are drawn dark.
        free: the class set's free id (Occ3D: 17; SemanticKITTI: 0).
        palette: <np.uint8: 256, 3> colour per id (default: Occ3D's).
    Returns:
        <np.uint8: X, Y, 3> with forward (+x) up and left (+y) left, as seen from above.
    """
    X, Y, Z = semantics.shape
    occ = semantics != free
    if mask is not None:
        occ &= mask.astype(bool)
    # index of the top-most occupied voxel per column (-1 where none)
    top = np.where(occ.any(-1), Z - 1 - np.argmax(occ[..., ::-1], axis=-1), -1)
    cls = np.take_along_axis(semantics, np.clip(top, 0, Z - 1)[..., None], -1)[..., 0]
    img = (occ3d_palette() if palette is None else palette)[cls]
    img[top < 0] = FREE_RGB
    if mask is not None:
        img[~mask.astype(bool).any(-1)] = UNKNOWN_RGB
    return np.ascontiguousarray(img[::-1, ::-1])


def save_bev_comparison(panels: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Save BEV panels (name -> <uint8: H, W, 3>) side by side with the class legend; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 2.2, 4.6), squeeze=False)
    for ax, (name, img) in zip(axes[0], panels.items(), strict=True):
        ax.imshow(img, interpolation="nearest")
        h, w = img.shape[:2]
        ax.plot([w / 2], [h / 2], marker="^", color="red", markersize=7)  # the ego car, heading up
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Patch(color=np.array(rgb) / 255, label=name) for cid, name, rgb, _ in OCC3D_CLASSES if cid != FREE
    ]
    handles.append(Patch(color=np.array(FREE_RGB) / 255, label="free"))
    handles.append(Patch(color=np.array(UNKNOWN_RGB) / 255, label="unobserved"))
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (4.2 * n + 2.2), 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
