"""Inputs of the fusion: the prepared views of one scene, read from the cache (calibrated depth, 2D
semantics) or the dataset's ground truth (I/O only; the geometry is in occlabel.fusion.views).
"""

from __future__ import annotations

import numpy as np
import torch

from occlabel.errors import OccLabelError, StoreError
from occlabel.fusion.options import SOURCES, VoxelizeOptions
from occlabel.fusion.views import View, prepare_view
from occlabel.store.cache import Cache, depth_from_relative
from occlabel.store.labels import ClassSet
from occlabel.utils import resize_nearest


class ViewSource:
    """Prepared views of one scene, kept while keyframe windows need them.

    Depth comes from the cache (calibrated) or the dataset's ground truth, and so do the semantics
    (``SOURCES[opts.source]``); ground-truth maps are resized to the cache's working resolution with
    nearest-neighbour, and GT semantics have confidence 1.
    """

    def __init__(
        self,
        cache: Cache,
        scene: str,
        opts: VoxelizeOptions,
        device: torch.device,
        classes: ClassSet,
        depth_key: str | None = None,
        semantics_key: str | None = None,
        dataset=None,
    ):
        self.cache, self.scene, self.opts, self.device, self.classes = cache, scene, opts, device, classes
        self.depth_from, self.sem_from = SOURCES[opts.source]
        self.depth_key, self.semantics_key = depth_key, semantics_key
        self.cameras = cache.cameras(scene)
        self.keyframes = {t for t, k in enumerate(cache.scene_meta(scene)["keyframes"]) if k}
        self.geometry = {cam: cache.geometry(scene, cam) for cam in self.cameras}
        self._views: dict[tuple[str, int], View | None] = {}
        self.skipped: dict[str, int] = {}
        if self.depth_from == "cache":
            self.space, self.cal, self.depth_done = {}, {}, {}
            for cam in self.cameras:
                self.space[cam] = cache.depth_attrs(scene, cam, depth_key).get("space", "disparity")
                if not cache.has_calibration(scene, cam, depth_key):
                    raise StoreError(
                        f"{cache.path}: {scene}/{cam} depth {depth_key!r} is not calibrated; run calibrate-depth first"
                    )
                self.cal[cam] = cache.read_calibration(scene, cam, depth_key)
                self.depth_done[cam] = cache.depth_done(scene, cam, depth_key)
        if self.sem_from == "cache":
            self.sem_done = {cam: cache.semantics_done(scene, cam, semantics_key) for cam in self.cameras}
        if "gt" in (self.depth_from, self.sem_from):
            self.frames = dataset.scene(scene).frames
            if [f.token for f in self.frames] != list(cache.scene_meta(scene)["tokens"]):
                raise StoreError(
                    f"{cache.path}: scene {scene!r} has other frames than the dataset; re-run extract-2d"
                )

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def views(self, frames: range) -> list[View]:
        out = []
        for t in frames:
            for cam in self.cameras:
                if not self.geometry[cam]["present"][t]:
                    continue
                k = (cam, t)
                if k not in self._views:
                    self._views[k] = self._load(cam, t)
                if self._views[k] is not None:
                    out.append(self._views[k])
        return out

    def evict_before(self, t0: int) -> None:
        for k in [k for k in self._views if k[1] < t0]:
            del self._views[k]

    def _gt_image(self, cam: str, t: int, what: str):
        im = self.frames[t].images.get(cam)
        if im is None or getattr(im, f"{what}_path") is None:
            raise OccLabelError(
                f"voxelize source={self.opts.source!r}: {self.scene}/{self.frames[t].token}/{cam} has no "
                f"ground-truth {what} in the dataset"
            )
        return im

    def _load(self, cam: str, t: int) -> View | None:
        from occlabel.datasets.base import load_depth_m, load_semantics

        h, w = (
            self.cache.camera_meta(self.scene, cam)["height"],
            self.cache.camera_meta(self.scene, cam)["width"],
        )
        if self.depth_from == "cache":
            cal = self.cal[cam]
            if not self.depth_done[cam][t]:
                self._skip("not extracted")
                return None
            if not cal["done"][t]:
                self._skip("not calibrated")
                return None
        if self.sem_from == "cache" and not self.sem_done[cam][t]:
            self._skip("not extracted")
            return None
        if self.depth_from == "cache":
            rel = self.cache.read_depth(self.scene, cam, self.depth_key, t)
            depth = depth_from_relative(
                rel, float(cal["scale"][t]), float(cal["shift"][t]), self.space[cam], self.opts.max_depth_m
            )
        else:
            depth = resize_nearest(load_depth_m(self._gt_image(cam, t, "depth").depth_path), h, w)
        if self.sem_from == "cache":
            labels, conf = self.cache.read_semantics(self.scene, cam, self.semantics_key, t)
        else:
            labels = resize_nearest(load_semantics(self._gt_image(cam, t, "semantics").semantics_path), h, w)
            conf = np.ones((h, w), np.float32)
        g = self.geometry[cam]
        return prepare_view(
            depth,
            labels,
            conf,
            g["K"][t],
            self.opts,
            self.device,
            t,
            cam,
            g["T_world_from_cam"][t],
            with_mask=t in self.keyframes,
            classes=self.classes,
        )


__all__ = ["ViewSource"]
