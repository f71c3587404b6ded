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

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from occlabel.conventions import GRIDS
from occlabel.datasets.base import (
    CameraImage,
    Frame,
    Scene,
    quaternion_from_rotation,
    rigid_transform,
)
from occlabel.datasets.folder import MANIFEST, write_manifest
from occlabel.datasets.synthetic.occupancy import occupancy, visibility_mask
from occlabel.datasets.synthetic.render import LIDAR_MOUNT, render_cameras, render_lidar
from occlabel.datasets.synthetic.rigs import DEFAULT_SIZE, make_rig
from occlabel.datasets.synthetic.world import build_world
from occlabel.datasets.synthetic.writer import LIDAR_WINDOW, META, camera_rays_ego, save_npz
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


def _token(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _pose_record(token: str, T: np.ndarray, **extra) -> dict:
    q = quaternion_from_rotation(T[:3, :3])
    return {
        "token": token,
        **extra,
        "rotation": [float(v) for v in q],
        "translation": [float(v) for v in T[:3, 3]],
    }


def prepare_root(root: Path, outputs: tuple[str, ...], overwrite: bool) -> None:
    """Create ``root``; a dataset already there (any of ``outputs``) is replaced only with ``overwrite``."""
    if root.exists() and not root.is_dir():
        raise OccLabelError(f"{root}: exists and is not a directory")
    ours = [root / n for n in outputs if (root / n).exists()]
    if ours:
        if not overwrite:
            raise OccLabelError(
                f"{root}: already holds a dataset; pass overwrite=True (--overwrite) to replace it"
            )
        for p in ours:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    root.mkdir(parents=True, exist_ok=True)


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
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _write(
            Path(out).expanduser().resolve(), scenes, frames, rig, size, seed, keyframe_every, fps, progress,
            overwrite, ego_speed, shadows, labels,
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)


def _write(root, n_scenes, n_frames, rig, size, seed, keyframe_every, fps, progress, overwrite, ego_speed,
           shadows, with_labels) -> Path:  # fmt: skip
    prepare_root(root, _OUTPUTS, overwrite)
    cams = make_rig(rig, size)
    W, H = int(size[0]), int(size[1])
    grid = GRIDS["occ3d"]
    tables: dict[str, list[dict]] = {
        k: []
        for k in (
            "scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "log", "map",
            "category", "attribute", "visibility", "instance", "sample_annotation",
        )
    }  # fmt: skip
    channels = [c["name"] for c in cams] + ["LIDAR_TOP"]
    sensor_tok = {ch: _token(seed, "sensor", ch) for ch in channels}
    calib_tok = {ch: _token(seed, "calibrated_sensor", ch) for ch in channels}
    for ch in channels:
        tables["sensor"].append(
            {"token": sensor_tok[ch], "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"}
        )
    for c in cams:
        tables["calibrated_sensor"].append(
            _pose_record(calib_tok[c["name"]], c["T_ego_from_cam"], sensor_token=sensor_tok[c["name"]])
            | {"camera_intrinsic": np.asarray(c["K"]).tolist()}
        )
    tables["calibrated_sensor"].append(
        _pose_record(calib_tok["LIDAR_TOP"], T_EGO_FROM_LIDAR, sensor_token=sensor_tok["LIDAR_TOP"])
        | {"camera_intrinsic": []}
    )
    map_tok = _token(seed, "map")
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "maps" / f"{map_tok}.png")
    tables["map"].append(
        {"token": map_tok, "log_tokens": [], "category": "semantic_prior", "filename": f"maps/{map_tok}.png"}
    )

    meta: dict = {
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
        "grid": grid.to_dict(),
        "scenes": [],
    }
    records: list[Scene] = []
    bar = tqdm(total=n_scenes * n_frames, desc="synth nuscenes", unit="frame", disable=not progress)
    for si in range(n_scenes):
        name = MINI_SCENES[si]
        log_tok = _token(seed, "log", si)
        logfile = f"n015-2018-07-{si + 10:02d}-11-22-45+0800"
        tables["log"].append(
            {
                "token": log_tok,
                "logfile": logfile,
                "vehicle": "n015",
                "date_captured": f"2018-07-{si + 10:02d}",
                "location": LOCATION,
            }
        )
        tables["map"][0]["log_tokens"].append(log_tok)
        base = BASE_US + si * 100_000_000
        world = build_world(seed, max(n_frames - 1, 1) / fps + 0.1, ego_speed=ego_speed, scene_index=si)
        scene_tok = _token(seed, "scene", si)
        smeta = {"name": name, **world.summary(), "exposure": {}}
        key_idx = list(range(0, n_frames, keyframe_every))
        sample_tok = {i: _token(seed, "sample", si, i) for i in key_idx}

        # a sweep belongs to the nearest sample (the earlier one on a tie)
        owner = {
            i: sample_tok[key_idx[min(round(i / keyframe_every), len(key_idx) - 1)]] for i in range(n_frames)
        }

        prev_sd: dict[str, dict] = {}
        frames: list[Frame] = []
        sweeps: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (lidar origin, points), world frame
        pending: dict[int, dict] = {}
        for i in range(n_frames):
            key = i % keyframe_every == 0
            rel_ref = START_US + round(i * 1e6 / fps)
            images: dict[str, CameraImage] = {}
            folder = "samples" if key else "sweeps"
            depths = {}
            ftok = sample_tok[i] if key else _token(seed, "sample_data", si, i, cams[0]["name"])
            smeta["exposure"][ftok] = {}
            for ci, cam in enumerate(cams):
                cn = cam["name"]
                rel = rel_ref + CAMERA_OFFSET_US[cn]
                t, ts = rel / 1e6, base + rel
                T_we = world.ego_pose(t)
                res = render_cameras(world, [cam], T_we, t, shadows=shadows)
                gain = world.exposure(t, ci)
                rgb = (res["rgb"][0] * gain).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
                fname = f"{logfile}__{cn}__{ts}.jpg"
                ip = root / folder / cn / fname
                dp = root / "occlabel_gt" / "depth" / cn / (fname[:-4] + ".npy")
                sp = root / "occlabel_gt" / "semantics" / cn / (fname[:-4] + ".png")
                for p in (ip, dp, sp):
                    p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(ip, quality=95)
                np.save(dp, res["depth"][0].numpy().astype(np.float32))
                Image.fromarray(res["semantics"][0].numpy()).save(sp)
                sd_tok = _token(seed, "sample_data", si, i, cn)
                ep_tok = _token(seed, "ego_pose", si, i, cn)
                tables["ego_pose"].append(_pose_record(ep_tok, T_we, timestamp=ts))
                sd = {
                    "token": sd_tok,
                    "sample_token": sample_tok[i] if key else owner[i],
                    "ego_pose_token": ep_tok,
                    "calibrated_sensor_token": calib_tok[cn],
                    "timestamp": ts,
                    "fileformat": "jpg",
                    "is_key_frame": key,
                    "height": H,
                    "width": W,
                    "filename": ip.relative_to(root).as_posix(),
                    "prev": "",
                    "next": "",
                    "occlabel_depth": dp.relative_to(root).as_posix(),
                    "occlabel_semantics": sp.relative_to(root).as_posix(),
                }
                _chain(prev_sd, cn, sd, tables)
                images[cn] = CameraImage(
                    camera=cn, path=ip, rel_path=sd["filename"], K=cam["K"],
                    T_ego_from_cam=cam["T_ego_from_cam"], T_world_from_ego=T_we, depth_path=dp,
                    semantics_path=sp, timestamp=ts / 1e6,
                )  # fmt: skip
                if ci == 0:
                    ref_pose, ref_ts = T_we, ts
                depths[cn] = (res["depth"][0], T_we)
                smeta["exposure"][ftok][cn] = round(gain, 6)

            # LiDAR sweep (every frame; keyframes' go to samples/)
            rel_l = rel_ref + LIDAR_OFFSET_US
            t_l, ts_l = rel_l / 1e6, base + rel_l
            T_wl = world.ego_pose(t_l)
            pts_ego = render_lidar(world, T_wl, t_l)["points_ego"].numpy().astype(np.float64)
            R, m = T_EGO_FROM_LIDAR[:3, :3], T_EGO_FROM_LIDAR[:3, 3]
            pts_l = (pts_ego - m) @ R  # R^T (p - m) for row vectors
            scan = np.zeros((len(pts_l), 5), np.float32)
            scan[:, :3] = pts_l
            lname = f"{logfile}__LIDAR_TOP__{ts_l}.pcd.bin"
            lp = root / folder / "LIDAR_TOP" / lname
            lp.parent.mkdir(parents=True, exist_ok=True)
            scan.tofile(lp)
            lep = _token(seed, "ego_pose", si, i, "LIDAR_TOP")
            tables["ego_pose"].append(_pose_record(lep, T_wl, timestamp=ts_l))
            lsd = {
                "token": _token(seed, "sample_data", si, i, "LIDAR_TOP"),
                "sample_token": sample_tok[i] if key else owner[i],
                "ego_pose_token": lep,
                "calibrated_sensor_token": calib_tok["LIDAR_TOP"],
                "timestamp": ts_l,
                "fileformat": "pcd",
                "is_key_frame": key,
                "height": 0,
                "width": 0,
                "filename": lp.relative_to(root).as_posix(),
                "prev": "",
                "next": "",
            }
            _chain(prev_sd, "LIDAR_TOP", lsd, tables)
            o_w = T_wl[:3, :3] @ np.asarray(LIDAR_MOUNT) + T_wl[:3, 3]
            sweeps[i] = (o_w, pts_ego @ T_wl[:3, :3].T + T_wl[:3, 3])
            sweeps.pop(i - 2 * LIDAR_WINDOW - 1, None)

            if key:
                tables["sample"].append(
                    {
                        "token": sample_tok[i],
                        "timestamp": ts_l,
                        "prev": "",
                        "next": "",
                        "scene_token": scene_tok,
                    }
                )
                if len(tables["sample"]) > 1 and tables["sample"][-2]["scene_token"] == scene_tok:
                    tables["sample"][-2]["next"] = sample_tok[i]
                    tables["sample"][-1]["prev"] = tables["sample"][-2]["token"]
                frame = Frame(
                    token=sample_tok[i],
                    timestamp=ts_l / 1e6,
                    keyframe=True,
                    T_world_from_ego=T_wl,
                    images=images,
                )
                if with_labels:
                    pending[i] = {"T": T_wl, "t": t_l, "depths": depths}
            else:
                frame = Frame(
                    token=ftok,
                    timestamp=ref_ts / 1e6,
                    keyframe=False,
                    T_world_from_ego=ref_pose,
                    images=images,
                )
            frames.append(frame)
            for k in [k for k in pending if k + LIDAR_WINDOW <= i or i == n_frames - 1]:
                p = pending.pop(k)
                op = root / "gts" / name / sample_tok[k] / "labels.npz"
                op.parent.mkdir(parents=True, exist_ok=True)
                window = [
                    sweeps[j] for j in range(max(0, k - LIDAR_WINDOW), min(n_frames, k + LIDAR_WINDOW + 1))
                ]
                save_npz(op, _labels(world, cams, grid, p, window))
                frames[k].occupancy_path = op
            bar.update(1)
        tables["scene"].append(
            {
                "token": scene_tok,
                "log_token": log_tok,
                "nbr_samples": len(key_idx),
                "first_sample_token": sample_tok[key_idx[0]],
                "last_sample_token": sample_tok[key_idx[-1]],
                "name": name,
                "description": f"synthetic street, seed {seed}, scene {si}",
            }
        )
        records.append(Scene(name=name, frames=frames))
        meta["scenes"].append(smeta)
    bar.close()
    (root / VERSION).mkdir(parents=True, exist_ok=True)
    for k, rows in tables.items():
        (root / VERSION / f"{k}.json").write_text(json.dumps(rows, indent=0))
    write_manifest(root, records)
    (root / META).write_text(json.dumps(meta, indent=1))
    return root


