"""HHA encoding (Gupta et al., ECCV 2014) on analytically rendered rooms with a known camera pose."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from seglab.data.hha import depth_to_hha, estimate_up, hha_components
from seglab.errors import DataError, SeglabError

FLOOR, WALL = 0, 1


def render_room(*, pitch: float = 15.0, roll: float = 0.0, yaw: float = 0.0, camera_height: float = 1.5,
                planes=((0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 4.0)), size=(120, 160), focal: float = 130.0):
    """Depth (m) of a pinhole camera `camera_height` above a floor, pitched down by `pitch`, rolled and
    yawed (degrees). `planes` are world planes n.X = c (world: x right, y up, z forward, floor y = 0);
    default: the floor and a wall 4 m ahead. Returns depth, index of the visible plane, height of the
    visible point above the floor, the true up vector in camera coordinates and the intrinsics."""
    h, w = size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    p, r, y = np.radians([pitch, roll, yaw])
    # Camera axes in the world (x right, y down, z forward): pitch down about x, roll about the view
    # axis, then yaw about the world's up axis.
    x_axis, y_axis = np.array([1.0, 0, 0]), np.array([0, -np.cos(p), -np.sin(p)])
    z_axis = np.array([0, -np.sin(p), np.cos(p)])
    x_axis, y_axis = np.cos(r) * x_axis + np.sin(r) * y_axis, -np.sin(r) * x_axis + np.cos(r) * y_axis
    yaw_m = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    cam_to_world = yaw_m @ np.stack([x_axis, y_axis, z_axis], 1)
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([(u - cx) / focal, (v - cy) / focal, np.ones((h, w))], -1) @ cam_to_world.T
    centre = np.array([0.0, camera_height, 0.0])
    hits = []
    for *normal, offset in planes:
        along = rays @ np.array(normal)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (offset - centre @ np.array(normal)) / along
        hits.append(np.where((along != 0) & (t > 0), t, np.inf))
    hits = np.stack(hits)
    plane = hits.argmin(0)
    depth = hits.min(0)  # rays have unit z in the camera frame, so t is the depth
    assert np.isfinite(depth).all()
    height = camera_height + depth * rays[..., 1]
    return depth, plane, height, cam_to_world.T @ np.array([0.0, 1.0, 0.0]), (focal, focal, cx, cy)


def _interior(mask: np.ndarray, margin: int = 5) -> np.ndarray:
    """Pixels at least `margin` pixels inside `mask` (so their 7x7 plane fit sees only that plane)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)).astype(bool)


def _degrees(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1, 1))))


@pytest.mark.parametrize("pitch, roll", [(15.0, 0.0), (25.0, -8.0)])
def test_gravity_is_recovered_from_a_tilted_camera(pitch, roll):
    depth, _, _, up, intrinsics = render_room(pitch=pitch, roll=roll)
    c = hha_components(depth, intrinsics)
    assert _degrees(c.up, up) < 1.0
    assert _degrees(np.array([0.0, -1.0, 0.0]), up) > pitch - 1  # the camera's own axis is far off


def test_angle_channel_is_0_degrees_on_the_floor_and_90_on_the_wall():
    depth, plane, _, _, intrinsics = render_room(pitch=20.0, roll=6.0)
    angle = depth_to_hha(depth, intrinsics)[..., 2].astype(float) - 38  # stored as degrees + 38
    floor, wall = _interior(plane == FLOOR), _interior(plane == WALL)
    assert floor.sum() > 1000 and wall.sum() > 1000
    assert np.abs(angle[floor]).max() <= 1
    assert np.abs(angle[wall] - 90).max() <= 1


def test_height_channel_is_centimetres_above_the_floor():
    depth, plane, height, _, intrinsics = render_room(pitch=15.0, roll=4.0)
    stored = depth_to_hha(depth, intrinsics)[..., 1].astype(float)
    assert np.abs(stored[plane == FLOOR]).max() <= 1  # ~0 on the floor
    wall = plane == WALL
    true_cm = height[wall] * 100
    assert true_cm.min() < 30 and true_cm.max() > 200  # the wall spans most of the range
    slope, intercept = np.polyfit(true_cm, stored[wall], 1)
    assert abs(slope - 1) < 0.01 and abs(intercept) < 1.0  # linear in height, 1 unit per cm
    assert np.abs(stored[wall] - true_cm).max() <= 1.5


def test_disparity_channel_follows_inverse_depth():
    depth, _, _, _, intrinsics = render_room(pitch=15.0)
    disparity = depth_to_hha(depth, intrinsics)[..., 0].astype(float)
    far = depth > 310 / 255  # nearer than 1.22 m the channel saturates at 255
    assert far.mean() > 0.9
    assert np.abs(disparity[far] - 310 / depth[far]).max() <= 0.5  # Gupta et al.: 31000 / depth in cm
    order = np.argsort(depth.ravel())
    assert (np.diff(disparity.ravel()[order]) <= 0).all()  # monotone: farther is never brighter
    near = depth.copy()
    near[:10] = 0.8  # a near band (not a plane any more; only the disparity is checked)
    assert (depth_to_hha(near, intrinsics)[:10, :, 0] == 255).all()


