"""``files:DIR`` semantics: import per-image label maps the user already has.

For an image whose dataset-relative path is ``images/CAM_FRONT/0001.jpg`` the map is read from
``DIR/images/CAM_FRONT/0001.<ext>``, trying ``extensions`` in order. Formats:

- ``.png`` / ``.npy``: single-channel uint8 class ids.
- ``.bin``: OccNeRF's raw int8 maps, row-major, shape ``bin_shape`` (900 x 1600 for nuScenes); negative
  ids are read modulo 256 (-1 -> 255), so a mapping may name them either way.

``mapping`` (source id -> target id, as a dict or a YAML/JSON file holding one) is applied with a
256-entry lookup table; ids it does not name become UNLABELED, or stay as they are with
``identity_unmapped``. Without a mapping the ids are used as they are (already in the target vocabulary:
conventions' class ids, SKY, UNLABELED). ``vocab`` names the vocabulary the (mapped) ids belong to (a
built-in name or a user YAML file; default Occ3D): it is recorded in the cache, and the later stages take
their ground, movable and label classes from it. Confidence is 1 where labelled and 0 where UNLABELED.
Maps are resized to the working resolution with centre-aligned nearest neighbour ("nearest-exact").

The backend reads ``batch["records"][i].rel_path`` to know which image it is processing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from occlabel.conventions import UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.base import SemanticModel
from occlabel.models.depth.files import (
    batch_rel_paths,
    files_dir,
    files_key,
    find_result,
    normalise_extensions,
)
from occlabel.models.vocab import load_vocabulary


def _as_id(v: Any, what: str, name: str, allow_negative: bool) -> int:
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise OccLabelError(f"{name}: mapping {what} {v!r} is not an integer id") from None
    lo = -128 if allow_negative else 0
    if not lo <= i <= 255:
        raise OccLabelError(f"{name}: mapping {what} {i} is outside [{lo}, 255]")
    return i % 256


def build_lut(
    mapping: dict | str | Path | None, identity_unmapped: bool = False, name: str = "files"
) -> np.ndarray:
    """<np.uint8: 256> lookup table from a source id -> target id dict (or a YAML/JSON file with one).

    ``None`` gives the identity. Source ids may be given as -128..255 (negative ids = int8 values);
    unnamed ids map to UNLABELED, or to themselves when ``identity_unmapped``.
    """
    if mapping is None:
        return np.arange(256, dtype=np.uint8)
    if isinstance(mapping, str | Path):
        path = Path(mapping).expanduser()
        try:
            text = path.read_text()
        except OSError as e:
            raise OccLabelError(f"{name}: cannot read mapping file {path} ({e})") from None
        try:
            mapping = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise OccLabelError(f"{name}: cannot parse mapping file {path} ({e})") from None
    if not isinstance(mapping, dict):
        raise OccLabelError(
            f"{name}: mapping must be a dict source id -> target id, got {type(mapping).__name__}"
        )
    lut = np.arange(256, dtype=np.uint8) if identity_unmapped else np.full(256, UNLABELED, np.uint8)
    for src, dst in mapping.items():
        lut[_as_id(src, "source id", name, True)] = _as_id(dst, "target id", name, False)
    return lut


def read_label_file(path: Path, bin_shape: tuple[int, int]) -> np.ndarray:
    """A label map as <np.uint8: H, W> (int8 .bin values modulo 256)."""
    ext = path.suffix.lower()
    try:
        if ext == ".bin":
            raw = np.fromfile(path, dtype=np.int8)
            h, w = (int(v) for v in bin_shape)
            if raw.size != h * w:
                raise OccLabelError(f"{path}: {raw.size} bytes, expected {h * w} for bin_shape ({h}, {w})")
            s = raw.reshape(h, w).view(np.uint8)
        elif ext == ".npy":
            s = np.load(path)
        elif ext == ".png":
            with Image.open(path) as im:
                if im.mode not in ("L", "P", "I", "I;16"):
                    raise OccLabelError(f"{path}: label PNG must be single-channel, got mode {im.mode}")
                s = np.asarray(im)
        else:
            raise OccLabelError(f"{path}: unsupported label format {ext} (use .png, .npy or .bin)")
    except (OSError, ValueError) as e:
        raise OccLabelError(f"{path}: cannot read ({e})") from None
    if s.ndim > 2:
        s = s.reshape([n for n in s.shape if n != 1] or [1])
    if s.ndim != 2:
        raise OccLabelError(f"{path}: label map must be 2D (H, W), got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        raise OccLabelError(f"{path}: label map must hold integer ids, got dtype {s.dtype}")
    if s.dtype not in (np.uint8, np.int8) and (s.min() < -128 or s.max() > 255):
        raise OccLabelError(f"{path}: label ids must lie in [-128, 255], got [{s.min()}, {s.max()}]")
    return (s.astype(np.int64) % 256).astype(np.uint8)


class FilesSemantics(SemanticModel):
    """Label maps read from ``DIR/<image rel_path with its extension replaced>``, mapped by a LUT."""

    default_conf: ClassVar[dict[str, Any]] = {
        "dir": None,  # results directory (default: what follows "files:" in the model name)
        "extensions": (".png", ".npy", ".bin"),  # tried in this order for each image
        "bin_shape": (900, 1600),  # (H, W) of raw int8 .bin maps (OccNeRF, nuScenes native size)
        "mapping": None,  # dict source id -> target id, or a YAML/JSON file with one; None = identity
        "identity_unmapped": False,  # ids absent from mapping keep their value (else become UNLABELED)
        "vocab": None,  # vocabulary of the (mapped) ids: "occ3d", "semantickitti" or a YAML file; None = Occ3D
    }

    def __init__(self, name: str, conf: dict[str, Any] | None = None, device: torch.device | str = "cpu"):
        super().__init__(name, conf, device)
        self.dir = files_dir(name, self.conf["dir"])
        self.conf["dir"] = str(self.dir)
        self.extensions = normalise_extensions(self.conf["extensions"])
        self.conf["extensions"] = list(self.extensions)
        bs = self.conf["bin_shape"]
        if len(bs) != 2 or min(int(v) for v in bs) <= 0:
            raise OccLabelError(f"{name}: bin_shape must be (H, W) with positive sizes, got {bs!r}")
        self.conf["bin_shape"] = [int(v) for v in bs]
        self.lut = build_lut(self.conf["mapping"], bool(self.conf["identity_unmapped"]), name)
        if self.conf["vocab"] is not None:
            self.conf["vocab"] = str(self.conf["vocab"])
            self.vocab = load_vocabulary(self.conf["vocab"])

    @property
    def key(self) -> str:
        return files_key(self.dir)

    def provenance(self) -> dict[str, Any]:
        # record the LUT actually applied (a mapping file may change after the run)
        return {**super().provenance(), "lut": self.lut.tolist()}

    def load(self, rel_path: str) -> np.ndarray:
        """The native-resolution mapped label map of one image <np.uint8: H, W>."""
        path = find_result(self.name, self.dir, rel_path, self.extensions)
        return self.lut[read_label_file(path, self.conf["bin_shape"])]

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        img = batch["image"]
        h, w = img.shape[-2:]
        labels = []
        for rel in batch_rel_paths(self.name, batch):
            s = torch.from_numpy(self.load(rel)).to(img.device)
            if tuple(s.shape) != (h, w):
                s = F.interpolate(s[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0]
            labels.append(s.to(torch.uint8))
        out = torch.stack(labels)
        return out, (out != UNLABELED).float()
