"""The on-disk layouts ``occlabel synth`` writes, by name: each layout's writer, rigs and default cadence."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from occlabel.errors import OccLabelError


@dataclass(frozen=True)
class Layout:
    """One dataset layout of the synthetic world."""

    writer: str  # "module:function" writing it (imported only when chosen)
    count: str  # the writer's argument for the number of scenes (scenes, sequences, drives)
    rigs: tuple[str, ...]  # rigs the layout can hold
    rig: str  # default rig
    keyframe_every: int  # default keyframe cadence, frames
    fps: float  # default frame rate, Hz
    kitti_cameras: bool = False  # the writer takes KITTI camera indices instead of a rig name


#: layout name -> Layout (the order of ``occlabel synth --layout``)
LAYOUTS = {
    "folder": Layout("occlabel.datasets.synthetic.writer:synth", "scenes", ("front", "surround"), "front", 5, 10.0),
    "nuscenes": Layout(
        "occlabel.datasets.synthetic.nuscenes_layout:synth_nuscenes", "scenes", ("front", "surround"),
        "surround", 6, 12.0,
    ),
    "kitti": Layout(
        "occlabel.datasets.synthetic.kitti_layout:synth_kitti", "sequences", ("front", "stereo"), "front", 5,
        10.0, kitti_cameras=True,
    ),
    "kitti-raw": Layout(
        "occlabel.datasets.synthetic.kitti_raw_layout:synth_kitti_raw", "drives", ("front", "stereo"), "front",
        5, 10.0, kitti_cameras=True,
    ),
}  # fmt: skip

#: KITTI rig -> camera indices (front: the left colour camera cam2; stereo: cam0-cam3)
KITTI_CAMERAS = {"front": (2,), "stereo": (0, 1, 2, 3)}


def synth_layout(
    layout: str,
    out: str | Path,
    scenes: int,
    frames: int,
    rig: str | None = None,
    keyframe_every: int | None = None,
    fps: float | None = None,
    **kwargs: Any,
) -> Path:
    """Write the synthetic world in ``layout`` (a name of LAYOUTS) at ``out``; returns the dataset root.

    ``rig``, ``keyframe_every`` and ``fps`` default to the layout's; a rig the layout cannot hold is a
    one-line OccLabelError. ``kwargs``: the writer's other arguments (size, seed, ego_speed, progress,
    overwrite, ...).
    """
    lay = LAYOUTS[layout]
    module, _, name = lay.writer.partition(":")
    write = getattr(importlib.import_module(module), name)
    if rig is not None and rig not in lay.rigs:
        others = " or ".join(k for k, v in LAYOUTS.items() if rig in v.rigs)
        raise OccLabelError(f"--rig {rig} is for --layout {others} ({layout}: {' or '.join(lay.rigs)})")
    rig = rig or lay.rig
    cams = {"cameras": KITTI_CAMERAS[rig]} if lay.kitti_cameras else {"rig": rig}
    return write(
        out, **{lay.count: scenes}, frames=frames, **cams, keyframe_every=keyframe_every or lay.keyframe_every,
        fps=fps or lay.fps, **kwargs,
    )  # fmt: skip


__all__ = ["KITTI_CAMERAS", "LAYOUTS", "Layout", "synth_layout"]
