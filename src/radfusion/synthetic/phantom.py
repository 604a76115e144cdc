"""A CT pulmonary angiography phantom: chest anatomy, a contrast-filled arterial tree, emboli.

Coordinates are millimetres in the patient frame: x left-right (image columns), y
anterior-posterior (image rows, anterior at the top), z head-to-foot (slices). The field of
view is 360 mm square and the scan covers ``SCAN_LENGTH_MM`` from the lung apex to the upper
abdomen whatever the slice count, so a volume of any shape shows the same anatomy.

What is drawn, per study with its own random body size, fat, contrast timing and noise:

* body outline with subcutaneous fat, chest-wall muscle and ribs (oblique bands of bone),
  the mediastinum, the spine (vertebral bodies with cortex, intervertebral discs, canal);
* lungs with parenchymal texture and vascular markings, domes of the diaphragm, the liver
  below the right dome;
* the heart, the aorta (ascending, arch, descending) and the pulmonary arterial tree: trunk,
  two main, five lobar, ~18 segmental and ~36 subsegmental arteries as tubes of decreasing
  calibre, filled with contrast (HU set by the study's contrast timing); the segmental and
  smaller ones branch within their lung, so a clot in them is framed by aerated lung;
* emboli: low-attenuation filling defects inside the arteries at the level of the study's
  subtype (central: trunk/main/lobar; segmental; subsegmental), occlusive or eccentric,
  spanning several slices, some subtle (small, partial, less dark); beyond an occluding
  clot (any but the subtle ones, below the trunk) the arteries are left unopacified;
* mimics in any study: mixing artefacts (ill-defined lower enhancement in the trunk and main
  arteries) and poorly opacified studies.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Embolus",
    "PhantomParams",
    "PhantomRenderer",
    "Tube",
    "render_phantom",
    "render_with_and_without_emboli",
    "sample_phantom",
    "write_phantom",
]

FOV_MM = 360.0
SCAN_LENGTH_MM = 400.0
AIR, FAT, MUSCLE, MEDIASTINUM = -1000, -95, 45, 20
LEVEL_RADIUS = {
    "trunk": 14.0,
    "main": 10.0,
    "lobar": 6.0,
    "segmental": 3.5,
    "subsegmental": 2.0,
    "peripheral": 1.3,
}
SUBTYPE_LEVELS = {
    "central": ("trunk", "main", "lobar"),
    "segmental": ("segmental",),
    "subsegmental": ("subsegmental",),
}


@dataclass(frozen=True)
class Tube:
    """A straight vessel segment (a capsule) from ``start`` to ``end`` in mm."""

    start: np.ndarray
    end: np.ndarray
    radius: float
    level: str


@dataclass(frozen=True)
class Embolus:
    tube: Tube
    start: np.ndarray
    end: np.ndarray
    radius: float
    hu: float


@dataclass
class PhantomParams:
    body_a: float  # lateral half-width of the body, mm
    body_b: float  # anterior-posterior half-depth, mm
    fat: float  # subcutaneous fat thickness, mm
    lung_hu: float
    pa_hu: float  # contrast in the pulmonary arteries
    aorta_hu: float
    noise_sd: float
    tubes: list[Tube] = field(default_factory=list)
    emboli: list[Embolus] = field(default_factory=list)
    mixing: list[Embolus] = field(default_factory=list)  # mixing artefacts, drawn like emboli

    @property
    def chest(self) -> _Chest:
        return _Chest(self.body_a, self.body_b, self.fat)


def _unit(v):
    return v / np.linalg.norm(v)


def _cross(a, b):
    """``np.cross`` of two 3-vectors, the same products and differences without its
    per-call array machinery (the arterial tree draws a million of them per cohort)."""
    a0, a1, a2 = float(a[0]), float(a[1]), float(a[2])
    b0, b1, b2 = float(b[0]), float(b[1]), float(b[2])
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _rotate_towards(direction, rng, max_deg):
    """A direction within ``max_deg`` of ``direction`` (uniform over the cone's angles)."""
    d = _unit(direction)
    other = (1.0, 0.0, 0.0) if abs(d[0]) < 0.9 else (0.0, 1.0, 0.0)
    p1 = _unit(_cross(d, other))
    p2 = _cross(d, p1)
    angle = np.deg2rad(rng.uniform(15, max_deg))
    phi = rng.uniform(0, 2 * np.pi)
    return _unit(np.cos(angle) * d + np.sin(angle) * (np.cos(phi) * p1 + np.sin(phi) * p2))


@dataclass(frozen=True)
class _Chest:
    """The body's cross-section at each level: nested ellipses for skin, muscle, ribs and the
    thoracic cavity, and inside the cavity the lungs, the heart and the liver. Shared by the
    slice drawing and the arterial tree, so that the tree runs where the lungs are drawn."""

    body_a: float
    body_b: float
    fat: float

    def section(self, t: float) -> tuple[float, float, float, float, float]:
        """At height ``t`` (0 apex .. 1 upper abdomen): the body's half-axes a, b and the
        relative radii of the muscle, rib band and cavity."""
        a = self.body_a * (0.9 + 0.1 * t)
        b = self.body_b * (0.93 + 0.07 * t)
        mean_r = (a + b) / 2
        r_muscle = 1 - self.fat / mean_r
        r_rib = r_muscle - 4 / mean_r
        return a, b, r_muscle, r_rib, r_rib - 10 / mean_r

    def _cavity(self, t):
        a, b, *_, r_cavity = self.section(t)
        return a * r_cavity, b * r_cavity

    def lung(self, t: float, side: int) -> tuple[float, float, float, float]:
        """Centre and half-axes (mm) of a lung's section; ``side`` +1 is the image's right
        half, the lung with the lower dome. Half-axes are 0 above and below the lung."""
        ac, bc = self._cavity(t)
        prof = _profile(t, 0.06, 0.90 if side > 0 else 0.86)
        return side * 0.5 * ac, 0.06 * bc, 0.42 * ac * prof, 0.80 * bc * prof

    def heart(self, t: float) -> tuple[float, float, float, float]:
        ac, bc = self._cavity(t)
        prof = _profile(t, 0.56, 0.84)
        return 0.18 * ac, -0.28 * bc, 0.40 * ac * prof, 0.42 * bc * prof

    def liver(self, t: float) -> tuple[float, float, float, float]:
        ac, bc = self._cavity(t)
        grow = min(1.0, max(0.0, (t - 0.72) / 0.2))
        return -0.35 * ac, 0.0, 0.7 * ac * grow, 0.75 * bc * grow

    def lung_depth(self, point: np.ndarray, side: int) -> float:
        """How deep ``point`` lies in a lung: its elliptic radius in the lung's section (0 at
        the centre, 1 on the pleura), infinite where the heart or liver takes the place."""
        t = float(point[2]) / SCAN_LENGTH_MM

        def radius(ellipse):
            cx, cy, ax, ay = ellipse
            if ax <= 0 or ay <= 0:
                return math.inf
            return math.hypot((point[0] - cx) / ax, (point[1] - cy) / ay)

        if radius(self.heart(t)) <= 1.1 or radius(self.liver(t)) <= 1.1:
            return math.inf
        return radius(self.lung(t, side))


# A branch is kept when its end lies this deep in its lung (elliptic radius), so that the
# vessel and a clot in it are surrounded by aerated lung, as real segmental arteries are.
BRANCH_DEPTH = 0.85


def _branch(chest: _Chest, side: int, start, direction, rng, max_deg, length):
    """A branch from ``start`` within ``max_deg`` of ``direction`` that stays in the lung:
    up to 12 draws of direction and length; failing those, the deepest draw shortened until
    its end is inside (never below a quarter of its length)."""
    best = None
    for _ in range(12):
        d = _rotate_towards(direction, rng, max_deg)
        n = rng.uniform(*length)
        depth = chest.lung_depth(start + d * n, side)
        if depth <= BRANCH_DEPTH:
            return d, start + d * n
        if best is None or depth < best[0]:
            best = (depth, d, n)
    _, d, n = best
    for scale in np.linspace(1.0, 0.25, 16)[1:]:
        if chest.lung_depth(start + d * n * scale, side) <= BRANCH_DEPTH:
            break
    return d, start + d * n * scale


def _arterial_tree(chest: _Chest, rng, calibre: float = 1.0) -> list[Tube]:
    a, b = chest.body_a, chest.body_b
    sx, sy, L = a / 170.0, b / 125.0, SCAN_LENGTH_MM
    # The trunk and main arteries keep their size; the smaller ones grow, up to a main's.
    radius = {
        level: r if level in ("trunk", "main") else min(r * calibre, LEVEL_RADIUS["main"])
        for level, r in LEVEL_RADIUS.items()
    }
    jitter = lambda: rng.normal(0, 4, 3)  # noqa: E731

    def pt(x, y, t):
        return np.array([x * sx, y * sy, t * L]) + jitter()

    tubes: list[Tube] = []
    rv, bif = pt(22, -55, 0.63), pt(6, -10, 0.47)
    tubes.append(Tube(rv, bif, radius["trunk"], "trunk"))
    hila = {1: pt(68, 2, 0.46), -1: pt(-64, -2, 0.49)}
    for hilum in hila.values():
        tubes.append(Tube(bif, hilum, radius["main"], "main"))
    lobes = {
        1: [pt(86, -12, 0.34), pt(86, 38, 0.68)],
        -1: [pt(-86, -6, 0.33), pt(-78, -48, 0.58), pt(-82, 36, 0.70)],
    }
    # Segmental and smaller branches stay inside their lung (``_branch``).
    for side, ends in lobes.items():
        for end in ends:
            tubes.append(Tube(hila[side], end, radius["lobar"], "lobar"))
            direction = end - hila[side]
            for _ in range(rng.integers(3, 5)):
                seg_dir, seg_end = _branch(chest, side, end, direction, rng, 55, (32, 48))
                tubes.append(Tube(end, seg_end, radius["segmental"], "segmental"))
                for _ in range(2):
                    sub_dir, sub_end = _branch(chest, side, seg_end, seg_dir, rng, 50, (18, 28))
                    tubes.append(Tube(seg_end, sub_end, radius["subsegmental"], "subsegmental"))
                    for _ in range(2):  # peripheral branches: lung vascularity, never a clot
                        _, tip = _branch(chest, side, sub_end, sub_dir, rng, 45, (12, 20))
                        tubes.append(Tube(sub_end, tip, radius["peripheral"], "peripheral"))
    return tubes


def _clot_in(tube: Tube, rng, *, subtle: bool, hu: float) -> Embolus:
    length = np.linalg.norm(tube.end - tube.start)
    span = rng.uniform(0.35, 0.8) * length
    s0 = rng.uniform(0.05, max(0.06, 1 - span / length - 0.05))
    axis = tube.end - tube.start
    start = tube.start + s0 * axis
    end = start + axis * span / length
    frac = rng.uniform(0.35, 0.6) if subtle else rng.uniform(0.6, 0.95)
    radius = frac * tube.radius
    offset = (tube.radius - radius) * rng.uniform(0, 1)
    shift = _rotate_towards(axis, rng, 90) * offset
    # Keep the offset perpendicular to the axis so the clot stays in the lumen.
    shift -= axis * (shift @ axis) / (axis @ axis)
    return Embolus(tube, start + shift, end + shift, radius, hu)


def _unopacified_beyond(clot: Embolus, tubes: list[Tube]) -> list[Embolus]:
    """An occluding clot stops the contrast: every artery beyond it fills with unopacified
    blood, drawn at the clot's density. A trunk clot is left non-occlusive (an occluded trunk
    is not survived)."""
    if clot.tube.level == "trunk":
        return []
    out, frontier = [], [clot.tube]
    while frontier:
        parent = frontier.pop()
        # _arterial_tree hands each branch point's array to the tube ending there and to the
        # tubes starting there, so a child is found by identity, not by comparing coordinates.
        children = [t for t in tubes if t.start is parent.end]
        out += [Embolus(t, t.start, t.end, t.radius, clot.hu) for t in children]
        frontier += children
    return out


def sample_phantom(pe_type: str, rng: np.random.Generator, calibre: float = 1.0) -> PhantomParams:
    """Draw one study's anatomy, contrast, noise, emboli (``pe_type`` "" for none) and mimics.

    ``calibre`` scales the radii of the lobar and smaller arteries (up to a main artery's),
    and with them the emboli inside. At 1 they are true to size. A volume generated at low
    resolution (the demo's 64 px: 5.6 mm pixels) leaves a segmental artery about one pixel
    wide, so the demo draws them thicker: at 3 a segmental artery is as many pixels wide at
    64 px as a true-size one is in PENet's 192-px input.
    """
    poor = rng.random() < 0.1
    params = PhantomParams(
        body_a=rng.uniform(150, 195),
        body_b=rng.uniform(108, 145),
        fat=rng.uniform(8, 34),
        lung_hu=rng.uniform(-885, -825),
        pa_hu=rng.uniform(140, 200) if poor else rng.uniform(230, 470),
        aorta_hu=rng.uniform(140, 330),
        noise_sd=rng.uniform(12, 30),
    )
    params.tubes = _arterial_tree(params.chest, rng, calibre)
    if pe_type:
        levels = SUBTYPE_LEVELS[pe_type]
        candidates = [t for t in params.tubes if t.level in levels]
        n = rng.integers(1, 4)
        occlusive = []
        for tube in rng.choice(len(candidates), size=min(n, len(candidates)), replace=False):
            subtle = rng.random() < 0.3
            hu = rng.uniform(80, 130) if subtle else rng.uniform(15, 75)
            params.emboli.append(_clot_in(candidates[tube], rng, subtle=subtle, hu=hu))
            if not subtle:
                occlusive.append(params.emboli[-1])
        if pe_type == "central" and rng.random() < 0.5:  # central clot often extends distally
            segs = [t for t in params.tubes if t.level == "segmental"]
            tube = segs[rng.integers(len(segs))]
            params.emboli.append(_clot_in(tube, rng, subtle=False, hu=rng.uniform(15, 75)))
            occlusive.append(params.emboli[-1])
        for clot in occlusive:
            params.emboli.extend(_unopacified_beyond(clot, params.tubes))
    if rng.random() < 0.25:
        central = [t for t in params.tubes if t.level in ("trunk", "main")]
        tube = central[rng.integers(len(central))]
        hu = params.pa_hu - rng.uniform(90, 160)
        params.mixing.append(_clot_in(tube, rng, subtle=False, hu=hu))
    return params


class _Grid:
    """Voxel-centre coordinates (mm) of a volume of shape (slices, rows, cols)."""

    def __init__(self, shape):
        s, h, w = shape
        self.shape = shape
        self.dx, self.dy, self.dz = FOV_MM / w, FOV_MM / h, SCAN_LENGTH_MM / s
        self.x = ((np.arange(w) + 0.5) * self.dx - FOV_MM / 2).astype(np.float32)
        self.y = ((np.arange(h) + 0.5) * self.dy - FOV_MM / 2).astype(np.float32)
        self.z = ((np.arange(s) + 0.5) * self.dz).astype(np.float32)

    def span(self, coords, lo, hi):
        """The slice of ``coords`` (one of x, y, z: uniform, ascending) within [lo, hi]."""
        n, first = len(coords), float(coords[0])
        step = float(coords[1] - coords[0]) if n > 1 else 1.0
        start = min(max(math.ceil((lo - first) / step), 0), n)
        stop = min(max(math.floor((hi - first) / step) + 1, start), n)
        return slice(start, stop)


def _ellipse(grid, img, cx, cy, ax, ay, value, add=None):
    """Fill an axis-aligned ellipse in a 2-D slice with ``value`` (plus ``add``'s pixels)."""
    if ax <= 0 or ay <= 0:
        return
    cols = grid.span(grid.x, cx - ax, cx + ax)
    rows = grid.span(grid.y, cy - ay, cy + ay)
    if cols.start == cols.stop or rows.start == rows.stop:  # between pixel centres
        return
    u = ((grid.x[cols] - cx) / ax) ** 2
    v = ((grid.y[rows] - cy) / ay) ** 2
    mask = (v[:, None] + u[None, :]) <= 1.0
    box = img[rows, cols]
    if add is None:
        np.copyto(box, np.int16(value), where=mask)
    else:
        np.copyto(box, add[rows, cols] + np.int16(value), where=mask)


def _profile(t, top, bottom):
    """Half-ellipse profile: 0 at ``top`` and ``bottom``, 1 midway."""
    mid, half = (top + bottom) / 2, (bottom - top) / 2
    return float(np.sqrt(max(0.0, 1 - ((t - mid) / half) ** 2)))


def _noise_bank(shape, sd, rng, smooth=False, k=6):
    h, w = shape
    if not smooth:
        return (rng.standard_normal((k, h + 16, w + 16), dtype=np.float32) * sd).astype(np.int16)
    # Smooth texture: coarse noise upsampled (nearest, then a box blur) - cheap and isotropic.
    step = max(1, round(w / 96))
    coarse = rng.standard_normal((k, (h + 16) // step + 2, (w + 16) // step + 2), dtype=np.float32)
    fine = coarse.repeat(step, 1).repeat(step, 2)[:, : h + 16, : w + 16]
    for axis in (1, 2):
        fine = (
            fine + np.roll(fine, step // 2 + 1, axis) + np.roll(fine, -(step // 2 + 1), axis)
        ) / 3
    fine = fine / (fine.std() + 1e-6) * sd
    # Sparse bright dots: vascular markings seen end-on.
    dots = rng.random(fine.shape) < 0.004
    fine[dots] += 3 * sd
    return fine.astype(np.int16)


def _layer_bounds(grid, a, b, radii):
    """Per row, the column interval [lo, hi) inside each centred ellipse (a*r, b*r)."""
    r2 = np.asarray(radii, dtype=np.float32)[:, None] ** 2
    half = a * np.sqrt(np.maximum(r2 - (grid.y / b) ** 2, 0.0))
    # The x grid is uniform, so the interval ends follow by arithmetic, not by search.
    first, step, n = float(grid.x[0]), grid.dx, len(grid.x)
    lo = np.clip(np.ceil((-half - first) / step), 0, n).astype(np.int64)
    hi = np.clip(np.floor((half - first) / step) + 1, 0, n).astype(np.int64)
    return list(zip(lo, np.maximum(hi, lo), strict=True))


def _background_slice(grid, p: PhantomParams, z, img, tex):
    """Draw one slice's anatomy (without vessels and noise) into ``img``."""
    t = z / SCAN_LENGTH_MM
    a, b, r_muscle, r_rib, r_cavity = p.chest.section(t)
    # Body layers are nested, centred ellipses, so each row is a run of constant tissue:
    # air | fat | muscle | rib band | mediastinum | rib band | muscle | fat | air.
    (lo_b, hi_b), (lo_m, hi_m), (lo_r, hi_r), (lo_c, hi_c) = _layer_bounds(
        grid, a, b, (1.0, r_muscle, r_rib, r_cavity)
    )
    h, w = img.shape
    edges = np.stack(
        [np.zeros(h, int), lo_b, lo_m, lo_r, lo_c, hi_c, hi_r, hi_m, hi_b, np.full(h, w)], axis=1
    )
    # Ribs: oblique bands of bone, so a row's chest wall is bone where its angle's phase hits.
    phase = (z + 40 * np.abs(np.arctan2(grid.y / b, 1.0)) / np.pi) % 26.0
    # Only the lateral chest wall: where rows cross it steeply, a row's band is short.
    rib = (phase < 9) & (0.05 < t < 0.85) & (np.abs(grid.y) < 0.6 * b)
    band = np.where(rib, 650, MUSCLE).astype(np.int16)
    values = np.empty((h, 9), dtype=np.int16)
    values[:] = (AIR, FAT, MUSCLE, 0, MEDIASTINUM, 0, MUSCLE, FAT, AIR)
    values[:, 3] = values[:, 5] = band
    img.reshape(-1)[:] = np.repeat(values.reshape(-1), np.diff(edges, axis=1).reshape(-1))
    bc = b * r_cavity
    # Lungs, the right one (image left) with the higher dome; the liver beneath it.
    for side in (1, -1):
        _ellipse(grid, img, *p.chest.lung(t, side), value=p.lung_hu, add=tex)
    _ellipse(grid, img, *p.chest.liver(t), value=65)
    # Heart: myocardium and contrast-mixed blood.
    hcx, hcy, hx, hy = p.chest.heart(t)
    _ellipse(grid, img, hcx, hcy, hx, hy, value=50)
    _ellipse(grid, img, hcx, hcy, hx - 6, hy - 6, value=int(0.5 * (p.pa_hu + p.aorta_hu)))
    # Spine: vertebral body (cortex, cancellous bone or disc), canal and posterior arch.
    disc = (z % 30.0) < 6.0
    cy = bc * 0.80
    _ellipse(grid, img, 0, cy, 20, 17, value=700)
    _ellipse(grid, img, 0, cy, 16, 13, value=80 if disc else 230)
    _ellipse(grid, img, 0, cy + 27, 13, 11, value=650)
    _ellipse(grid, img, 0, cy + 25, 7, 7, value=25)


def _aorta(a, b, r_cavity=0.72) -> list[Tube]:
    L = SCAN_LENGTH_MM
    asc0, asc1 = (
        np.array([-0.05 * a, -0.22 * b, 0.62 * L]),
        np.array([-0.05 * a, -0.15 * b, 0.28 * L]),
    )
    arch = np.array([0.12 * a, 0.2 * b, 0.24 * L])
    desc1 = np.array([0.15 * a, 0.55 * b * r_cavity, 1.0 * L])
    desc0 = np.array([0.15 * a, 0.55 * b * r_cavity, 0.28 * L])
    return [
        Tube(asc0, asc1, 14, "aorta"),
        Tube(asc1, arch, 12, "aorta"),
        Tube(arch, desc0, 11, "aorta"),
        Tube(desc0, desc1, 11, "aorta"),
    ]


def _capsule(grid, block, z0, start, end, radius, value, soft=False):
    """Set voxels within ``radius`` of the segment start-end, in a block of slices starting at
    slice ``z0``; return the (absolute) indices of the slices touched."""
    lo = np.minimum(start, end) - radius
    hi = np.maximum(start, end) + radius
    zs = grid.span(grid.z, lo[2], hi[2])
    zs = slice(max(zs.start, z0), min(zs.stop, z0 + len(block)))
    ys, xs = grid.span(grid.y, lo[1], hi[1]), grid.span(grid.x, lo[0], hi[0])
    if zs.start >= zs.stop or ys.start >= ys.stop or xs.start >= xs.stop:
        return np.zeros(0, dtype=int)
    d = end - start
    dd = float(d @ d) or 1.0
    px = grid.x[xs][None, None, :] - start[0]
    py = grid.y[ys][None, :, None] - start[1]
    pz = grid.z[zs][:, None, None] - start[2]
    s = np.clip((px * d[0] + py * d[1] + pz * d[2]) / dd, 0.0, 1.0)
    dist2 = (px - s * d[0]) ** 2 + (py - s * d[1]) ** 2 + (pz - s * d[2]) ** 2
    inside = dist2 <= radius * radius
    box = block[zs.start - z0 : zs.stop - z0, ys, xs]
    if soft:  # an ill-defined edge: blend towards ``value`` with distance
        w = np.clip(1 - np.sqrt(dist2) / radius, 0, 1) ** 0.5
        box[inside] = (box[inside] * (1 - w[inside]) + value * w[inside]).astype(block.dtype)
    else:
        box[inside] = value
    hit = inside.any(axis=(1, 2))
    return np.arange(zs.start, zs.stop)[hit]


@dataclass(frozen=True)
class _ZRange:
    """A tube (vessel, artefact or clot) with the slices its capsule can reach."""

    start: np.ndarray
    end: np.ndarray
    radius: float
    start_z: int
    stop_z: int

    @classmethod
    def of(cls, tube, grid):
        lo = min(tube.start[2], tube.end[2]) - tube.radius
        hi = max(tube.start[2], tube.end[2]) + tube.radius
        zs = grid.span(grid.z, lo, hi)
        return cls(tube.start, tube.end, tube.radius, zs.start, zs.stop)


class PhantomRenderer:
    """Renders a study block by block (``chunk`` slices at a time), so that a full-size volume
    streams to disk through a small, cache-friendly buffer.

    All randomness is drawn on construction: the same generator state gives the same volume
    whatever the chunk size. ``embolus_slices`` is complete once every block was rendered.
    """

    def __init__(self, shape, params: PhantomParams, rng: np.random.Generator, chunk: int = 16):
        self.shape, self.params, self.chunk = tuple(shape), params, chunk
        self.grid = _Grid(self.shape)
        s, h, w = self.shape
        self.textures = _noise_bank((h, w), 35.0, rng, smooth=True, k=4)
        self.texture_shift = rng.integers(0, 16, size=s)
        self.noise = _noise_bank((h, w), params.noise_sd, rng)
        self.noise_shift = rng.integers(0, 16, size=(s, 2))
        # Painting order: aorta, arteries, mixing artefacts, then the emboli inside them.
        self.tubes = [
            *(
                ("vessel", _ZRange.of(t, self.grid), int(params.aorta_hu))
                for t in _aorta(params.body_a, params.body_b)
            ),
            *(("vessel", _ZRange.of(t, self.grid), int(params.pa_hu)) for t in params.tubes),
            *(("mixing", _ZRange.of(m, self.grid), int(m.hu)) for m in params.mixing),
            *(("embolus", _ZRange.of(e, self.grid), int(e.hu)) for e in params.emboli),
        ]
        self.embolus_slices: set[int] = set()

    def blocks(self):
        """Yield ``(first_slice, block)``; a block's buffer is reused two blocks later."""
        s, h, w = self.shape
        p, grid = self.params, self.grid
        # Two buffers, alternating: a consumer may still be writing the previous block out.
        buffers = [np.empty((min(self.chunk, s), h, w), dtype=np.int16) for _ in range(2)]
        for z0 in range(0, s, self.chunk):
            block = buffers[(z0 // self.chunk) % 2][: min(self.chunk, s - z0)]
            for i in range(len(block)):
                k = z0 + i
                # Parenchyma texture drifts slowly through the slices.
                t = k // 6
                tex = self.textures[t % len(self.textures)]
                tex = tex[self.texture_shift[t % s] :][:h, 8 : 8 + w]
                _background_slice(grid, p, float(grid.z[k]), block[i], tex)
            z1 = z0 + len(block)
            for kind, shape, value in self.tubes:
                if shape.stop_z <= z0 or shape.start_z >= z1:
                    continue  # the tube does not reach this block
                hits = _capsule(
                    grid,
                    block,
                    z0,
                    shape.start,
                    shape.end,
                    shape.radius,
                    value,
                    soft=kind == "mixing",
                )
                if kind == "embolus":
                    self.embolus_slices.update(int(k) for k in hits)
            for i in range(len(block)):
                oy, ox = self.noise_shift[z0 + i]
                block[i] += self.noise[(z0 + i) % len(self.noise), oy : oy + h, ox : ox + w]
            yield z0, block


def render_phantom(
    shape: tuple[int, int, int], params: PhantomParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render a study into an int16 HU array of ``shape`` (slices, rows, cols).

    Returns the volume and the sorted indices of the slices that contain embolus voxels.
    """
    renderer = PhantomRenderer(shape, params, rng)
    vol = np.empty(shape, dtype=np.int16)
    for z0, block in renderer.blocks():
        vol[z0 : z0 + len(block)] = block
    return vol, np.array(sorted(renderer.embolus_slices), dtype=int)


def render_with_and_without_emboli(
    shape: tuple[int, int, int], params: PhantomParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A study rendered twice from the same random state, with and without its emboli: the
    same anatomy, contrast, noise and mimics, so the two differ by the clots alone (and the
    unopacified arteries beyond them)."""
    state = rng.bit_generator.state
    with_emboli, _ = render_phantom(shape, params, rng)
    rng.bit_generator.state = state
    without, _ = render_phantom(shape, dataclasses.replace(params, emboli=[]), rng)
    return with_emboli, without


def write_phantom(
    path, shape, params: PhantomParams, rng: np.random.Generator, *, offset: int = 0
) -> np.ndarray:
    """Stream a study to an open binary file as a ``.npy`` (stored value = HU + ``offset``);
    return the indices of the slices that contain embolus voxels."""
    renderer = PhantomRenderer(shape, params, rng)
    header = {"descr": np.dtype(np.int16).str, "fortran_order": False, "shape": tuple(shape)}
    with open(path, "wb") as fh, ThreadPoolExecutor(max_workers=1) as writer:
        np.lib.format.write_array_header_1_0(fh, header)
        pending = None
        for _, block in renderer.blocks():
            if offset:
                block += np.int16(offset)
            if pending is not None:
                pending.result()  # the other buffer is free again once its write is done
            # Writing releases the GIL: the next block renders while this one goes to disk.
            pending = writer.submit(fh.write, block.data)
        if pending is not None:
            pending.result()
    return np.array(sorted(renderer.embolus_slices), dtype=int)
