"""Fusion: metric depth and 2D semantics over frames and cameras into voxel labels (stage 3, voxelize).

For every keyframe of a scene (output: one sample of LABELS.zarr, see occlabel.store.labels):

1. Lift. Every pixel with a metric depth and a class becomes a point in the grid's frame (the keyframe's
   ego frame, or a sensor frame placed in it, below),
   ``p_grid = T_grid_from_egokey @ T_egokey_from_world @ T_world_from_cam(t) @ (z · K⁻¹ [u, v, 1])``, for all
   cameras of the frames ``t`` within ``window`` frames of the keyframe. Static classes accumulate over the
   whole window; classes that can move (the class set's moving classes, or ``moving_classes``) only from
   frames within ``moving_window`` frames (default: the keyframe alone), so moving objects do not leave
   trails — except that far-frame points of a moving class count where the near frames voted that class
   (within ``moving_consistent`` voxels: a parked car is seen by the whole window), and a voxel takes the
   moving class its near-frame votes give at least ``moving_share`` of their votes there (so the far
   frames' static votes, boundary flips onto a parked car included, cannot outvote the keyframe).
   Each point votes for its class in its voxel with its semantic confidence times a range weight
   ``1 / (1 + (z / range_weight_m)²)`` (estimated depth: its error grows with range, so near views of a
   place outvote far ones; scatter-add over voxel × class). ``evidence`` = the confidence-weighted points,
   in pixel units (multiplied by point_stride²), without the range weight.
   Estimated depth first loses its *flying pixels* (views.flying_pixels): the ramps that a blurred depth
   map draws across occlusion boundaries, which are neither the foreground nor the background surface.
2. Carve. Every ``ray_stride``-th pixel casts a ray from the camera centre toward its point; the voxels it
   crosses (geometry.voxel.ray_free_samples, a sample every step_fraction·voxel) collect free-space
   ``passes`` (ray length in voxels, scaled by ray_stride² to compare with pixel-unit evidence, and by
   the range weight of the ray's point). A ray stops short of its point by ``stop_frac`` of its length
   plus ``clearance`` voxels *measured along the surface normal* (estimated from the depth map,
   views.surface_cos), at least one voxel: a ray that meets a surface at a grazing angle — the road
   ahead, a facade along the street — runs just above that surface for metres and would otherwise carve
   the voxels the surface itself occupies. Sky pixels (conventions.SKY) carve to ``sky_range_m``; pixels
   without depth cast nothing.
   A voxel is **occupied** when ``evidence >= min_hits`` and its range-weighted votes reach
   ``occ_ratio`` × its range-weighted passes, where passes count rays from the whole window for a voxel
   whose winning class is static, and only rays from the moving window for a moving class (the space a
   car fills now was free a second ago). It is **free** when not occupied and crossed by some ray (or
   seen from the keyframe, below), and **unknown** otherwise.
3. mask_camera: voxels crossed or hit by a ray of the keyframe's own cameras — the Occ3D meaning
   ("visible from the cameras of this sample"): every ``mask_stride``-th pixel's ray all the way to its
   surface point (sky: to sky_range_m), plus the voxels holding the keyframe's points.
4. Output, on the grid (default occ3d, 200×200×16 at 0.4 m): semantics <uint8: X, Y, Z> = winning class
   where occupied, the class set's free id (Occ3D 17, SemanticKITTI 0) elsewhere — **unknown voxels are
   written as free too, with mask_camera 0** (the Occ3D layout has no "unknown" label; users must apply
   mask_camera, exactly as Occ3D trainers and the Occ3D metric do). Every mask_camera voxel is occupied
   or free, never unknown.
   **TSDF** (``tsdf``, default for estimated depth): a noisy depth (σ ~0.5-1 m at 20 m) spreads a surface's
   points over several voxels, so votes alone make it thick and carving erodes it. Every
   ``tsdf_stride``-th pixel with a depth and a class also casts samples (every step_fraction voxel) in a
   band of ±``tsdf_band`` voxels *along the surface normal* around its point (at most tsdf_band /
   tsdf_min_cos along the ray); each carries the truncated signed distance (measured depth minus sample
   distance, along the ray, times |cos| to the normal: + in front, − behind) with its confidence × range
   weight; carving passes count as samples at +band (``tsdf_carve``). Errors are independent from image
   to image, so the weighted mean over the window localises the surface to a fraction of the noise. A
   voxel of a static class is occupied where that mean is <= ``tsdf_occ`` voxels (the surface crosses
   it, or it lies behind: inside the solid, which the keyframe's cameras do not see); voxels of a moving
   class (fused from the near frames only: little to average) keep the vote test unless ``tsdf_moving``,
   and so do voxels no TSDF sample reaches (points between the tsdf_stride rays).
   Voxels placed by the TSDF without point votes take the class of the band's votes (weighted towards
   the band's centre). confidence <uint8> = 255 × (confidence-weighted share of the winning class)
   for occupied voxels, 255 × passes / (passes + votes) for free voxels, 0 for unknown. hits <uint16> =
   number of points in the voxel, passes <uint16> = ray length through the voxel in voxel units, without
   the range weight (at least 1 where any ray passed; both saturate at 65535).

Defaults that depend on the depth (``source``) are named presets (options.FUSION_PRESETS): "estimated"
(the cache's calibrated depth) fuses with ``occ_ratio`` 0.5, ``edge_tol`` 0.1, ``range_weight_m`` 10 and
the TSDF; "gt" (the dataset's ground-truth depth) with 0, 0, 0 and no TSDF (exact depth has no floaters or
flying pixels to reject, and voxels at grazing angles keep far more passes than hits). Measured by
`make bench` (scripts/bench.py, voxelize_ablation).

Sources: "cache" (calibrated depth and semantics of the cache), "gt" (the dataset's ground-truth depth
and 2D semantics, resized to the cache's working resolution with nearest-neighbour, through the same
fusion: the gap between "labels from GT inputs" and "labels from estimated inputs" measures the estimates,
not the fusion), and the two halves "gt-depth" (GT depth, the cache's semantics) and "gt-semantics" (the
cache's depth, GT semantics), which split that gap between depth and semantics.

Classes: the labels use the class set of their 2D semantics (occlabel.store.labels.ClassSet): Occ3D (0-16,
free 17) by default and for the dataset's GT semantics, SemanticKITTI (1-19, free 0) when the semantics
were made with the ``semantickitti`` vocabulary, any other vocabulary's ids otherwise; ``classes``
overrides.

Grids not in the ego frame (SemanticKITTI's velodyne frame, SurroundOcc's LiDAR frame) sit on each
keyframe's LiDAR: the dataset's ``frame.T_ego_from_lidar`` (the KITTI adapter's ``T_ego_from_cam0 @ Tr``,
nuScenes' lidar2ego). Without one they are placed by ``T_ego_from_grid`` (one rigid 4×4 for every
keyframe), or by ``grid_camera`` + ``T_cam_from_grid``: the grid's pose relative to one camera, turned
into each keyframe's ``T_ego_from_grid = T_ego_from_world(t) @ T_world_from_cam(t) @ T_cam_from_grid``
(KITTI: the velodyne frame is ``Tr`` of calib.txt relative to camera 0,
occlabel.datasets.kitti.kitti_T_cam_from_velo).
The pose of every sample is stored with it (``T_ego_from_grid``).

Everything per keyframe is vectorised torch on one device (CUDA when present): no Python loops over
pixels, points, rays or voxels (only over the camera views of the window). Camera views are prepared
once (camera-frame points and ray ends) and reused by the keyframes whose windows overlap.

Layout (each step callable and testable alone; pure torch, no I/O, except inputs):

    options.py   VoxelizeOptions, SOURCES, FUSION_PRESETS, resolve_classes
    views.py     View, prepare_view (+ flying_pixels, surface_cos): one image -> camera-frame points / rays
    gather.py    gather -> Observations (Points, Rays by group, Band, MaskRays) in the grid's frame
    vote.py      vote -> Votes (points' class votes, evidence, near-frame moving-class votes)
    carve.py     carve -> Passes (free-space passes); mask_camera
    tsdf.py      fuse_tsdf -> Tsdf (weighted signed-distance sums, band votes)
    decide.py    decide -> Decision (class, occupied, free, confidence); label_arrays (stored arrays)
    keyframe.py  fuse_keyframe (the steps composed), grid_pose
    inputs.py    ViewSource: a scene's views from the cache or the dataset's ground truth (I/O)
"""

