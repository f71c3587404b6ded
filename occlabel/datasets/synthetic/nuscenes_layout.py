"""``synth_nuscenes``: render synthetic scenes and write them in the nuScenes on-disk layout.

The output is read by nuscenes-devkit (``NuScenes(version, dataroot)``) and by occlabel's ``nuscenes``
adapter, so the adapter is tested end to end on multi-frame scenes with exact ground truth::

    <root>/v1.0-mini/*.json       the tables, v1.0-mini style: scene, sample, sample_data, ego_pose,
                                  calibrated_sensor, sensor, log, map (one record, a 1x1 px mask), and
                                  empty category, attribute, visibility, instance, sample_annotation
    <root>/samples/CAM_*/<log>__<CAM>__<timestamp_us>.jpg      keyframe images (JPEG, quality 95)
    <root>/sweeps/CAM_*/...jpg                                   camera sweeps between keyframes
    <root>/samples|sweeps/LIDAR_TOP/...pcd.bin                   float32 N x 5 (x, y, z, 0, 0), LiDAR frame
    <root>/occlabel_gt/{depth,semantics}/<CAM>/<image name>.npy|.png   ground truth of every image, named
                                  in its sample_data record (``occlabel_depth``, ``occlabel_semantics``)
    <root>/gts/<scene>/<sample_token>/labels.npz                 Occ3D-layout occupancy of the keyframes
    <root>/maps/<token>.png                                      the map table's mask file
    <root>/occlabel.json          the same records in the folder format: what the adapter must read back
    <root>/synthetic.json         generator parameters and per-image exposure gains

Timing (like nuScenes): the reference camera (CAM_FRONT) fires at ``i / fps`` (default 12 Hz) plus 10 ms;
the other cameras fire at fixed offsets from it (``CAMERA_OFFSET_US``, -7.6 to +35 ms, the order of a real
nuScenes rig), each image rendered from the ego pose at its own instant; LiDAR sweeps at +35.5 ms.
Every ``keyframe_every``-th frame (default 6: 2 Hz) is a sample: its images and LiDAR sweep are keyframes,
its timestamp is the LiDAR's and its Occ3D labels live in the ego frame at the LiDAR time (mask_camera from
every keyframe camera's rays at their own instants, moved into that frame). Timestamps are microseconds
from ``BASE_US`` (scene i starts 100 s after scene i - 1). Scenes take the names of the v1.0-mini scenes
(scene-0061, scene-0103, ...), so the official mini splits select them. Tokens are deterministic hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from occlabel.conventions import GRIDS
from occlabel.datasets.base import CameraImage, Frame, Scene, rigid_transform
from occlabel.datasets.folder import MANIFEST
from occlabel.datasets.synthetic.common import (
    META,
    CameraFiles,
    Keyframe,
    LidarWindow,
    exposed,
    finish,
    moving_rig_labels,
    prepare_root,
    save_npz,
    torch_threads,
    write_scenes,
)
from occlabel.datasets.synthetic.nuscenes_tables import Tables, pose_record, sample_data, token
from occlabel.datasets.synthetic.render import LIDAR_MOUNT, render_cameras, render_lidar
from occlabel.datasets.synthetic.rigs import DEFAULT_SIZE, make_rig
from occlabel.datasets.synthetic.world import World, build_world
from occlabel.errors import OccLabelError

FORMAT = "occlabel.synthetic-nuscenes/1"
VERSION = "v1.0-mini"
BASE_US = 1_532_402_927_000_000
START_US = 10_000  # the reference camera of frame 0 fires 10 ms into the world's time
#: firing offsets from the reference camera, microseconds (as on nuScenes scene-0061's first sample)
CAMERA_OFFSET_US = {
    "CAM_FRONT": 0,
    "CAM_FRONT_RIGHT": 7_900,
    "CAM_FRONT_LEFT": -7_600,
    "CAM_BACK": 25_100,
    "CAM_BACK_LEFT": 35_000,
    "CAM_BACK_RIGHT": 15_400,
}
LIDAR_OFFSET_US = 35_500
#: LIDAR_TOP in the ego frame: at the synthetic LiDAR's mount, x right / y forward (yaw -90 deg), as nuScenes
T_EGO_FROM_LIDAR = rigid_transform(
    np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), LIDAR_MOUNT
)
MINI_SCENES = (
    "scene-0061", "scene-0103", "scene-0553", "scene-0655", "scene-0757",
    "scene-0796", "scene-0916", "scene-1077", "scene-1094", "scene-1100",
)  # fmt: skip
LOCATION = "singapore-onenorth"
_OUTPUTS = (VERSION, "samples", "sweeps", "maps", "gts", "occlabel_gt", MANIFEST, META)


def synth_nuscenes(
    out: str | Path,
    scenes: int = 1,
    frames: int = 13,
    rig: str = "surround",
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    keyframe_every: int = 6,
    fps: float = 12.0,
    progress: bool = False,
    overwrite: bool = False,
    *,
    ego_speed: float | None = None,
    shadows: bool = True,
    threads: int | None = 1,
    labels: bool = True,
) -> Path:
    """Render ``scenes`` synthetic scenes and write them in the nuScenes layout (see the module docstring).

    Args:
        out: dataroot to write (an existing dataset there needs ``overwrite``).
        scenes: number of scenes (at most 10: they take the v1.0-mini scene names).
        frames: camera frames per scene (keyframes and sweeps).
        rig: "surround" (the six nuScenes cameras) or "front" (CAM_FRONT only).
        size: (width, height) of every image.
        seed: master seed; the output is a deterministic function of the arguments.
        keyframe_every: frames 0, k, 2k, ... are samples (keyframes); the others are sweeps.
        fps: camera frame rate.
        ego_speed: m/s (None: drawn in [5, 10] per scene; 0 parks the ego car).
        shadows: cast sun shadows.
        threads: torch CPU threads while rendering (see ``synth``).
        labels: write the keyframes' Occ3D labels under ``gts/`` (the slowest part).
    Returns:
        The dataroot (absolute).
    """
    if not 1 <= scenes <= len(MINI_SCENES) or frames < 1 or keyframe_every < 1 or not fps > 0:
        raise OccLabelError(
            f"synth --layout nuscenes: scenes must be 1..{len(MINI_SCENES)}; frames, keyframe_every and "
            "fps positive"
        )
    if 1e6 / fps <= 2 * max(abs(v) for v in CAMERA_OFFSET_US.values()):
        raise OccLabelError(
            "synth --layout nuscenes: fps too high for the cameras' firing offsets (at most 14 Hz)"
        )
    with torch_threads(threads):
        return _write(
            Path(out).expanduser().resolve(), scenes, frames, rig, size, seed, keyframe_every, fps, progress,
            overwrite, ego_speed, shadows, labels,
        )  # fmt: skip


@dataclass(frozen=True)
class _Run:
    """The arguments every scene of one ``synth_nuscenes`` call is written with, and the tables."""

    root: Path
    cams: list[dict]
    size: tuple[int, int]  # (width, height)
    seed: int
    n_frames: int
    fps: float
    keyframe_every: int
    ego_speed: float | None
    shadows: bool
    labels: bool
    tables: Tables
    calib_tok: dict[str, str]  # channel -> calibrated_sensor token


def _write(root, n_scenes, n_frames, rig, size, seed, keyframe_every, fps, progress, overwrite, ego_speed,
           shadows, with_labels) -> Path:  # fmt: skip
    prepare_root(root, _OUTPUTS, overwrite)
    cams = make_rig(rig, size)
    tables = Tables()
    calib_tok = tables.add_sensors(seed, cams, T_EGO_FROM_LIDAR)
    tables.add_map(root, seed)
    W, H = int(size[0]), int(size[1])
    run = _Run(root, cams, (W, H), seed, n_frames, fps, keyframe_every, ego_speed, shadows, with_labels,
               tables,
               calib_tok)  # fmt: skip
    records, smetas = write_scenes(n_scenes, n_frames, "synth nuscenes", progress, partial(_write_scene, run))
    meta = {
        "format": FORMAT,
        "layout": "nuscenes",
        "version": VERSION,
        "rig": rig,
        "size": [W, H],
        "seed": int(seed),
        "fps": float(fps),
        "keyframe_every": int(keyframe_every),
        "camera_offset_us": {c["name"]: CAMERA_OFFSET_US[c["name"]] for c in cams},
        "lidar_offset_us": LIDAR_OFFSET_US,
        "grid": GRIDS["occ3d"].to_dict(),
        "scenes": smetas,
    }
    tables.write(root / VERSION)
    return finish(root, records, meta)


@dataclass
class _SceneRun:
    """One scene being written: its names, world and sample tokens, and what its frames collect."""

    si: int
    logfile: str
    base: int  # microseconds of the scene's time 0
    world: World
    token: str  # the scene's token
    sample_tok: dict[int, str]  # keyframe index -> sample token
    owner: dict[int, str]  # frame index -> the sample it belongs to (a sweep: the nearest, earlier on a tie)
    lidar: LidarWindow
    frames: list[Frame] = field(default_factory=list)
    prev_sd: dict[str, dict] = field(default_factory=dict)  # channel -> its last sample_data record


def _write_scene(run: _Run, si: int, bar) -> tuple[Scene, dict]:
    """Render and write scene ``si`` (log, frames, scene records); returns its record and its synthetic.json
    entry."""
    name, seed, tables = MINI_SCENES[si], run.seed, run.tables
    log_tok = token(seed, "log", si)
    logfile = f"n015-2018-07-{si + 10:02d}-11-22-45+0800"
    tables.log.append({"token": log_tok, "logfile": logfile, "vehicle": "n015",
                       "date_captured": f"2018-07-{si + 10:02d}", "location": LOCATION})  # fmt: skip
    tables.map[0]["log_tokens"].append(log_tok)
    world = build_world(
        seed, max(run.n_frames - 1, 1) / run.fps + 0.1, ego_speed=run.ego_speed, scene_index=si
    )
    key_idx = list(range(0, run.n_frames, run.keyframe_every))
    sample_tok = {i: token(seed, "sample", si, i) for i in key_idx}
    owner = {
        i: sample_tok[key_idx[min(round(i / run.keyframe_every), len(key_idx) - 1)]]
        for i in range(run.n_frames)
    }
    base = BASE_US + si * 100_000_000
    sc = _SceneRun(si, logfile, base, world, token(seed, "scene", si), sample_tok, owner,
                   LidarWindow(run.n_frames))  # fmt: skip
    smeta = {"name": name, **world.summary(), "exposure": {}}
    for i in range(run.n_frames):
        frame, gains = _write_frame(run, sc, i)
        smeta["exposure"][frame.token] = gains
        sc.frames.append(frame)
        for key, window in sc.lidar.due(i):
            op = run.root / "gts" / name / sample_tok[key.index] / "labels.npz"
            op.parent.mkdir(parents=True, exist_ok=True)
            save_npz(op, moving_rig_labels(world, run.cams, GRIDS["occ3d"], key, window))
            sc.frames[key.index].occupancy_path = op
        bar.update(1)
    tables.scene.append({
        "token": sc.token, "log_token": log_tok, "nbr_samples": len(key_idx),
        "first_sample_token": sample_tok[key_idx[0]], "last_sample_token": sample_tok[key_idx[-1]],
        "name": name, "description": f"synthetic street, seed {seed}, scene {si}",
    })  # fmt: skip
    return Scene(name=name, frames=sc.frames), smeta


def _write_frame(run: _Run, sc: _SceneRun, i: int) -> tuple[Frame, dict[str, float]]:
    """Frame ``i``: every camera at its own instant, then the LiDAR sweep; a keyframe is a sample (and waits
    in ``sc.lidar`` for its labels). Returns the frame's record and its exposure gains."""
    key = i % run.keyframe_every == 0
    rel_ref = START_US + round(i * 1e6 / run.fps)
    shots = [_write_camera(run, sc, i, ci, cam, rel_ref, key) for ci, cam in enumerate(run.cams)]
    images = {s.image.camera: s.image for s in shots}
    gains = {s.image.camera: round(s.gain, 6) for s in shots}
    T_wl, t_l, ts_l = _write_lidar(run, sc, i, rel_ref, key)
    if not key:  # a sweep: the token of its first camera's image, that camera's time and pose
        ref, ftok = shots[0], token(run.seed, "sample_data", sc.si, i, run.cams[0]["name"])
        T = ref.T_world_from_ego
        frame = Frame(token=ftok, timestamp=ref.ts / 1e6, keyframe=False, T_world_from_ego=T, images=images)
        return frame, gains
    run.tables.add_sample(sc.sample_tok[i], ts_l, sc.token)
    if run.labels:
        depths = {s.image.camera: (s.depth, s.T_world_from_ego) for s in shots}
        sc.lidar.pending[i] = Keyframe(i, T_wl, t_l, depths)
    frame = Frame(
        token=sc.sample_tok[i], timestamp=ts_l / 1e6, keyframe=True, T_world_from_ego=T_wl, images=images
    )
    return frame, gains


