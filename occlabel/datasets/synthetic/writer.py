"""``synth``: render synthetic scenes and write them as a folder dataset with full ground truth."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from occlabel.conventions import FREE, GRIDS, SKY
from occlabel.datasets.base import CameraImage, Frame, Scene
from occlabel.datasets.folder import MANIFEST, write_manifest
from occlabel.datasets.synthetic.occupancy import occupancy, visibility_mask
from occlabel.datasets.synthetic.render import LIDAR_ELEV_DEG, LIDAR_MOUNT, render_cameras, render_lidar
from occlabel.datasets.synthetic.rigs import DEFAULT_SIZE, make_rig
from occlabel.datasets.synthetic.world import build_world
from occlabel.errors import OccLabelError
from occlabel.geometry.camera import transform_points, unproject

META = "synthetic.json"
FORMAT = "occlabel.synthetic/1"
_OUTPUTS = ("images", "gt", "gts", "lidar", MANIFEST, META)
SKY_RANGE_M = 100.0  # sky rays carve free space up to this distance (beyond the Occ3D grid)
LIDAR_WINDOW = 2  # mask_lidar accumulates the sweeps of the keyframe and of the 2 frames either side


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed with fixed zip timestamps, so equal arrays give equal bytes."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zi = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, buf.getvalue())
    tmp.replace(path)


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise OccLabelError(f"{root}: exists and is not a directory")
    ours = [root / n for n in _OUTPUTS if (root / n).exists()]
    if ours:
        if not overwrite:
            raise OccLabelError(
                f"{root}: already holds a dataset; pass overwrite=True (--overwrite) to replace it"
            )
        for p in ours:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    root.mkdir(parents=True, exist_ok=True)


def camera_rays_ego(
    depth_m: torch.Tensor, K: np.ndarray, T_ego_from_cam: np.ndarray, max_range: float = SKY_RANGE_M
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays of one camera in the ego frame from its depth map.

    Args:
        depth_m: ``[H x W]`` metric z-depth, NaN for sky.
    Returns:
        origins ``[N x 3]``, ends ``[N x 3]`` (surface points; sky: ``max_range`` along the ray), hit ``[N]``.
    """
    H, W = depth_m.shape
    Kt = torch.from_numpy(np.asarray(K, np.float32))[None]
    T = torch.from_numpy(np.asarray(T_ego_from_cam, np.float32))[None]
    hit = torch.isfinite(depth_m) & (depth_m > 0)
    rays = unproject(torch.ones_like(depth_m)[None], Kt)[0]  # H W 3, z = 1
    unit = rays / rays.norm(dim=-1, keepdim=True)
    pts = torch.where(hit[..., None], rays * depth_m.nan_to_num(0)[..., None], unit * max_range)
    ends = transform_points(T, pts.reshape(1, -1, 3))[0]
    origins = T[0, :3, 3].expand_as(ends)
    return origins, ends, hit.reshape(-1)


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
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        args = (scenes, frames, rig, size, seed, keyframe_every, fps, progress, overwrite, ego_speed, shadows)
        return _synth(out, *args)
    finally:
        torch.set_num_threads(before)


