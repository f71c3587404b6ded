"""Shared fixtures: tiny folder datasets written on the fly, and the optional ../shared real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cache_builders import R_EGO_FROM_CAM
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cli(*args, catch_exceptions: bool = True) -> str:
    """Run ``occlabel -q ARGS...`` in-process (click's runner), assert exit code 0, return the output."""
    from click.testing import CliRunner

    from occlabel.cli import main

    r = CliRunner().invoke(main, ["-q", *map(str, args)], catch_exceptions=catch_exceptions)
    assert r.exit_code == 0, r.output
    return r.output


def pytest_configure(config):
    import torch

    torch.set_num_threads(2)


def look_at_pose(position, yaw: float = 0.0) -> np.ndarray:
    """T_world_from_ego for an ego at ``position`` (x, y, z) heading ``yaw`` radians (about z)."""
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = position
    return T


def front_camera(height: float = 1.5) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R_EGO_FROM_CAM
    T[:3, 3] = [1.0, 0.0, height]
    return T


def write_tiny_folder(root: Path, n_frames: int = 3, size=(32, 24), with_depth=True, with_sem=True) -> Path:
    """A minimal valid folder dataset: one scene, one front camera, constant depth 10 m, ego moving +x."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    W, H = size
    K = [[W, 0, (W - 1) / 2], [0, W, (H - 1) / 2], [0, 0, 1]]
    rng = np.random.default_rng(0)
    frames = []
    for t in range(n_frames):
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{t:03d}.png")
        cam = {"path": f"images/{t:03d}.png", "K": K, "T_ego_from_cam": front_camera().tolist()}
        if with_depth:
            np.save(root / "images" / f"{t:03d}_depth.npy", np.full((H, W), 10.0, np.float32))
            cam["depth"] = f"images/{t:03d}_depth.npy"
        if with_sem:
            sem = np.full((H, W), 15, np.uint8)
            sem[: H // 3] = 254
            Image.fromarray(sem).save(root / "images" / f"{t:03d}_sem.png")
            cam["semantics"] = f"images/{t:03d}_sem.png"
        frames.append(
            {
                "token": f"f{t:03d}",
                "timestamp": 0.1 * t,
                "keyframe": t == 0,
                "T_world_from_ego": look_at_pose([0.5 * t, 0, 0]).tolist(),
                "images": {"CAM_FRONT": cam},
            }
        )
    import json

    (root / "occlabel.json").write_text(
        json.dumps({"format": "occlabel.folder/1", "scenes": [{"name": "s0", "frames": frames}]})
    )
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return write_tiny_folder(tmp_path / "ds")