@dataclass
class _Shot:
    """One camera image of a frame, as written."""

    image: CameraImage
    depth: torch.Tensor  # [H x W] float32 metric z-depth, NaN sky
    T_world_from_ego: np.ndarray  # the ego pose at its instant
    ts: int  # timestamp, microseconds
    gain: float  # exposure gain


def _write_camera(run: _Run, sc: _SceneRun, i: int, ci: int, cam: dict, rel_ref: int, key: bool) -> _Shot:
    """Render camera ``cam`` of frame ``i`` at its firing instant; write its JPEG and ground truth and its
    ego_pose and sample_data records."""
    root, cn = run.root, cam["name"]
    rel = rel_ref + CAMERA_OFFSET_US[cn]
    t, ts = rel / 1e6, sc.base + rel
    T_we = sc.world.ego_pose(t)
    res = render_cameras(sc.world, [cam], T_we, t, shadows=run.shadows)
    gain = sc.world.exposure(t, ci)
    fname = f"{sc.logfile}__{cn}__{ts}.jpg"
    files = CameraFiles(root / ("samples" if key else "sweeps") / cn / fname,
                        root / "occlabel_gt" / "depth" / cn / (fname[:-4] + ".npy"),
                        root / "occlabel_gt" / "semantics" / cn / (fname[:-4] + ".png"))  # fmt: skip
    files.write(exposed(res["rgb"][0], gain), res["depth"][0], res["semantics"][0], quality=95)
    ep_tok = token(run.seed, "ego_pose", sc.si, i, cn)
    run.tables.ego_pose.append(pose_record(ep_tok, T_we, timestamp=ts))
    sd = sample_data(
        token(run.seed, "sample_data", sc.si, i, cn), sc.sample_tok[i] if key else sc.owner[i], ep_tok,
        run.calib_tok[cn], ts, "jpg", key, run.size, files.image.relative_to(root).as_posix(),
    ) | {
        "occlabel_depth": files.depth.relative_to(root).as_posix(),
        "occlabel_semantics": files.semantics.relative_to(root).as_posix(),
    }  # fmt: skip
    run.tables.chain(sc.prev_sd, cn, sd)
    image = files.record(root, cam, T_world_from_ego=T_we, timestamp=ts / 1e6)
    return _Shot(image, res["depth"][0], T_we, ts, gain)