def _synth(
    out, scenes, frames, rig, size, seed, keyframe_every, fps, progress, overwrite, ego_speed, shadows
) -> Path:
    if scenes < 1 or frames < 1 or keyframe_every < 1 or not fps > 0:
        raise OccLabelError("synth: scenes, frames, keyframe_every and fps must be positive")
    root = Path(out).expanduser().resolve()
    _prepare(root, overwrite)
    cams = make_rig(rig, size)
    grid = GRIDS["occ3d"]
    meta: dict = {
        "format": FORMAT,
        "rig": rig,
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "fps": float(fps),
        "keyframe_every": int(keyframe_every),
        "grid": grid.to_dict(),
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
        "scenes": [],
    }
    records: list[Scene] = []
    bar = tqdm(total=scenes * frames, desc="synth", unit="frame", disable=not progress)
    for si in range(scenes):
        name = f"synth-{seed}-{si:03d}"
        duration = max(frames - 1, 1) / fps
        world = build_world(seed, duration, ego_speed=ego_speed, scene_index=si)
        smeta = {"name": name, **world.summary(), "exposure": {}}
        fr: list[Frame] = []
        sweeps: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (origin, points), world frame
        key_data: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
        for fi in range(frames):
            t = fi / fps
            token = f"{name}-{fi:04d}"
            T_we = world.ego_pose(t)
            res = render_cameras(world, cams, T_we, t, shadows=shadows)
            images: dict[str, CameraImage] = {}
            smeta["exposure"][token] = {}
            for ci, cam in enumerate(cams):
                cn = cam["name"]
                gain = world.exposure(t, ci)
                smeta["exposure"][token][cn] = round(gain, 6)
                rgb = (res["rgb"][ci] * gain).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
                ip = root / "images" / cn / f"{token}.png"
                dp = root / "gt" / "depth" / cn / f"{token}.npy"
                sp = root / "gt" / "semantics" / cn / f"{token}.png"
                for p in (ip, dp, sp):
                    p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(ip)
                np.save(dp, res["depth"][ci].numpy().astype(np.float32))
                Image.fromarray(res["semantics"][ci].numpy()).save(sp)
                images[cn] = CameraImage(
                    camera=cn,
                    path=ip,
                    rel_path=ip.relative_to(root).as_posix(),
                    K=cam["K"],
                    T_ego_from_cam=cam["T_ego_from_cam"],
                    depth_path=dp,
                    semantics_path=sp,
                )
            lid = render_lidar(world, T_we, t)
            lp = root / "lidar" / f"{token}.npy"
            lp.parent.mkdir(parents=True, exist_ok=True)
            pts = lid["points_ego"].numpy()
            np.save(lp, pts)
            o_w = T_we[:3, :3] @ np.asarray(LIDAR_MOUNT) + T_we[:3, 3]
            sweeps[fi] = (o_w, pts.astype(np.float64) @ T_we[:3, :3].T + T_we[:3, 3])
            sweeps.pop(fi - 2 * LIDAR_WINDOW - 1, None)  # no pending keyframe needs it any more
            key = fi % keyframe_every == 0
            if key:
                key_data[fi] = (T_we, res["depth"].clone())
            fr.append(
                Frame(
                    token=token,
                    timestamp=round(t, 6),
                    keyframe=key,
                    T_world_from_ego=T_we,
                    images=images,
                    lidar_path=lp,
                )
            )
            # keyframes are labelled once the LiDAR sweeps of their window are rendered
            for k in [k for k in key_data if k + LIDAR_WINDOW <= fi or fi == frames - 1]:
                T_k, depth = key_data.pop(k)
                op = root / "gts" / name / fr[k].token / "labels.npz"
                op.parent.mkdir(parents=True, exist_ok=True)
                window = [
                    sweeps[j] for j in range(max(0, k - LIDAR_WINDOW), min(frames, k + LIDAR_WINDOW + 1))
                ]
                save_npz(op, _labels(world, cams, grid, T_k, k / fps, depth, window))
                fr[k].occupancy_path = op
            bar.update(1)
        records.append(Scene(name=name, frames=fr))
        meta["scenes"].append(smeta)
    bar.close()
    write_manifest(root, records)
    (root / META).write_text(json.dumps(meta, indent=1))
    return root


def _labels(world, cams, grid, T_we, t, depth, sweeps) -> dict[str, np.ndarray]:
    """Occ3D-layout labels of a keyframe: semantics, mask_camera (from the GT depth ``[C x H x W]``)
    and mask_lidar (from ``sweeps``: (sensor origin, returns) in the world frame)."""
    sem = occupancy(world, T_we, grid, t)
    rays = [camera_rays_ego(depth[ci], cam["K"], cam["T_ego_from_cam"]) for ci, cam in enumerate(cams)]
    o, e, h = (torch.cat(v) for v in zip(*rays, strict=True))
    mask_cam = visibility_mask(o, e, h, grid)
    T_ew = np.linalg.inv(T_we)
    lo = np.concatenate([np.broadcast_to(T_ew[:3, :3] @ ow + T_ew[:3, 3], pw.shape) for ow, pw in sweeps])
    le = np.concatenate([pw @ T_ew[:3, :3].T + T_ew[:3, 3] for _, pw in sweeps])
    lo_t = torch.from_numpy(lo.astype(np.float32))
    le_t = torch.from_numpy(le.astype(np.float32))
    mask_lidar = visibility_mask(lo_t, le_t, torch.ones(len(le_t), dtype=torch.bool), grid)
    return {"semantics": sem, "mask_lidar": mask_lidar, "mask_camera": mask_cam}


def exposure_gains(root: str | Path) -> dict[str, dict[str, float]]:
    """token -> camera -> exposure gain, read from a synthetic dataset's synthetic.json."""
    meta = json.loads((Path(root) / META).read_text())
    out: dict[str, dict[str, float]] = {}
    for s in meta["scenes"]:
        out.update(s["exposure"])
    return out