def _chain(prev: dict[str, dict], channel: str, sd: dict, tables: dict) -> None:
    """Append a sample_data record and link it to the previous one of its channel (same scene)."""
    p = prev.get(channel)
    if (
        p is not None
        and p["timestamp"] < sd["timestamp"]
        and abs(p["timestamp"] - sd["timestamp"]) < 50_000_000
    ):
        p["next"], sd["prev"] = sd["token"], p["token"]
    prev[channel] = sd
    tables["sample_data"].append(sd)


def _labels(world, cams, grid, key: dict, sweeps) -> dict[str, np.ndarray]:
    """Occ3D labels of a sample in the ego frame at the LiDAR time ``key["T"]``: semantics, mask_camera
    from each camera's depth at its own instant (moved into that frame), mask_lidar from ``sweeps``."""
    T_L = key["T"]
    T_LW = np.linalg.inv(T_L)
    sem = occupancy(world, T_L, grid, key["t"])
    rays = []
    for cam in cams:
        depth, T_we = key["depths"][cam["name"]]
        rays.append(camera_rays_ego(depth, cam["K"], T_LW @ T_we @ cam["T_ego_from_cam"]))
    o, e, h = (torch.cat(v) for v in zip(*rays, strict=True))
    mask_cam = visibility_mask(o, e, h, grid)
    lo = np.concatenate([np.broadcast_to(T_LW[:3, :3] @ ow + T_LW[:3, 3], pw.shape) for ow, pw in sweeps])
    le = np.concatenate([pw @ T_LW[:3, :3].T + T_LW[:3, 3] for _, pw in sweeps])
    mask_lidar = visibility_mask(
        torch.from_numpy(lo.astype(np.float32)),
        torch.from_numpy(le.astype(np.float32)),
        torch.ones(len(le), dtype=torch.bool),
        grid,
    )
    return {"semantics": sem, "mask_lidar": mask_lidar, "mask_camera": mask_cam}