from occlabel.fusion.carve import Passes, carve, mask_camera
from occlabel.fusion.decide import Decision, decide, label_arrays
from occlabel.fusion.gather import Band, MaskRays, Observations, Points, Rays, gather
from occlabel.fusion.inputs import ViewSource
from occlabel.fusion.keyframe import fuse_keyframe, grid_pose
from occlabel.fusion.options import FUSION_PRESETS, SOURCES, VoxelizeOptions, fusion_preset, resolve_classes
from occlabel.fusion.tsdf import Tsdf, fuse_tsdf
from occlabel.fusion.views import View, flying_pixels, prepare_view, surface_cos
from occlabel.fusion.vote import MovingClasses, Votes, vote

__all__ = [
    "FUSION_PRESETS",
    "SOURCES",
    "Band",
    "Decision",
    "MaskRays",
    "MovingClasses",
    "Observations",
    "Passes",
    "Points",
    "Rays",
    "Tsdf",
    "View",
    "ViewSource",
    "Votes",
    "VoxelizeOptions",
    "carve",
    "decide",
    "flying_pixels",
    "fuse_keyframe",
    "fuse_tsdf",
    "fusion_preset",
    "gather",
    "grid_pose",
    "label_arrays",
    "mask_camera",
    "prepare_view",
    "resolve_classes",
    "surface_cos",
    "vote",
]
