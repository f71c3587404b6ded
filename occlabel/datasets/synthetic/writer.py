"""``synth``: render synthetic scenes and write them as a folder dataset with full ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from occlabel.conventions import FREE, GRIDS, SKY
from occlabel.datasets.base import Frame, Scene
from occlabel.datasets.folder import MANIFEST
from occlabel.datasets.synthetic.common import (
    LIDAR_WINDOW,
    META,
    SKY_RANGE_M,
    CameraFiles,
    Keyframe,
    LidarWindow,
    Sweep,
    camera_rays_ego,
    finish,
    occ3d_labels,
    prepare_root,
    save_npz,
    torch_threads,
    write_rig_images,
    write_scenes,
)
from occlabel.datasets.synthetic.render import LIDAR_ELEV_DEG, LIDAR_MOUNT, render_cameras, render_lidar
from occlabel.datasets.synthetic.rigs import DEFAULT_SIZE, make_rig
from occlabel.datasets.synthetic.world import build_world
from occlabel.errors import OccLabelError

FORMAT = "occlabel.synthetic/1"
_OUTPUTS = ("images", "gt", "gts", "lidar", MANIFEST, META)
#: re-exported: the layout writers' shared names that used to live here
__all__ = ["LIDAR_WINDOW", "META", "SKY_RANGE_M", "camera_rays_ego", "exposure_gains", "save_npz", "synth"]


def synth(
    out: str | Path,
    scenes: int = 1,
    frames: int = 20,
    rig: str = "front",
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    keyframe_every: int = 5,
    fps: float = 10.0,
    progress: bool = False,
    overwrite: bool = False,
    *,
    ego_speed: float | None = None,
    shadows: bool = True,
    threads: int | None = 1,
) -> Path:
    """Render ``scenes`` synthetic street scenes and write them as a folder dataset.

    Args:
        out: dataset root (created; an existing dataset there needs ``overwrite``).
        scenes: number of scenes (independent streets, seeds derived from ``seed``).
        frames: frames per scene.
        rig: "front" (CAM_FRONT) or "surround" (six nuScenes-like cameras).
        size: (width, height) of every image.
        seed: master seed; output is a deterministic function of the arguments.
        keyframe_every: frames 0, k, 2k, ... are keyframes (with occupancy ground truth).
        fps: frame rate (timestamps are frame / fps seconds).
        progress: show a progress bar.
        overwrite: replace a dataset already at ``out``.
        ego_speed: ego speed in m/s (None: drawn in [5, 10] per scene; 0: parked ego car).
        shadows: cast sun shadows (on by default).
        threads: torch CPU threads while rendering (restored afterwards). 1 by default: the renderer runs
            many medium-sized ops, and on a machine shared with other processes several threads spin
            waiting for each other (5x slower measured on 2 busy cores); the output is the same for any
            value. None keeps torch's setting.
    Returns:
        The dataset root (absolute).
    """
    with torch_threads(threads):
        args = (scenes, frames, rig, size, seed, keyframe_every, fps, progress, overwrite, ego_speed, shadows)
        return _synth(out, *args)


def _synth(
    out, scenes, frames, rig, size, seed, keyframe_every, fps, progress, overwrite, ego_speed, shadows
) -> Path:
    if scenes < 1 or frames < 1 or keyframe_every < 1 or not fps > 0:
        raise OccLabelError("synth: scenes, frames, keyframe_every and fps must be positive")
    root = Path(out).expanduser().resolve()
    prepare_root(root, _OUTPUTS, overwrite)
    run = _Run(root, make_rig(rig, size), seed, frames, fps, keyframe_every, ego_speed, shadows)
    records, smetas = write_scenes(scenes, frames, "synth", progress, partial(_write_scene, run))
    return finish(root, records, _meta(rig, size, seed, fps, keyframe_every) | {"scenes": smetas})


@dataclass(frozen=True)
class _Run:
    """The arguments every scene of one ``synth`` call is written with."""

    root: Path
    cams: list[dict]
    seed: int
    n_frames: int
    fps: float
    keyframe_every: int
    ego_speed: float | None
    shadows: bool


def _meta(rig: str, size: tuple[int, int], seed: int, fps: float, keyframe_every: int) -> dict:
    """synthetic.json without its scenes: the generator's parameters and the files' conventions."""
    return {
        "format": FORMAT,
        "rig": rig,
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "fps": float(fps),
        "keyframe_every": int(keyframe_every),
        "grid": GRIDS["occ3d"].to_dict(),
        "conventions": {
            "images": "images/<CAM>/<token>.png, RGB uint8 = round(255 * clip(gain * radiance, 0, 1))",
            "exposure_gain": "per image, in [0.9, 1.1]; listed under scenes[].exposure[token][camera]",
            "depth": "gt/depth/<CAM>/<token>.npy, float32 metric z-depth (camera z), NaN for sky",
            "semantics": f"gt/semantics/<CAM>/<token>.png, uint8 Occ3D ids 0-16, {SKY} for sky",
            "lidar": "lidar/<token>.npy, float32 N x 3 returns in the ego frame, HDL-32E-like sweep "
            f"(32 beams {LIDAR_ELEV_DEG[0]:.2f}..{LIDAR_ELEV_DEG[-1]:.2f} deg, 512 azimuths, range <= 70 m) "
            f"from {list(LIDAR_MOUNT)} in the ego frame",
            "occupancy": "gts/<scene>/<token>/labels.npz (Occ3D layout): semantics uint8 (200,200,16) "
            f"{FREE} = free, mask_camera uint8 0/1, mask_lidar uint8 0/1",
            "mask_lidar": "voxels crossed or hit by the LiDAR returns of the keyframe and of the "
            f"{LIDAR_WINDOW} frames either side (Occ3D accumulates sweeps likewise)",
        },
    }


def _write_scene(run: _Run, si: int, bar) -> tuple[Scene, dict]:
    """Render and write scene ``si``; returns its record and its synthetic.json entry."""
    name = f"synth-{run.seed}-{si:03d}"
    duration = max(run.n_frames - 1, 1) / run.fps
    world = build_world(run.seed, duration, ego_speed=run.ego_speed, scene_index=si)
    smeta = {"name": name, **world.summary(), "exposure": {}}
    frames: list[Frame] = []
    lidar = LidarWindow(run.n_frames)
    for fi in range(run.n_frames):
        frame, gains = _write_frame(run, world, name, fi, lidar)
        smeta["exposure"][frame.token] = gains
        frames.append(frame)
        # keyframes are labelled once the LiDAR sweeps of their window are rendered
        for key, window in lidar.due(fi):
            op = run.root / "gts" / name / frames[key.index].token / "labels.npz"
            op.parent.mkdir(parents=True, exist_ok=True)
            save_npz(op, _labels(world, run.cams, key, window))
            frames[key.index].occupancy_path = op
        bar.update(1)
    return Scene(name=name, frames=frames), smeta


def _write_frame(run: _Run, world, name: str, fi: int, lidar: LidarWindow) -> tuple[Frame, dict[str, float]]:
    """Render frame ``fi``: write its images, ground truth and LiDAR sweep, keep the sweep (and a keyframe's
    depths) in ``lidar``; returns the frame's record and its exposure gains."""
    root, t = run.root, fi / run.fps
    token = f"{name}-{fi:04d}"
    T_we = world.ego_pose(t)
    res = render_cameras(world, run.cams, T_we, t, shadows=run.shadows)

    def files(cam: dict) -> CameraFiles:
        cn = cam["name"]
        return CameraFiles(root / "images" / cn / f"{token}.png", root / "gt" / "depth" / cn / f"{token}.npy",
                           root / "gt" / "semantics" / cn / f"{token}.png")  # fmt: skip

    images, gains = write_rig_images(root, world, t, run.cams, res, files)
    lp = root / "lidar" / f"{token}.npy"
    lp.parent.mkdir(parents=True, exist_ok=True)
    pts = render_lidar(world, T_we, t)["points_ego"].numpy()
    np.save(lp, pts)
    lidar.add_sweep(fi, T_we, pts.astype(np.float64))
    key = fi % run.keyframe_every == 0
    if key:
        depth = res["depth"].clone()
        lidar.pending[fi] = Keyframe(
            fi, T_we, t, {c["name"]: (depth[ci], T_we) for ci, c in enumerate(run.cams)}
        )
    frame = Frame(token=token, timestamp=round(t, 6), keyframe=key, T_world_from_ego=T_we, images=images,
                  lidar_path=lp)  # fmt: skip
    return frame, gains


def _labels(world, cams: list[dict], key: Keyframe, sweeps: list[Sweep]) -> dict[str, np.ndarray]:
    """Occ3D-layout labels of a keyframe: semantics, mask_camera (from the GT depths, cameras fixed on the
    ego) and mask_lidar (from ``sweeps``)."""
    rays = [camera_rays_ego(key.depths[c["name"]][0], c["K"], c["T_ego_from_cam"]) for c in cams]
    return occ3d_labels(world, GRIDS["occ3d"], key, rays, sweeps)


def exposure_gains(root: str | Path) -> dict[str, dict[str, float]]:
    """token -> camera -> exposure gain, read from a synthetic dataset's synthetic.json."""
    meta = json.loads((Path(root) / META).read_text())
    out: dict[str, dict[str, float]] = {}
    for s in meta["scenes"]:
        out.update(s["exposure"])
    return out
