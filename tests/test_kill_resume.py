"""extract-2d killed with SIGKILL at arbitrary points: no frame is marked done with incomplete data, and
the resumed run's cache equals an uninterrupted run's, array for array."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import write_tiny_folder

from occlabel.store.cache import open_cache

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")

N_FRAMES = 40


def _cmd(root: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "occlabel", "-q", "extract-2d", "--root", str(root), "--out", str(out),
        "--batch-size", "1", "--depth-model", "oracle", "--semantic-model", "oracle",
    ]  # fmt: skip


def _done_count(out: Path) -> int:
    """Frames whose depth and semantics are both marked done (read while the writer runs)."""
    try:
        g = zarr.open_group(str(out / "s0" / "CAM_FRONT"), mode="r")
        return int((g["depth/oracle/done"][:] & g["semantics/oracle/done"][:]).sum())
    except Exception:  # not created yet
        return 0


def _arrays(out: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(out / "s0" / "CAM_FRONT"), mode="r")
    return {
        k: g[k][:] for k in ("depth/oracle/values", "semantics/oracle/labels", "semantics/oracle/confidence")
    }


def _check_done_frames_complete(out: Path, ref: dict[str, np.ndarray]) -> int:
    g = zarr.open_group(str(out / "s0" / "CAM_FRONT"), mode="r")
    done_d, done_s = g["depth/oracle/done"][:], g["semantics/oracle/done"][:]
    got = _arrays(out)
    for t in np.flatnonzero(done_d):
        np.testing.assert_array_equal(got["depth/oracle/values"][t], ref["depth/oracle/values"][t])
    for t in np.flatnonzero(done_s):
        np.testing.assert_array_equal(got["semantics/oracle/labels"][t], ref["semantics/oracle/labels"][t])
        np.testing.assert_array_equal(
            got["semantics/oracle/confidence"][t], ref["semantics/oracle/confidence"][t]
        )
    return int((done_d & done_s).sum())


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    root = write_tiny_folder(tmp_path / "ds", n_frames=N_FRAMES, size=(96, 64))
    ref_out = tmp_path / "ref.zarr"
    subprocess.run(_cmd(root, ref_out), check=True, capture_output=True, timeout=300)
    ref = _arrays(ref_out)
    assert open_cache(ref_out).depth_done("s0", "CAM_FRONT", "oracle").all()

    out = tmp_path / "killed.zarr"
    kills = 0
    for target in (3, 15, 27):  # kill once at least this many frames are done
        proc = subprocess.Popen(_cmd(root, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _done_count(out) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        done = _check_done_frames_complete(out, ref)
        assert done >= min(target, N_FRAMES)
    assert kills >= 2, "the runs finished before they could be killed: make the dataset bigger"
    assert _done_count(out) < N_FRAMES

    r = subprocess.run(_cmd(root, out), capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    got = _arrays(out)
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert _done_count(out) == N_FRAMES
