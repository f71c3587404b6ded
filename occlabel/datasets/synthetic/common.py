"""Steps every synthetic layout writer shares: the output root, the torch thread setting, the files of one
camera image, the LiDAR sweep window and the Occ3D labels of a keyframe, and the closing manifest.

The layout writers (writer.py: folder, nuscenes_layout.py, kitti_layout.py, kitti_raw_layout.py) differ in
file names, timing and frames; what they write per camera image (RGB, depth, semantics) and how they label
a keyframe (occupancy, camera and LiDAR visibility) is the same and lives here.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from occlabel.datasets.base import CameraImage, Scene
from occlabel.datasets.folder import write_manifest
from occlabel.datasets.synthetic.occupancy import occupancy, visibility_mask
from occlabel.datasets.synthetic.render import LIDAR_MOUNT
from occlabel.errors import OccLabelError
from occlabel.geometry.camera import transform_points, unproject

META = "synthetic.json"
SKY_RANGE_M = 100.0  # sky rays carve free space up to this distance (beyond the Occ3D grid)
LIDAR_WINDOW = 2  # mask_lidar accumulates the sweeps of the keyframe and of the 2 frames either side

#: a LiDAR sweep in the world frame: (sensor origin <3>, returns <N, 3>), float64
Sweep = tuple[np.ndarray, np.ndarray]


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


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch CPU threads (None: torch's setting), restored afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def exposed(rgb: torch.Tensor, gain: float) -> np.ndarray:
    """Image bytes ``[H x W x 3]`` uint8 = round(255 * clip(gain * radiance, 0, 1)) of a rendered radiance."""
    return (rgb * gain).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


@dataclass(frozen=True)
class CameraFiles:
    """Where one camera image and its ground truth go (absolute paths)."""

    image: Path
    depth: Path  # float32 metric z-depth .npy, NaN sky
    semantics: Path  # uint8 Occ3D ids .png

    def write(
        self, rgb: np.ndarray, depth: torch.Tensor, semantics: torch.Tensor, grey: bool = False, **save
    ):
        """Write the image (``rgb`` uint8 ``[H x W x 3]``; ``grey``: as 8-bit luminance; ``save``: PIL
        options), the depth ``[H x W]`` and the semantics ``[H x W]``."""
        for p in (self.image, self.depth, self.semantics):
            p.parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(rgb)
        (im.convert("L") if grey else im).save(self.image, **save)
        np.save(self.depth, depth.numpy().astype(np.float32))
        Image.fromarray(semantics.numpy()).save(self.semantics)

    def record(self, root: Path, cam: dict, **extra) -> CameraImage:
        """The folder-format record of this image (``extra``: further CameraImage fields)."""
        return CameraImage(
            camera=cam["name"], path=self.image, rel_path=self.image.relative_to(root).as_posix(),
            K=cam["K"], T_ego_from_cam=cam["T_ego_from_cam"], depth_path=self.depth,
            semantics_path=self.semantics, **extra,
        )  # fmt: skip


def write_rig_images(
    root: Path,
    world,
    t: float,
    cams: list[dict],
    res: dict[str, torch.Tensor],
    files: Callable[[dict], CameraFiles],
    *,
    kitti: bool = False,
) -> tuple[dict[str, CameraImage], dict[str, float]]:
    """Write the images of a rig rendered at one instant (``res``: render_cameras' result).

    ``files(cam)`` names a camera's files; ``kitti``: KITTI cameras (exposure by their ``index``, cam0 and
    cam1 grey), else exposure by position in ``cams``. Returns the records and the gains (rounded to 1e-6)
    by camera name.
    """
    images: dict[str, CameraImage] = {}
    gains: dict[str, float] = {}
    for ci, cam in enumerate(cams):
        gain = world.exposure(t, cam["index"] if kitti else ci)
        gains[cam["name"]] = round(gain, 6)
        f = files(cam)
        grey = kitti and cam["index"] in (0, 1)
        f.write(exposed(res["rgb"][ci], gain), res["depth"][ci], res["semantics"][ci], grey=grey)
        images[cam["name"]] = f.record(root, cam)
    return images, gains


@dataclass
class Keyframe:
    """What a keyframe's Occ3D labels need once the LiDAR sweeps of its window are rendered.

    Attributes:
        index: frame index in the scene.
        T: <np.float64: 4, 4> world from the ego frame the labels are in.
        t: seconds (the poses of the moving actors).
        depths: camera name -> (depth ``[H x W]`` float32, NaN sky; <4, 4> world from ego at its instant).
    """

    index: int
    T: np.ndarray
    t: float
    depths: dict[str, tuple[torch.Tensor, np.ndarray]]


@dataclass
class LidarWindow:
    """World-frame LiDAR sweeps of the recent frames and the keyframes waiting for their window."""

    n_frames: int
    sweeps: dict[int, Sweep] = field(default_factory=dict)
    pending: dict[int, Keyframe] = field(default_factory=dict)

    def add_sweep(self, fi: int, T_world_from_ego: np.ndarray, pts_ego: np.ndarray) -> None:
        """Keep frame ``fi``'s returns (<float64: N, 3>, ego frame) in the world frame; drop the sweeps no
        pending keyframe needs any more."""
        T = T_world_from_ego
        o_w = T[:3, :3] @ np.asarray(LIDAR_MOUNT) + T[:3, 3]
        self.sweeps[fi] = (o_w, pts_ego @ T[:3, :3].T + T[:3, 3])
        self.sweeps.pop(fi - 2 * LIDAR_WINDOW - 1, None)

    def due(self, fi: int) -> list[tuple[Keyframe, list[Sweep]]]:
        """The pending keyframes whose window is complete at frame ``fi`` (all at the last frame), removed
        from ``pending``, each with its sweeps."""
        out = []
        for k in [k for k in self.pending if k + LIDAR_WINDOW <= fi or fi == self.n_frames - 1]:
            key = self.pending.pop(k)
            lo, hi = max(0, k - LIDAR_WINDOW), min(self.n_frames, k + LIDAR_WINDOW + 1)
            out.append((key, [self.sweeps[j] for j in range(lo, hi)]))
        return out


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


def lidar_mask(sweeps: list[Sweep], T_frame_from_world: np.ndarray, grid) -> np.ndarray:
    """Voxels of ``grid`` (in the frame ``T_frame_from_world`` maps to) that a LiDAR ray of ``sweeps``
    crossed or hit: visibility_mask of all returns."""
    T = T_frame_from_world
    lo = np.concatenate([np.broadcast_to(T[:3, :3] @ ow + T[:3, 3], pw.shape) for ow, pw in sweeps])
    le = np.concatenate([pw @ T[:3, :3].T + T[:3, 3] for _, pw in sweeps])
    lo_t = torch.from_numpy(lo.astype(np.float32))
    le_t = torch.from_numpy(le.astype(np.float32))
    return visibility_mask(lo_t, le_t, torch.ones(len(le_t), dtype=torch.bool), grid)


def occ3d_labels(world, grid, key: Keyframe, rays: list, sweeps: list[Sweep]) -> dict[str, np.ndarray]:
    """Occ3D-layout labels of a keyframe in the ego frame ``key.T``: semantics, mask_lidar (from ``sweeps``)
    and mask_camera (from ``rays``: camera_rays_ego results in that frame)."""
    sem = occupancy(world, key.T, grid, key.t)
    o, e, h = (torch.cat(v) for v in zip(*rays, strict=True))
    mask_cam = visibility_mask(o, e, h, grid)
    mask_lidar = lidar_mask(sweeps, np.linalg.inv(key.T), grid)
    return {"semantics": sem, "mask_lidar": mask_lidar, "mask_camera": mask_cam}


def moving_rig_labels(world, cams: list[dict], grid, key: Keyframe, sweeps: list[Sweep]) -> dict:
    """occ3d_labels with each camera's rays moved from the ego pose at its own instant into ``key.T``."""
    T_LW = np.linalg.inv(key.T)
    rays = []
    for cam in cams:
        depth, T_we = key.depths[cam["name"]]
        rays.append(camera_rays_ego(depth, cam["K"], T_LW @ T_we @ cam["T_ego_from_cam"]))
    return occ3d_labels(world, grid, key, rays, sweeps)


def write_scenes(
    n: int, n_frames: int, desc: str, progress: bool, write_scene: Callable[[int, tqdm], tuple[Scene, dict]]
) -> tuple[list[Scene], list[dict]]:
    """Call ``write_scene(index, bar)`` for scenes 0..n-1 under one progress bar (``n * n_frames`` frames);
    returns the scenes' records and their synthetic.json entries."""
    records, metas = [], []
    bar = tqdm(total=n * n_frames, desc=desc, unit="frame", disable=not progress)
    for si in range(n):
        scene, smeta = write_scene(si, bar)
        records.append(scene)
        metas.append(smeta)
    bar.close()
    return records, metas


def finish(root: Path, records: list[Scene], meta: dict) -> Path:
    """Write the folder manifest and synthetic.json; returns ``root``."""
    write_manifest(root, records)
    (root / META).write_text(json.dumps(meta, indent=1))
    return root
