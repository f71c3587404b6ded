"""BEV rendering: orientation and top-most voxel."""

import numpy as np

from occlabel.conventions import FREE, occ3d_palette
from occlabel.viz.bev import bev_rgb, save_bev_comparison


def test_bev_orientation_and_top_voxel(tmp_path):
    sem = np.full((10, 8, 4), FREE, np.uint8)
    sem[9, 7, 0] = 11  # front-left corner, road at the bottom
    sem[9, 7, 2] = 4  # a car above it: the top-most wins
    sem[0, 0, 1] = 16  # rear-right corner
    img = bev_rgb(sem)
    pal = occ3d_palette()
    assert img.shape == (10, 8, 3)
    assert (img[0, 0] == pal[4]).all()  # forward is up, left is left
    assert (img[9, 7] == pal[16]).all()
    assert (img[5, 5] == [208, 200, 182]).all()  # free column: a warm grey, unlike any class
    mask = np.zeros(sem.shape, bool)
    mask[9, 7] = True
    img = bev_rgb(sem, mask)
    assert (img[0, 0] == pal[4]).all() and (img[9, 7] == 40).all()  # unobserved column is dark
    p = save_bev_comparison({"a": img, "b": img}, tmp_path / "x.png", "t")
    assert p.stat().st_size > 1000