def test_no_floor_in_view_assumes_the_camera_1_3_m_up():
    """Looking level into a corner of two walls (no floor visible): the walls' normals alone fix the
    up direction, and the release's rule puts the floor 1.3 m below the camera."""
    corner = ((1.0, 0.0, 0.0, 2.0), (0.0, 0.0, 1.0, 2.0))
    depth, _, height, up, intrinsics = render_room(pitch=0.0, yaw=45.0, planes=corner, focal=300.0)
    assert height.min() > 1.5 - 0.9  # lowest point less than 0.9 m below the camera
    c = hha_components(depth, intrinsics)
    assert _degrees(c.up, up) < 1.0
    stored = depth_to_hha(depth, intrinsics)[..., 1].astype(float)
    np.testing.assert_allclose(stored, np.rint((height - 1.5 + 1.3) * 100), atol=1.5)


def test_missing_depth_is_left_out_and_filled_from_neighbours():
    depth, plane, _, up, intrinsics = render_room(pitch=15.0, roll=3.0)
    blocks = np.zeros_like(depth, dtype=bool)
    blocks[80:95, 30:50] = True  # on the floor
    blocks[10:20, 100:130] = True  # on the wall
    dropouts = np.zeros_like(blocks)
    dropouts[::7, ::5] = True
    holes = blocks | dropouts
    sparse = np.where(holes, 0.0, depth)
    assert _degrees(hha_components(sparse, intrinsics).up, up) < 1.0
    full = depth_to_hha(depth, intrinsics).astype(int)
    filled = depth_to_hha(sparse, intrinsics).astype(int)
    interior = _interior(plane == FLOOR) | _interior(plane == WALL)
    # Isolated dropouts take their 1-pixel neighbour's values; the angle is that of the same plane.
    diff = np.abs(full - filled)
    assert diff[interior & dropouts & ~blocks].max() <= 4 and diff[interior & holes][:, 2].max() <= 1
    # Inside a block, height and disparity come from the block's rim: within the rim's range.
    for rows in (slice(0, 50), slice(50, None)):  # the wall block, then the floor block
        block = blocks[rows]
        rim = cv2.dilate(block.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~block
        inside, around = filled[rows][block], full[rows][rim]
        assert (around.min(0)[:2] <= inside.min(0)[:2]).all() and (inside.max(0)[:2] <= around.max(0)[:2]).all()
    masked = depth_to_hha(sparse, intrinsics, fill_missing=False)
    assert (masked[holes] == 0).all() and np.array_equal(masked[~holes], filled[~holes])


def test_estimate_up_ignores_nan_normals_and_keeps_pointing_up():
    floor = np.tile([0.0, -1.0, 0.0], (50, 1))
    wall = np.stack([np.ones(50), np.zeros(50), np.linspace(-1, 1, 50)], 1)
    wall /= np.linalg.norm(wall, axis=1, keepdims=True)
    normals = np.concatenate([floor, wall, np.full((5, 3), np.nan)])
    np.testing.assert_allclose(estimate_up(normals), [0.0, -1.0, 0.0], atol=1e-9)
    ceiling_only = np.tile([0.0, 1.0, 0.0], (10, 1))  # parallel normals of either sign count alike
    np.testing.assert_allclose(estimate_up(ceiling_only), [0.0, -1.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("bad, message", [
    (np.full((20, 20), -1.0), "negative"),
    (np.full((20, 20), np.nan), "NaN"),
    (np.full((20, 20), np.inf), "NaN / inf"),
    (np.zeros((20, 20)), "fewer than 3 valid"),
    (np.full((20, 20), 2500.0), "millimetre"),
    (np.ones((4, 20, 20)), "2-D"),
    (np.full((20, 20), "a"), "real numbers"),
])
def test_invalid_depth_is_a_clear_data_error(bad, message):
    with pytest.raises(DataError, match=message):
        depth_to_hha(bad)


def test_bad_intrinsics_and_tiny_maps_are_clear_errors():
    depth, *_ = render_room(size=(30, 40), focal=30.0)
    with pytest.raises(SeglabError, match="fx, fy, cx, cy"):
        depth_to_hha(depth, (30.0, 30.0, 20.0))
    with pytest.raises(SeglabError, match="positive focal"):
        depth_to_hha(depth, (0.0, 30.0, 20.0, 15.0))
    with pytest.raises(DataError, match="too small or sparse"):
        depth_to_hha(depth[:4, :4], (30.0, 30.0, 2.0, 2.0))
    hha = depth_to_hha(depth, (30.0, 30.0, 19.5, 14.5))
    assert hha.dtype == np.uint8 and hha.shape == (30, 40, 3)
