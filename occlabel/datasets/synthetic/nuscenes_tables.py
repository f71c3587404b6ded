"""The nuScenes tables (v1.0-mini style) of the synthetic nuScenes layout: records, tokens and their links.

``Tables`` holds one list of records per table and writes them as ``<table>.json``; the writer
(nuscenes_layout.py) fills them frame by frame: ``sample_data`` records are linked per channel
(``Tables.chain``), samples per scene (``Tables.add_sample``). Tokens are deterministic hashes (``token``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from occlabel.datasets.base import quaternion_from_rotation


def token(*parts) -> str:
    """A deterministic token: the md5 hex digest of the parts joined by "/"."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def pose_record(token: str, T: np.ndarray, **extra) -> dict:
    """A record: ``token``, ``extra``, then ``T``'s rotation (quaternion w, x, y, z) and translation."""
    q = quaternion_from_rotation(T[:3, :3])
    return {
        "token": token,
        **extra,
        "rotation": [float(v) for v in q],
        "translation": [float(v) for v in T[:3, 3]],
    }


@dataclass
class Tables:
    """The v1.0-mini tables being written: one list of records per table (``<table>.json``)."""

    scene: list[dict] = field(default_factory=list)
    sample: list[dict] = field(default_factory=list)
    sample_data: list[dict] = field(default_factory=list)
    ego_pose: list[dict] = field(default_factory=list)
    calibrated_sensor: list[dict] = field(default_factory=list)
    sensor: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)
    map: list[dict] = field(default_factory=list)
    category: list[dict] = field(default_factory=list)
    attribute: list[dict] = field(default_factory=list)
    visibility: list[dict] = field(default_factory=list)
    instance: list[dict] = field(default_factory=list)
    sample_annotation: list[dict] = field(default_factory=list)

    def add_sensors(self, seed: int, cams: list[dict], T_ego_from_lidar: np.ndarray) -> dict[str, str]:
        """sensor and calibrated_sensor records of the cameras and LIDAR_TOP (at ``T_ego_from_lidar``);
        returns channel -> calibrated_sensor token."""
        channels = [c["name"] for c in cams] + ["LIDAR_TOP"]
        sensor_tok = {ch: token(seed, "sensor", ch) for ch in channels}
        calib_tok = {ch: token(seed, "calibrated_sensor", ch) for ch in channels}
        for ch in channels:
            modality = "lidar" if ch == "LIDAR_TOP" else "camera"
            self.sensor.append({"token": sensor_tok[ch], "channel": ch, "modality": modality})
        for c in cams:
            self.calibrated_sensor.append(
                pose_record(calib_tok[c["name"]], c["T_ego_from_cam"], sensor_token=sensor_tok[c["name"]])
                | {"camera_intrinsic": np.asarray(c["K"]).tolist()}
            )
        self.calibrated_sensor.append(
            pose_record(calib_tok["LIDAR_TOP"], T_ego_from_lidar, sensor_token=sensor_tok["LIDAR_TOP"])
            | {"camera_intrinsic": []}
        )
        return calib_tok

    def add_map(self, root: Path, seed: int) -> None:
        """The map record and its mask file (a 1x1 px PNG)."""
        map_tok = token(seed, "map")
        (root / "maps").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "maps" / f"{map_tok}.png")
        self.map.append(
            {
                "token": map_tok,
                "log_tokens": [],
                "category": "semantic_prior",
                "filename": f"maps/{map_tok}.png",
            }
        )

    def add_sample(self, token: str, timestamp: int, scene_token: str) -> None:
        """A sample record, linked to the previous sample of its scene."""
        self.sample.append(
            {"token": token, "timestamp": timestamp, "prev": "", "next": "", "scene_token": scene_token}
        )
        if len(self.sample) > 1 and self.sample[-2]["scene_token"] == scene_token:
            self.sample[-2]["next"] = token
            self.sample[-1]["prev"] = self.sample[-2]["token"]

    def chain(self, prev: dict[str, dict], channel: str, sd: dict) -> None:
        """Append a sample_data record and link it to the previous one of its channel (same scene)."""
        p = prev.get(channel)
        if (
            p is not None
            and p["timestamp"] < sd["timestamp"]
            and abs(p["timestamp"] - sd["timestamp"]) < 50_000_000
        ):
            p["next"], sd["prev"] = sd["token"], p["token"]
        prev[channel] = sd
        self.sample_data.append(sd)

    def write(self, version_dir: Path) -> None:
        """Write every table as ``<version_dir>/<table>.json``."""
        version_dir.mkdir(parents=True, exist_ok=True)
        for f in fields(self):
            (version_dir / f"{f.name}.json").write_text(json.dumps(getattr(self, f.name), indent=0))


def sample_data(token, sample_token, ego_pose_token, calib_token, timestamp, fileformat, key, size, filename):
    """A sample_data record (``size``: (width, height), 0 for the LiDAR), unlinked."""
    return {
        "token": token,
        "sample_token": sample_token,
        "ego_pose_token": ego_pose_token,
        "calibrated_sensor_token": calib_token,
        "timestamp": timestamp,
        "fileformat": fileformat,
        "is_key_frame": key,
        "height": size[1],
        "width": size[0],
        "filename": filename,
        "prev": "",
        "next": "",
    }
