"""Pure torch geometry: projection, warping, rays and voxel indexing. No I/O here."""
