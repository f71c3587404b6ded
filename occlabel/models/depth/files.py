"""``files:DIR`` depth: import per-image depth or disparity maps the user already has.

For an image whose dataset-relative path is ``images/CAM_FRONT/0001.jpg`` the map is read from
``DIR/images/CAM_FRONT/0001.<ext>``, trying ``extensions`` in order. Formats:

- ``.npy``: a float (H, W) array (singleton leading/trailing axes are squeezed).
- ``.png``: uint16; ``kind="depth"``: metres * 256 (KITTI style); ``kind="disparity"``: the raw values.
- ``.pfm``: Portable Float Map ("Pf" grey or "PF" colour, first channel used), any endianness.

0 and NaN mean "no value". Maps are resized to the working resolution on the batch's device with
validity-normalised bilinear interpolation (values and validity mask are resized separately and divided),
so missing pixels never bleed into valid ones and stay NaN where less than half of the footprint is valid.

The backend reads ``batch["records"][i].rel_path`` to know which image it is processing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from occlabel.errors import OccLabelError
from occlabel.models.base import DepthModel

PREFIX = "files:"

#: a resized pixel is valid when at least this fraction of its (bilinear) footprint is valid
MIN_VALID_WEIGHT = 0.5


# --------------------------------------------------------------------------------------------------
# Shared with occlabel.models.semantics.files
# --------------------------------------------------------------------------------------------------


def files_dir(name: str, conf_dir: str | Path | None) -> Path:
    """The results directory: ``conf_dir`` when set, else what follows "files:" in ``name``."""
    d = conf_dir
    if not d and name.startswith(PREFIX):
        d = name[len(PREFIX) :]
    if not d:
        raise OccLabelError(f"{name}: no results directory (use the name files:DIR or the option dir)")
    path = Path(d).expanduser()
    if not path.is_dir():
        raise OccLabelError(f"{name}: results directory {path} does not exist")
    return path.resolve()


def files_key(directory: Path) -> str:
    """Store group key of a files backend: "files-<directory name>" (never contains "/")."""
    return "files-" + (directory.name or "root").replace("/", "-")


def normalise_extensions(exts) -> tuple[str, ...]:
    if isinstance(exts, str):
        exts = [exts]
    out = tuple(e if e.startswith(".") else "." + e for e in (str(x).strip() for x in exts) if e)
    if not out:
        raise OccLabelError("files backend: 'extensions' must list at least one extension")
    return out


def find_result(name: str, directory: Path, rel_path: str, extensions: tuple[str, ...]) -> Path:
    """``directory/rel_path`` with its extension replaced by the first of ``extensions`` that exists."""
    stem = Path(rel_path).with_suffix("")
    tried = [directory / stem.with_name(stem.name + ext) for ext in extensions]
    for p in tried:
        if p.is_file():
            return p
    raise OccLabelError(f"{name}: no result for image {rel_path} (tried {', '.join(str(p) for p in tried)})")


def batch_rel_paths(name: str, batch: dict[str, Any]) -> list[str]:
    records = batch.get("records")
    if records is None:
        raise OccLabelError(f"{name}: the batch carries no image records (batch['records'] is missing)")
    return [r.rel_path for r in records]


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def read_pfm(path: Path) -> np.ndarray:
    """A PFM file as <np.float32: H, W> (grey) or <np.float32: H, W, 3> (colour), top row first."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OccLabelError(f"{path}: cannot read PFM ({e})") from None
    # header: 3 whitespace-separated tokens after the magic, then a single whitespace byte, then data
    m = re.match(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s", data)
    if m is None:
        raise OccLabelError(f"{path}: not a PFM file (bad header)")
    channels = 3 if m.group(1) == b"PF" else 1
    w, h, scale = int(m.group(2)), int(m.group(3)), float(m.group(4))
    dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
    n = w * h * channels
    body = data[m.end() :]
    if len(body) < n * 4:
        raise OccLabelError(f"{path}: PFM truncated ({len(body)} bytes of data, expected {n * 4})")
    arr = np.frombuffer(body, dtype=dtype, count=n).astype(np.float32)
    arr = arr.reshape(h, w, channels) if channels == 3 else arr.reshape(h, w)
    return np.ascontiguousarray(arr[::-1])  # PFM rows run bottom to top


def _squeeze_2d(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    if arr.ndim > 2:
        arr = arr.reshape([s for s in arr.shape if s != 1] or [1])
    if arr.ndim != 2:
        raise OccLabelError(f"{path}: {what} must be 2D (H, W), got shape {arr.shape}")
    return arr


def read_depth_file(path: Path, kind: str) -> np.ndarray:
    """A depth/disparity file as <np.float32: H, W>, NaN where there is no value (0 or NaN in the file)."""
    ext = path.suffix.lower()
    try:
        if ext == ".npy":
            d = np.load(path)
            if not np.issubdtype(d.dtype, np.number):
                raise OccLabelError(f"{path}: expected a numeric array, got dtype {d.dtype}")
            d = d.astype(np.float32)
        elif ext == ".png":
            with Image.open(path) as im:
                d = np.asarray(im)
            if d.dtype != np.uint16:
                # PIL opens 16-bit greyscale as mode "I;16" (uint16) or "I" (int32); accept both
                if not np.issubdtype(d.dtype, np.integer) or d.ndim != 2:
                    raise OccLabelError(f"{path}: depth PNG must be single-channel 16-bit, got {d.dtype}")
            d = d.astype(np.float32)
            if kind == "depth":
                d /= 256.0
        elif ext == ".pfm":
            d = read_pfm(path)
            if d.ndim == 3:
                d = d[..., 0]
        else:
            raise OccLabelError(f"{path}: unsupported depth format {ext} (use .npy, .png or .pfm)")
    except (OSError, ValueError) as e:
        raise OccLabelError(f"{path}: cannot read ({e})") from None
    d = _squeeze_2d(d, path, "depth")
    d = np.array(d, dtype=np.float32)  # writable copy
    d[~np.isfinite(d) | (d == 0)] = np.nan
    if kind == "depth":
        d[d < 0] = np.nan
    return d


def resize_valued(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize <H, W> float (NaN = no value) to ``size`` = (h, w): bilinear on values and validity, divided."""
    valid = torch.isfinite(x)
    if tuple(x.shape) == tuple(size):
        return torch.where(valid, x, torch.full_like(x, float("nan")))
    down = size[0] < x.shape[0] or size[1] < x.shape[1]
    v = valid.to(x.dtype)[None, None]
    num = torch.where(valid, x, torch.zeros_like(x))[None, None]
    both = F.interpolate(
        torch.cat([num, v], 1), size=size, mode="bilinear", align_corners=False, antialias=down
    )
    num, w = both[0, 0], both[0, 1]
    out = num / w.clamp(min=1e-12)
    return torch.where(w >= MIN_VALID_WEIGHT, out, torch.full_like(out, float("nan")))


# --------------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------------


class FilesDepth(DepthModel):
    """Depth or disparity maps read from ``DIR/<image rel_path with its extension replaced>``."""

    default_conf: ClassVar[dict[str, Any]] = {
        "dir": None,  # results directory (default: what follows "files:" in the model name)
        "kind": "disparity",  # "disparity" (affine-invariant; PNG = raw uint16) or "depth" (metres; PNG = m*256)
        "extensions": (".npy", ".png", ".pfm"),  # tried in this order for each image
    }

    def __init__(self, name: str, conf: dict[str, Any] | None = None, device: torch.device | str = "cpu"):
        super().__init__(name, conf, device)
        self.dir = files_dir(name, self.conf["dir"])
        self.conf["dir"] = str(self.dir)
        kind = self.conf["kind"]
        if kind not in ("disparity", "depth"):
            raise OccLabelError(f"{name}: kind must be 'disparity' or 'depth', got {kind!r}")
        self.space = "disparity" if kind == "disparity" else "depth_m"  # type: ignore[misc]
        self.extensions = normalise_extensions(self.conf["extensions"])
        self.conf["extensions"] = list(self.extensions)

    @property
    def key(self) -> str:
        return files_key(self.dir)

    def load(self, rel_path: str) -> np.ndarray:
        """The native-resolution map of one image <np.float32: H, W>, NaN = no value."""
        return read_depth_file(find_result(self.name, self.dir, rel_path, self.extensions), self.conf["kind"])

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        img = batch["image"]
        h, w = img.shape[-2:]
        out = []
        for rel in batch_rel_paths(self.name, batch):
            d = torch.from_numpy(self.load(rel)).to(img.device)
            out.append(resize_valued(d, (h, w)))
        return torch.stack(out).float()