def _write_lidar(run: _Run, sc: _SceneRun, i: int, rel_ref: int, key: bool) -> tuple[np.ndarray, float, int]:
    """Render frame ``i``'s LiDAR sweep; write its scan (LiDAR frame, N x 5) and its ego_pose and sample_data
    records; keep it in ``sc.lidar``. Returns its ego pose <4, 4>, time (s) and timestamp (us)."""
    rel_l = rel_ref + LIDAR_OFFSET_US
    t_l, ts_l = rel_l / 1e6, sc.base + rel_l
    T_wl = sc.world.ego_pose(t_l)
    pts_ego = render_lidar(sc.world, T_wl, t_l)["points_ego"].numpy().astype(np.float64)
    R, m = T_EGO_FROM_LIDAR[:3, :3], T_EGO_FROM_LIDAR[:3, 3]
    pts_l = (pts_ego - m) @ R  # R^T (p - m) for row vectors
    scan = np.zeros((len(pts_l), 5), np.float32)
    scan[:, :3] = pts_l
    lp = (
        run.root / ("samples" if key else "sweeps") / "LIDAR_TOP" / f"{sc.logfile}__LIDAR_TOP__{ts_l}.pcd.bin"
    )
    lp.parent.mkdir(parents=True, exist_ok=True)
    scan.tofile(lp)
    lep = token(run.seed, "ego_pose", sc.si, i, "LIDAR_TOP")
    run.tables.ego_pose.append(pose_record(lep, T_wl, timestamp=ts_l))
    lsd = sample_data(
        token(run.seed, "sample_data", sc.si, i, "LIDAR_TOP"), sc.sample_tok[i] if key else sc.owner[i], lep,
        run.calib_tok["LIDAR_TOP"], ts_l, "pcd", key, (0, 0), lp.relative_to(run.root).as_posix(),
    )  # fmt: skip
    run.tables.chain(sc.prev_sd, "LIDAR_TOP", lsd)
    sc.lidar.add_sweep(i, T_wl, pts_ego)
    return T_wl, t_l, ts_l
