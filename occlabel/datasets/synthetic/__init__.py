"""A procedural driving world with exact ground truth: the reference for tests, the demo and benchmarks.

``synth(out, ...)`` renders scenes of a street and writes a folder dataset (``occlabel.json``) that
``occlabel.datasets.folder.load_folder`` reads back; ``synth_nuscenes`` (nuscenes_layout.py) and
``synth_kitti`` (kitti_layout.py) write the same world in the nuScenes and KITTI odometry layouts,
``synth_kitti_raw`` (kitti_raw_layout.py) in the KITTI raw layout (OXTS poses); the steps they share (camera
image files, LiDAR sweep window, Occ3D labels of a keyframe) are in common.py. Ground truth can also be
queried directly: ``w = build_world(seed, duration)``; ``w.ego_pose(t)``, ``w.prims_at(t)``,
``w.render(make_rig(...), T, t)``, ``w.occupancy(T_world_from_ego, grid, t)``, ``w.lidar(T, t)``.

The world (world.py: World and its assembly; layout.py: ego drive, road and cross-section;
placement.py: static objects; actors.py: moving actors; objects.py: vehicles and pedestrians from primitives)
    A street along a smooth centreline made of straights and circular arcs (road.py): a two-lane road
    with parking strips and lane markings (dashed or double-yellow centre line, edge lines, parking
    ticks, zebra crossings), kerbs (the road lies at z = 0, everything else is raised by 0.15 m), grass
    verges, paved sidewalks, terrain; buildings with windows, shop fronts and brick or plaster facades,
    some with upper storeys; street lamps, traffic signs, trees (trunk + spheroid crowns), hedges;
    parked cars, vans, trucks, trailers, motorcycles, bicycles; sometimes a construction zone with
    traffic cones and barriers; cars, trucks and buses that drive in both lanes at their own speeds and
    pedestrians that walk (or stand) on the sidewalks. The ego car drives in the right lane at 5-10 m/s
    (drawn per scene; ``ego_speed`` overrides it, 0 parks it) with a slight lateral weave.
    All solids are analytic upright primitives (boxes, frusta, spheroids; prims.py), each with an Occ3D
    class.

Rendering (render.py, raycast.py; texture.py: shading and sky, materials.py: per-material albedo,
noise.py: band-limited noise and filtered patterns)
    One ray per pixel centre, cast in torch against the ground (analytic, kerb faces included) and the
    primitives (pair lists from projected bounding boxes; no loops over pixels). Sun shadows by shadow
    rays. Procedural textures with detail from metres to centimetres (multi-octave value noise, tiles,
    bricks, windows, markings), band-limited to the pixel footprint (anisotropic at grazing angles) so
    frames do not alias. Colour depends only on the surface point (object frame for moving things), so
    a static point has the same colour in every frame up to the exposure gain.

Exposure
    ``image = round(255 * clip(gain * radiance, 0, 1))`` with one gain per image in [0.9, 1.1]: a smooth
    function of time (two sinusoids) plus a small per-camera offset. The gains are stored in
    ``synthetic.json`` (``scenes[i].exposure[token][camera]``; ``writer.exposure_gains(root)``).

Files written under the dataset root
    ``occlabel.json``                             the folder manifest
    ``synthetic.json``                            generator parameters, per-scene summary, exposure gains
    ``images/<CAM>/<token>.png``                  RGB uint8
    ``gt/depth/<CAM>/<token>.npy``                float32 metric z-depth, NaN for sky
    ``gt/semantics/<CAM>/<token>.png``            uint8 Occ3D class ids 0-16, ``SKY`` (254) for sky
    ``lidar/<token>.npy``                         float32 N x 3 LiDAR returns in the ego frame
    ``gts/<scene>/<token>/labels.npz``            keyframes: Occ3D-layout occupancy (below)

Occupancy ground truth (occupancy.py)
    On ``GRIDS["occ3d"]`` in the keyframe's ego frame, index [x, y, z], voxel centre lower + (i + 0.5) *
    0.4. ``semantics`` uint8 (200, 200, 16): a voxel takes the class of any solid that intersects it
    (exact test; priority pedestrian > cycles > cone > barrier > vehicles > manmade > vegetation), else the
    ground class when the ground surface passes through it, else 17 (free). ``mask_camera`` uint8 0/1:
    voxels crossed by a keyframe camera ray from the camera centre to its first surface (sky rays: to
    100 m) or holding that surface point; rays are sampled every 0.4 m (``ray_free_samples``), so a
    voxel a ray only clips can be missed (99.5% of points along the rays fall in marked voxels). ``mask_lidar`` uint8 0/1: the same for the simulated LiDAR
    returns of the keyframe and of the 2 frames either side (accumulated like Occ3D's LiDAR
    visibility; not all ones).

Frames: OpenCV cameras; ego x forward, y left, z up, origin on the ground under the rear axle; the
ego frame is always upright (the world is flat). Tokens are ``<scene>-<frame:04d>``, scenes
``synth-<seed>-<index:03d>``, timestamps ``frame / fps`` seconds. Deterministic per arguments (same bytes
for any torch thread count; ``synth`` renders on one thread by default, see its ``threads``).
"""

from __future__ import annotations

from occlabel.datasets.synthetic.kitti_layout import synth_kitti
from occlabel.datasets.synthetic.kitti_raw_layout import synth_kitti_raw
from occlabel.datasets.synthetic.nuscenes_layout import synth_nuscenes
from occlabel.datasets.synthetic.occupancy import occupancy, visibility_mask
from occlabel.datasets.synthetic.render import render_cameras, render_lidar
from occlabel.datasets.synthetic.rigs import DEFAULT_SIZE, make_rig
from occlabel.datasets.synthetic.world import World, build_world
from occlabel.datasets.synthetic.writer import camera_rays_ego, exposure_gains, synth

__all__ = [
    "DEFAULT_SIZE",
    "World",
    "build_world",
    "camera_rays_ego",
    "exposure_gains",
    "make_rig",
    "occupancy",
    "render_cameras",
    "render_lidar",
    "synth",
    "synth_kitti",
    "synth_kitti_raw",
    "synth_nuscenes",
    "visibility_mask",
]
