"""HHA: a depth map encoded as three 8-bit channels, horizontal disparity, height above ground and
the angle of the surface normal with gravity.

Gupta, Girshick, Arbelaez, Malik, "Learning Rich Features from RGB-D Images for Object Detection and
Segmentation", ECCV 2014 (Sec. 3 and the `saveHHA.m` / `processDepthImage.m` of their rcnn-depth
release); the gravity estimate is the one of Gupta, Arbelaez, Malik, "Perceptual Organization and
Recognition of Indoor Scenes from RGB-D Images", CVPR 2013 (Sec. 3.2). FCN (Long et al., CVPR 2015,
Sec. 5, NYUDv2 table) trains on these images. Choices followed:
- Point cloud: pixel (u, v) with depth z back-projects to ((u - cx) z / fx, (v - cy) z / fy, z),
  camera axes x right, y down, z forward; pixel indices start at 0 (the release's start at 1).
- Normals: a least-squares plane through the points of a (2r + 1)^2 window, fitted in inverse depth
  as the release does (plane n.p = 1, i.e. n.(x/z, y/z, 1) = 1/z), summed with box filters;
  r = 3 for the angle channel, r = 10 (smoother) for the gravity estimate. Normals face the camera.
- Gravity: start from the camera's up axis (0, -1, 0); collect normals within 45 degrees of parallel
  ("floor-like", N_par) or of perpendicular ("wall-like", N_perp) to the current estimate, and
  replace it by the eigenvector of N_perp^T N_perp - N_par^T N_par with the smallest eigenvalue (the
  direction most aligned with the floor-like normals and most orthogonal to the wall-like ones);
  5 iterations, then 5 more at 15 degrees.
- Height: the projection of each point on the up direction, minus that of the lowest point; when
  the lowest point is less than 0.9 m below the camera (no floor in view), the floor is assumed
  1.3 m below the camera, as the release does.
- Encoding (release's `saveHHA.m`, depth in metres): disparity = 310 / max(depth, 1 m) (31000 / cm),
  height in centimetres, angle in degrees + 38 (the release's `angle + 128 - 90`); each rounded and
  saturated to 0..255. Floor pixels (normal parallel to up) read angle 0 deg -> 38, walls 90 -> 128,
  ceilings 180 -> 218. The release orients normals away from the camera and gravity downwards; both
  signs flipped give the same angles.
- Missing depth (0): left out of every plane fit and of the gravity estimate; after the encoding each
  missing pixel takes the values of its nearest valid pixel, so the image has no holes (the release
  instead encodes NYU's colorization-filled depth). `fill_missing=False` writes 0 in all channels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from ..errors import DataError, SeglabError

# NYU Depth v2 colour camera (Kinect), `camera_params.m` of the NYU toolbox: fx, fy, cx, cy in
# pixels of the full 640 x 480 frame. For a cropped frame subtract the crop's left / top from cx / cy.
NYU_KINECT_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)

NORMAL_RADIUS = 3  # 7x7 plane fits for the angle channel
GRAVITY_RADIUS = 10  # 21x21 plane fits for the gravity estimate
GRAVITY_SCHEDULE = ((45.0, 5), (15.0, 5))  # (angle threshold in degrees, iterations)
MIN_DEPTH_FOR_DISPARITY = 1.0  # metres; nearer points would overflow the disparity channel
NO_FLOOR_DROP, ASSUMED_CAMERA_HEIGHT = 0.9, 1.3  # metres, see the module docstring
ANGLE_OFFSET = 38.0  # degrees added to the angle (the release's 128 - 90)
MAX_PLAUSIBLE_DEPTH = 100.0  # metres; larger values are almost surely millimetres


class HHAComponents(NamedTuple):
    """The unquantised channels (H x W float64 each, NaN-free) and the estimated up direction."""
    disparity: np.ndarray  # 1 / metres, unclipped
    height: np.ndarray  # metres above the estimated floor
    angle: np.ndarray  # degrees between the surface normal and up
    up: np.ndarray  # (3,) unit vector in camera coordinates (x right, y down, z forward)
    valid: np.ndarray  # H x W bool: depth was measured here


def _check_depth(depth_m: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or min(depth.shape) < 1:
        raise DataError(f"depth map must be a 2-D H x W array in metres, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.number) or np.iscomplexobj(depth):
        raise DataError(f"depth map must hold real numbers (metres), got dtype {depth.dtype}")
    depth = depth.astype(np.float64)
    if not np.isfinite(depth).all():
        raise DataError(f"depth map has {int((~np.isfinite(depth)).sum())} NaN / inf values; "
                        f"mark missing depth with 0")
    if (depth < 0).any():
        raise DataError(f"depth map has negative values (min {depth.min():g}); depth is a distance in "
                        f"metres, 0 marks a missing reading")
    if depth.max() > MAX_PLAUSIBLE_DEPTH:
        raise DataError(f"depth map reaches {depth.max():g}, expected metres (at most {MAX_PLAUSIBLE_DEPTH:g}): "
                        f"millimetre maps (NYUDv2's uint16 PNGs) must be divided by 1000")
    if (depth > 0).sum() < 3:
        raise DataError("depth map has fewer than 3 valid (non-zero) pixels; nothing to encode")
    return depth


def check_intrinsics(intrinsics: Sequence[float]) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in intrinsics)
    if len(values) != 4 or not all(np.isfinite(values)) or values[0] <= 0 or values[1] <= 0:
        raise SeglabError(f"intrinsics must be (fx, fy, cx, cy) with positive focal lengths in pixels, "
                          f"got {tuple(intrinsics)}")
    return values  # type: ignore[return-value]


def back_project(depth_m: np.ndarray, intrinsics: Sequence[float] = NYU_KINECT_INTRINSICS) -> np.ndarray:
    """H x W x 3 camera-frame points (metres; x right, y down, z forward) of a depth map."""
    fx, fy, cx, cy = check_intrinsics(intrinsics)
    h, w = depth_m.shape
    u = (np.arange(w, dtype=np.float64) - cx) / fx
    v = (np.arange(h, dtype=np.float64) - cy) / fy
    return np.stack([u[None, :] * depth_m, v[:, None] * depth_m, depth_m], axis=-1)


def _box_sum(maps: np.ndarray, radius: int) -> np.ndarray:
    """Sum of each H x W x C map over the (2r + 1)^2 window around every pixel (zeros outside)."""
    k = 2 * radius + 1
    return cv2.boxFilter(maps, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)


def surface_normals(depth_m: np.ndarray, valid: np.ndarray, radius: int,
                    intrinsics: Sequence[float] = NYU_KINECT_INTRINSICS) -> np.ndarray:
    """H x W x 3 unit normals facing the camera, from a plane fit over each (2r + 1)^2 window of valid
    points; NaN where fewer than half the window is valid. The plane n.p = 1 is fitted in inverse
    depth: n.(x/z, y/z, 1) = 1/z, linear least squares whose 3 x 3 normal equations are box sums."""
    fx, fy, cx, cy = check_intrinsics(intrinsics)
    h, w = depth_m.shape
    a = np.broadcast_to((np.arange(w, dtype=np.float64) - cx)[None, :] / fx, (h, w))  # x / z
    b = np.broadcast_to((np.arange(h, dtype=np.float64) - cy)[:, None] / fy, (h, w))  # y / z
    m = valid.astype(np.float64)
    inv_z = np.where(valid, 1.0 / np.where(valid, depth_m, 1.0), 0.0)
    terms = np.stack([a * a * m, a * b * m, a * m, b * b * m, b * m, m, a * inv_z, b * inv_z, inv_z], -1)
    s = _box_sum(terms, radius)
    aa, ab, a1, bb, b1, n1, ra, rb, r1 = np.moveaxis(s, -1, 0)
    # n = adj(A^T A) (A^T r); the determinant only scales n, which is normalised below.
    c00, c01, c02 = bb * n1 - b1 * b1, b1 * a1 - ab * n1, ab * b1 - bb * a1
    c11, c12, c22 = aa * n1 - a1 * a1, ab * a1 - aa * b1, aa * bb - ab * ab
    det = aa * c00 + ab * c01 + a1 * c02
    n = np.stack([c00 * ra + c01 * rb + c02 * r1, c01 * ra + c11 * rb + c12 * r1,
                  c02 * ra + c12 * rb + c22 * r1], -1)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ok = (n1 >= 0.5 * (2 * radius + 1) ** 2) & (det > 0) & (norm[..., 0] > 0)
    # n points from the camera to the plane (n.p = 1 > 0); flip it to face the camera.
    normals = -n / np.where(norm > 0, norm, 1.0)
    normals[~ok] = np.nan
    return normals


def estimate_up(normals: np.ndarray, schedule: Sequence[tuple[float, int]] = GRAVITY_SCHEDULE,
                initial: Sequence[float] = (0.0, -1.0, 0.0)) -> np.ndarray:
    """The up direction (unit 3-vector, camera coordinates) from surface normals, by the iterative
    floor / wall alignment of Gupta et al. (module docstring). NaN normals are ignored; with no usable
    normal (a map smaller than the fit window) the initial direction is returned."""
    n = normals.reshape(-1, 3)
    n = n[np.isfinite(n).all(axis=1)]
    up = np.asarray(initial, dtype=np.float64)
    up = up / np.linalg.norm(up)
    for threshold, iterations in schedule:
        cos_t, sin_t = np.cos(np.radians(threshold)), np.sin(np.radians(threshold))
        for _ in range(iterations):
            sim = np.abs(n @ up)
            parallel, perpendicular = n[sim > cos_t], n[sim < sin_t]
            if len(parallel) + len(perpendicular) == 0:
                break
            scatter = perpendicular.T @ perpendicular - parallel.T @ parallel
            _, vectors = np.linalg.eigh(scatter)  # eigenvalues ascending
            new = vectors[:, 0]
            up = new * (1.0 if new @ up >= 0 else -1.0)  # keep pointing up
    return up


def _nearest_valid_index(valid: np.ndarray) -> np.ndarray:
    """For every pixel, the flat index of the nearest valid pixel (itself when valid)."""
    flat = np.flatnonzero(valid.ravel())
    if flat.size == valid.size:
        return np.arange(valid.size)
    # OpenCV labels every zero pixel of its input and gives each pixel the label of the nearest one.
    _, labels = cv2.distanceTransformWithLabels((~valid).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(labels.max() + 1, dtype=np.int64)
    lut[labels.ravel()[flat]] = flat
    return lut[labels.ravel()]


def hha_components(depth_m: np.ndarray, intrinsics: Sequence[float] = NYU_KINECT_INTRINSICS, *,
                   normal_radius: int = NORMAL_RADIUS, gravity_radius: int = GRAVITY_RADIUS) -> HHAComponents:
    """Disparity (1/m), height above the floor (m), angle with up (degrees) and the up vector. Values at
    missing pixels are those of the nearest valid pixel."""
    if min(normal_radius, gravity_radius) < 1:
        raise SeglabError(f"normal_radius and gravity_radius must be >= 1 pixel, got {normal_radius}, {gravity_radius}")
    depth = _check_depth(depth_m)
    valid = depth > 0
    points = back_project(depth, intrinsics)
    up = estimate_up(surface_normals(depth, valid, gravity_radius, intrinsics))
    normals = surface_normals(depth, valid, normal_radius, intrinsics)

    height = points @ up
    lowest = height[valid].min()
    floor = lowest if lowest <= -NO_FLOOR_DROP else -ASSUMED_CAMERA_HEIGHT
    angle = np.degrees(np.arccos(np.clip(normals @ up, -1.0, 1.0)))
    fitted = np.isfinite(angle)
    if not fitted.any():
        k = 2 * normal_radius + 1
        raise DataError(f"depth map {depth.shape[1]}x{depth.shape[0]} is too small or sparse for surface normals: "
                        f"no {k}x{k} window is at least half valid")
    # Pixels without a normal (too few valid neighbours) borrow the nearest fitted one.
    nearest_fit = _nearest_valid_index(fitted)
    angle = angle.ravel()[nearest_fit].reshape(angle.shape)
    nearest = _nearest_valid_index(valid)
    disparity = (1.0 / np.where(valid, depth, 1.0)).ravel()[nearest].reshape(depth.shape)
    height = (height - floor).ravel()[nearest].reshape(depth.shape)
    angle = angle.ravel()[nearest].reshape(depth.shape)
    return HHAComponents(disparity, height, angle, up, valid)


def depth_to_hha(depth_m: np.ndarray, intrinsics: Sequence[float] = NYU_KINECT_INTRINSICS, *,
                 fill_missing: bool = True, normal_radius: int = NORMAL_RADIUS,
                 gravity_radius: int = GRAVITY_RADIUS) -> np.ndarray:
    """H x W x 3 uint8 HHA image of a depth map in metres (0 = missing), Gupta et al.'s encoding:
    [310 / max(depth, 1), height above floor in cm, angle with up in degrees + 38], rounded and
    saturated. `intrinsics` = (fx, fy, cx, cy) in pixels (default: NYUDv2's Kinect)."""
    c = hha_components(depth_m, intrinsics, normal_radius=normal_radius, gravity_radius=gravity_radius)
    disparity = np.minimum(c.disparity, 1.0 / MIN_DEPTH_FOR_DISPARITY) * 310.0
    channels = np.stack([disparity, c.height * 100.0, c.angle + ANGLE_OFFSET], axis=-1)
    hha = np.clip(np.rint(channels), 0, 255).astype(np.uint8)
    if not fill_missing:
        hha[~c.valid] = 0
    return hha


__all__ = ["NYU_KINECT_INTRINSICS", "HHAComponents", "back_project", "check_intrinsics", "depth_to_hha",
           "estimate_up", "hha_components", "surface_normals"]
