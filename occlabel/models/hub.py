"""Loading transformers models (and their processors) from the Hugging Face hub cache or a local directory.

One helper, :func:`load_pretrained`, shared by every transformers backend so that all of them resolve
names, stay offline and fail the same way:

* ``name_or_path`` is an existing directory: loaded from there, never touching the network.
* otherwise it is a hub repo id (``owner/name``). With ``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``)
  it is loaded from the HF cache only; otherwise transformers may download it.
* when the model cannot be had, an :class:`~occlabel.errors.OccLabelError` says so in one line and how
  to fetch it (``hf download <id>``, formerly ``huggingface-cli download <id>``, or a local directory).

The returned provenance records what was loaded: the repo id or path, the resolved revision (the snapshot
folder name, i.e. the commit hash, when the files came from the HF cache), the model class and, for depth
models, ``config.depth_estimation_type``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from occlabel.errors import OccLabelError

_TRUE = {"1", "true", "yes", "on"}

#: the backends' conf "dtype" values besides "auto"
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(name: str, value: Any, device: torch.device | str) -> tuple[torch.dtype, bool]:
    """A backend's conf "dtype" -> (weights dtype, fp16 autocast?).

    "auto": fp32 weights with fp16 autocast on CUDA (fp32 on CPU); "float32" / "float16" / "bfloat16":
    weights and inputs in that dtype, no autocast. Anything else is a one-line OccLabelError naming ``name``.
    """
    if value != "auto" and value not in DTYPES:
        raise OccLabelError(f"{name}: dtype must be 'auto' or one of {', '.join(DTYPES)}, got {value!r}")
    if value == "auto":
        return torch.float32, torch.device(device).type == "cuda"
    return DTYPES[value], False


def hub_offline() -> bool:
    """Whether the hub must not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, read now)."""
    env = any(
        os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    try:
        from huggingface_hub import constants

        return env or bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - huggingface_hub always comes with transformers
        return env


def fetch_hint(name: str) -> str:
    """How to make ``name`` available (one line, for error messages)."""
    return (
        f"fetch it once with `hf download {name}` (older huggingface_hub: `huggingface-cli download {name}`)"
        " or pass a local directory holding the model"
    )


def _looks_like_path(name: str) -> bool:
    """A name meant as a directory rather than a hub repo id ("owner/name" or "name")."""
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or (os.sep != "/" and os.sep in name)
    )


def _cached_snapshot(repo_id: str) -> Path | None:
    """The HF-cache snapshot folder holding ``repo_id``'s config.json (main revision), if cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # invalid repo id, unreadable cache ...
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _snapshot_revision(path: Path) -> str | None:
    """The commit hash when ``path`` is (inside) an HF-cache snapshot folder ``.../snapshots/<hash>``."""
    path = path.resolve()
    for p in (path, *path.parents):
        if p.parent.name == "snapshots":
            return p.name
    return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0].strip() if text else type(err).__name__


def load_pretrained(
    model_cls: Any,
    processor_cls: Any,
    name_or_path: str | os.PathLike,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    local_files_only: bool | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Load a transformers model and its processor; returns ``(model, processor, provenance)``.

    Args:
        model_cls: a transformers model class with ``from_pretrained`` (e.g. AutoModelForDepthEstimation).
        processor_cls: its processor class (e.g. AutoImageProcessor); None to skip the processor.
        name_or_path: hub repo id ("owner/name") or a local directory written by ``save_pretrained``.
        device: where the model is put (in eval mode).
        dtype: weights dtype (None: as transformers loads them, float32 for most checkpoints).
        local_files_only: never contact the hub; None = follow ``HF_HUB_OFFLINE``.

    Raises:
        OccLabelError: one line naming the model and how to fetch it, when it is not available.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    name = str(name_or_path)
    offline = hub_offline() if local_files_only is None else bool(local_files_only)
    local = Path(name).expanduser()

    if local.is_dir():
        source: str = str(local)
        files_only = True
        revision = _snapshot_revision(local)
    elif _looks_like_path(name) or local.exists():
        raise OccLabelError(
            f"model directory {name!r} does not exist (or is not a directory); pass a directory written by "
            "save_pretrained or fetched with `hf download <repo id> --local-dir DIR` (older huggingface_hub: "
            "`huggingface-cli download <repo id> --local-dir DIR`), or a hub repo id"
        )
    else:
        snapshot = _cached_snapshot(name)
        if offline and snapshot is None:
            raise OccLabelError(
                f"model {name!r} is not in the Hugging Face cache and the hub is offline "
                f"(HF_HUB_OFFLINE / local_files_only); {fetch_hint(name)}"
            )
        if offline and snapshot is not None:
            # offline: load the cached snapshot folder itself, so files and recorded revision agree
            source, files_only, revision = str(snapshot), True, snapshot.name
        else:
            source, files_only, revision = name, offline, None

    kwargs: dict[str, Any] = {"local_files_only": files_only}
    try:
        model = model_cls.from_pretrained(source, **kwargs, **({"dtype": dtype} if dtype is not None else {}))
        processor = processor_cls.from_pretrained(source, **kwargs) if processor_cls is not None else None
    except (OSError, ValueError) as e:
        if local.is_dir():
            hint = (
                "the directory must hold a save_pretrained / `hf download <repo id> --local-dir DIR` checkout "
                f"of a {getattr(model_cls, '__name__', 'matching')} checkpoint"
            )
            raise OccLabelError(f"cannot load directory {name!r} ({_one_line(e)}); {hint}") from e
        raise OccLabelError(f"cannot load model {name!r} ({_one_line(e)}); {fetch_hint(name)}") from e

    if revision is None and source == name:
        # loaded through the hub cache: the snapshot folder name is the resolved commit hash
        snapshot = _cached_snapshot(name)
        revision = snapshot.name if snapshot is not None else getattr(model.config, "_commit_hash", None)

    model = model.to(device).eval()
    config = model.config
    provenance: dict[str, Any] = {
        "model": name,
        "revision": revision,
        "model_class": type(model).__name__,
    }
    if getattr(config, "depth_estimation_type", None) is not None:
        provenance["depth_estimation_type"] = str(config.depth_estimation_type)
    return model, processor, provenance


def normalization(processor: Any, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The image processor's (mean, std) as ``[1 x 3 x 1 x 1]`` float32 tensors on ``device``.

    Lets backends normalise images in torch on the device instead of through the (PIL) processor;
    a processor with ``do_normalize=False`` gives mean 0, std 1.
    """
    if not getattr(processor, "do_normalize", True):
        mean, std = [0.0] * 3, [1.0] * 3
    else:
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        if mean is None or std is None:
            raise OccLabelError(
                f"the image processor {type(processor).__name__} has no image_mean / image_std"
            )
        mean = [float(mean)] * 3 if isinstance(mean, int | float) else [float(v) for v in mean]
        std = [float(std)] * 3 if isinstance(std, int | float) else [float(v) for v in std]
    as_t = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)  # noqa: E731
    return as_t(mean), as_t(std)
