"""Phantom findings (VinDr categories) and their BI-RADS assessment.

A finding lives in a breast's tissue map (normalised ``(u, v)`` coordinates, see
:mod:`.anatomy`), so it appears consistently in the CC and the MLO view of that breast; its
bounding box in each image is the image of its extent points under that view's warp.

Lesion sizes are given in units of the breast depth (chest wall → nipple), so a mass of
radius 0.06 is 12% of the breast depth across in every image, whatever the resolution:
large enough to see at 256 × 192.

BI-RADS follows the lexicon: round/oval circumscribed masses and grouped fine
calcifications are probably benign (3), other masses, pleomorphic calcifications and
architectural distortion are suspicious (4), spiculated masses and fine-linear branching
calcifications are highly suggestive of malignancy (5); asymmetries are 3. Breasts without a
boxed finding are BI-RADS 1, or 2 when they carry benign (coarse, scattered) calcifications,
which — as in VinDr-Mammo — get no box. A little label noise moves some assessments by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .anatomy import U_RANGE, V_RANGE, ViewGeometry, superellipse_radius

#: VinDr-Mammo finding categories the phantom makes.
CATEGORIES = (
    "Mass",
    "Suspicious Calcification",
    "Architectural Distortion",
    "Focal Asymmetry",
    "Asymmetry",
)
NO_FINDING = "No Finding"

#: Default share of each category among boxed findings.
CATEGORY_WEIGHTS = (0.40, 0.25, 0.10, 0.15, 0.10)
MASS_SHAPES = ("round", "oval", "irregular")
MASS_MARGINS = ("circumscribed", "obscured", "spiculated")
CALC_MORPHOLOGIES = ("fine", "pleomorphic", "linear")


@dataclass
class Finding:
    """One finding in one breast (shared by its CC and MLO views).

    Attributes:
        finding_id: 32-char hex id, the same in both views.
        category: VinDr category (one of :data:`CATEGORIES`).
        u: centre depth (0 chest wall … 1 nipple).
        v: centre across the breast (-1 … 1).
        radius: size in units of breast depth.
        shape: mass shape, else "".
        margin: mass margin, else "".
        morphology: calcification morphology, else "".
        birads_lexicon: assessment the lexicon gives (3–5).
        birads: assessment after label noise (3–5), what the CSV says.
        extent_u: extent points (u) used for bounding boxes.
        extent_v: extent points (v) used for bounding boxes.
    """

    finding_id: str
    category: str
    u: float
    v: float
    radius: float
    shape: str = ""
    margin: str = ""
    morphology: str = ""
    birads_lexicon: int = 3
    birads: int = 3
    extent_u: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    extent_v: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def is_malignant_looking(self) -> bool:
        """BI-RADS ≥ 4 (the usual VinDr cancer proxy)."""
        return self.birads >= 4

    def box(self, geometry: ViewGeometry, laterality: str) -> tuple[float, float, float, float]:
        """Pixel box ``(xmin, ymin, xmax, ymax)`` of this finding in one image as displayed."""
        x, y = geometry.uv_to_image(self.extent_u, self.extent_v)
        w, h = geometry.width, geometry.height
        x0, x1 = float(np.clip(x.min(), 0, w - 1)), float(np.clip(x.max(), 0, w - 1))
        y0, y1 = float(np.clip(y.min(), 0, h - 1)), float(np.clip(y.max(), 0, h - 1))
        if laterality == "R":
            x0, x1 = (w - 1) - x1, (w - 1) - x0
        return x0, y0, x1, y1


def lexicon_birads(category: str, shape: str = "", margin: str = "", morphology: str = "") -> int:
    """The BI-RADS assessment the lexicon suggests for a finding's features.

    Raises:
        ValueError: for an unknown category.
    """
    if category == "Mass":
        if margin == "spiculated":
            return 5
        if shape in ("round", "oval") and margin == "circumscribed":
            return 3
        return 4
    if category == "Suspicious Calcification":
        return {"fine": 3, "pleomorphic": 4, "linear": 5}[morphology]
    if category == "Architectural Distortion":
        return 4
    if category in ("Focal Asymmetry", "Asymmetry"):
        return 3
    raise ValueError(f"unknown finding category {category!r}; expected one of {CATEGORIES}")


def noisy_birads(rng: np.random.Generator, birads: int, noise: float) -> int:
    """With probability ``noise`` move a finding's BI-RADS by one step within 3–5."""
    if rng.random() < noise:
        birads += 1 if (birads == 3 or (birads == 4 and rng.random() < 0.5)) else -1
    return int(np.clip(birads, 3, 5))


def sample_finding(rng: np.random.Generator, category: str, finding_id: str,
                   birads_noise: float) -> Finding:
    """Draw a finding's features and size (its position is set by :func:`place_finding`)."""
    shape = margin = morphology = ""
    if category == "Mass":
        shape = str(rng.choice(MASS_SHAPES, p=(0.3, 0.35, 0.35)))
        margin_p = (0.15, 0.40, 0.45) if shape == "irregular" else (0.55, 0.30, 0.15)
        margin = str(rng.choice(MASS_MARGINS, p=margin_p))
        radius = rng.uniform(0.06, 0.10)
    elif category == "Suspicious Calcification":
        morphology = str(rng.choice(CALC_MORPHOLOGIES, p=(0.4, 0.35, 0.25)))
        radius = rng.uniform(0.035, 0.06)
    elif category == "Architectural Distortion":
        radius = rng.uniform(0.08, 0.13)
    elif category == "Focal Asymmetry":
        radius = rng.uniform(0.08, 0.12)
    elif category == "Asymmetry":
        radius = rng.uniform(0.12, 0.18)
    else:
        raise ValueError(f"unknown finding category {category!r}; expected one of {CATEGORIES}")
    lexicon = lexicon_birads(category, shape, margin, morphology)
    return Finding(finding_id, category, 0.0, 0.0, float(radius), shape, margin, morphology,
                   lexicon, noisy_birads(rng, lexicon, birads_noise))


def place_finding(rng: np.random.Generator, finding: Finding, geometries: list[ViewGeometry],
                  exponent: float, others: list[Finding]) -> bool:
    """Pick a centre inside the breast, clear of the pectoral muscle and other findings,
    visible in every view. Returns False if no place was found (the caller drops it)."""
    for _ in range(60):
        u = rng.uniform(0.22, 0.78)
        v = rng.uniform(-0.6, 0.6)
        if superellipse_radius(np.float32(u), np.float32(v), exponent) > 0.72 - finding.radius:
            continue
        if any(math.hypot(u - o.u, v - o.v) < (finding.radius + o.radius) * 1.6 for o in others):
            continue
        ok = True
        for g in geometries:
            x, y = g.uv_to_image(np.float32(u), np.float32(v))
            margin = finding.radius * g.a * 1.5
            if not (margin < x < g.width - margin and margin < y < g.height - margin):
                ok = False
            elif g.pectoral is not None and bool(g.in_pectoral(x - margin, y - margin)):
                ok = False
        if ok:
            finding.u, finding.v = float(u), float(v)
            return True
    return False


class _Patch:
    """A window of the tissue map around a finding, in isotropic local units.

    ``p``/``q`` are offsets from the finding's centre in units of breast depth along u
    and (scaled by the breast's aspect) along v.
    """

    def __init__(self, size: int, u: float, v: float, half: float, aspect: float):
        self.size, self.aspect = size, aspect
        self.du = (U_RANGE[1] - U_RANGE[0]) / (size - 1)
        self.dv = (V_RANGE[1] - V_RANGE[0]) / (size - 1)
        c0 = (u - U_RANGE[0]) / self.du
        r0 = (v - V_RANGE[0]) / self.dv
        hc, hr = half / self.du, half * aspect / self.dv
        self.cols = slice(max(0, int(c0 - hc)), min(size, int(c0 + hc) + 2))
        self.rows = slice(max(0, int(r0 - hr)), min(size, int(r0 + hr) + 2))
        self.c0, self.r0 = c0 - self.cols.start, r0 - self.rows.start
        cc = np.arange(self.cols.start, self.cols.stop, dtype=np.float32)
        rr = np.arange(self.rows.start, self.rows.stop, dtype=np.float32)
        self.p = (U_RANGE[0] + cc * self.du - u)[None, :]
        self.q = ((V_RANGE[0] + rr * self.dv - v) / aspect)[:, None]
        self.shape = (rr.size, cc.size)

    def to_px(self, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patch pixel (col, row) of local offsets."""
        return self.c0 + np.asarray(p) / self.du, self.r0 + np.asarray(q) * self.aspect / self.dv

    def cell(self) -> float:
        """Size of one map cell in local units (along u)."""
        return self.du

    def draw_lines(self, lines: list[tuple[np.ndarray, np.ndarray]], width: int) -> np.ndarray:
        """Rasterise polylines given in local offsets; returns a float 0–1 patch."""
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (self.shape[1], self.shape[0]), 0)
        draw = ImageDraw.Draw(canvas)
        for p, q in lines:
            cx, ry = self.to_px(p, q)
            draw.line(list(zip(cx.tolist(), ry.tolist())), fill=255, width=width)
        return np.asarray(canvas, dtype=np.float32) / 255.0


def _radius_profile(rng: np.random.Generator, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic coefficients of a lesion outline ``R(φ)/R0 = 1 + Σ a_k cos(kφ + φ_k)``."""
    ks = np.arange(2, 8)
    amps = np.zeros(ks.size)
    if shape == "oval":
        amps[0] = rng.uniform(0.2, 0.32)
    elif shape == "round":
        amps[0] = rng.uniform(0.0, 0.06)
    else:  # irregular / asymmetry outlines
        amps = rng.uniform(0.05, 0.16, size=ks.size) / np.sqrt(ks / 2)
    return amps, rng.uniform(0, 2 * np.pi, size=ks.size)


def _outline(phi: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    ks = np.arange(2, 2 + amps.size)
    return 1.0 + np.sum(amps[:, None, None] * np.cos(ks[:, None, None] * phi[None] + phases[:, None, None]), axis=0)


def _ring(radius: float, amps: np.ndarray, phases: np.ndarray, n: int = 48):
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ks = np.arange(2, 2 + amps.size)
    r = radius * (1.0 + np.sum(amps[:, None] * np.cos(ks[:, None] * phi[None] + phases[:, None]), axis=0))
    return r * np.cos(phi), r * np.sin(phi)


def _spicules(rng: np.random.Generator, count: int, start: float, length: tuple[float, float]):
    lines = []
    for angle in rng.uniform(0, 2 * np.pi, size=count):
        reach = rng.uniform(*length)
        t = np.linspace(start, reach, 6)
        bend = np.cumsum(rng.normal(0, 0.04, size=t.size))
        lines.append((t * np.cos(angle + bend), t * np.sin(angle + bend)))
    return lines


def render_finding(rng: np.random.Generator, finding: Finding, lesion_map: np.ndarray,
                   texture: np.ndarray, aspect: float) -> None:
    """Add a finding's attenuation to ``lesion_map`` (in place) and set its extent points.

    Args:
        rng: random generator for the finding's fine structure.
        finding: the finding (placed).
        lesion_map: the breast's lesion map (square, tissue-map sized).
        texture: the breast's unit-variance power-law field (same size), for asymmetries.
        aspect: breast depth / half-height on CC (to keep lesions round in images).
    """
    size = lesion_map.shape[0]
    R = finding.radius
    half = R * (2.8 if finding.category in ("Mass", "Architectural Distortion") else 1.8)
    patch = _Patch(size, finding.u, finding.v, half, aspect)
    rho = np.sqrt(patch.p ** 2 + patch.q ** 2)
    phi = np.arctan2(patch.q, patch.p)
    line_width = max(1, round(size / 500))
    if finding.category == "Mass":
        amps, phases = _radius_profile(rng, finding.shape)
        boundary = R * _outline(phi, amps, phases)
        edge = {"circumscribed": 0.05, "obscured": 0.22, "spiculated": 0.08}[finding.margin] * R
        edge = max(edge, 0.6 * patch.cell())
        core = 1.0 / (1.0 + np.exp(-(boundary - rho) / edge))
        dome = 0.7 + 0.3 * np.sqrt(np.clip(1.0 - (rho / boundary) ** 2, 0, 1))
        value = rng.uniform(0.5, 0.65) * core * dome
        ex, ey = _ring(R * 1.08, amps, phases)
        if finding.margin == "obscured":
            # Obscured: the edge fades into the surrounding tissue pattern.
            value *= np.clip(1.0 + 0.3 * texture[patch.rows, patch.cols], 0.5, 1.5)
        if finding.margin == "spiculated":
            spicules = _spicules(rng, int(rng.integers(12, 22)), 0.7 * R, (1.6 * R, 2.6 * R))
            value = value + 0.32 * ndimage.gaussian_filter(patch.draw_lines(spicules, line_width), 0.6)
            tips = np.array([(p[-1], q[-1]) for p, q in spicules])
            ex = np.concatenate([ex, 0.6 * tips[:, 0]])
            ey = np.concatenate([ey, 0.6 * tips[:, 1]])
    elif finding.category == "Suspicious Calcification":
        value, ex, ey = _calcification_cluster(rng, finding, patch)
    elif finding.category == "Architectural Distortion":
        spicules = _spicules(rng, int(rng.integers(14, 26)), 0.08 * R, (0.55 * R, 1.0 * R))
        lines = ndimage.gaussian_filter(patch.draw_lines(spicules, max(2, round(size / 320))), 0.7)
        value = 0.45 * lines + 0.18 * np.exp(-((rho / (0.25 * R)) ** 2))
        tips = np.array([(p[-1], q[-1]) for p, q in spicules])
        ex, ey = 0.95 * tips[:, 0], 0.95 * tips[:, 1]
    else:  # Focal Asymmetry / Asymmetry: a patch of extra glandular-looking density
        amps, phases = _radius_profile(rng, "irregular")
        boundary = R * _outline(phi, amps, phases)
        envelope = np.exp(-((rho / boundary) ** 4))
        tex = texture[patch.rows, patch.cols]
        amplitude = 0.34 if finding.category == "Focal Asymmetry" else 0.26
        value = amplitude * envelope * np.clip(0.75 + 0.3 * tex, 0.3, 1.3)
        ex, ey = _ring(R * 1.05, amps, phases)
    lesion_map[patch.rows, patch.cols] += value.astype(np.float32)
    finding.extent_u = (finding.u + np.asarray(ex)).astype(np.float32)
    finding.extent_v = (finding.v + np.asarray(ey) * aspect).astype(np.float32)


def _calcification_cluster(rng: np.random.Generator, finding: Finding, patch: _Patch):
    """Bright dots: fine (small, round, grouped), pleomorphic (varied sizes), linear (along
    short branching lines)."""
    R = finding.radius
    if finding.morphology == "linear":
        points = []
        for _ in range(int(rng.integers(2, 5))):
            angle = rng.uniform(0, 2 * np.pi)
            start = rng.normal(0, 0.25 * R, size=2)
            t = np.sort(rng.uniform(0, 1.6 * R, size=int(rng.integers(8, 14))))
            points.append(np.stack([start[0] + t * np.cos(angle) + rng.normal(0, 0.04 * R, t.size),
                                    start[1] + t * np.sin(angle) + rng.normal(0, 0.04 * R, t.size)], 1))
        pts = np.concatenate(points) - np.concatenate(points).mean(0)
    else:
        n = int(rng.integers(25, 45)) if finding.morphology == "fine" else int(rng.integers(20, 36))
        pts = rng.normal(0, 0.45 * R, size=(n, 2))
    pts = pts[np.hypot(pts[:, 0], pts[:, 1]) < 1.3 * R]
    if len(pts) < 5:  # keep the cluster a cluster
        pts = rng.normal(0, 0.35 * R, size=(8, 2))
    cx, ry = patch.to_px(pts[:, 0], pts[:, 1])
    sigma = max(0.9, patch.size / 800)
    value = np.zeros(patch.shape, np.float32)
    for scale in ((1.0,) if finding.morphology == "fine" else (0.8, 1.6)):
        deltas = np.zeros(patch.shape, np.float32)
        pick = rng.random(len(pts)) < (1.0 if scale <= 1.0 else 0.45)
        ci = np.clip(np.round(cx[pick]).astype(int), 0, patch.shape[1] - 1)
        ri = np.clip(np.round(ry[pick]).astype(int), 0, patch.shape[0] - 1)
        np.add.at(deltas, (ri, ci), rng.uniform(1.3, 1.9, size=ci.size).astype(np.float32))
        s = sigma * scale
        value = np.maximum(value, ndimage.gaussian_filter(deltas, s) * (2 * np.pi * s * s))
    pad = 3 * sigma * patch.cell()
    ex = np.concatenate([pts[:, 0] - pad, pts[:, 0] + pad])
    ey = np.concatenate([pts[:, 1] - pad, pts[:, 1] + pad])
    return value, ex, ey


def render_benign_calcifications(rng: np.random.Generator, lesion_map: np.ndarray,
                                 exponent: float) -> int:
    """Scattered coarse round calcifications (BI-RADS 2, not boxed). Returns their count."""
    size = lesion_map.shape[0]
    count = int(rng.integers(3, 9))
    deltas = np.zeros_like(lesion_map)
    placed = 0
    while placed < count:
        u, v = rng.uniform(0.15, 0.9), rng.uniform(-0.8, 0.8)
        if superellipse_radius(np.float32(u), np.float32(v), exponent) > 0.85:
            continue
        col = int((u - U_RANGE[0]) / (U_RANGE[1] - U_RANGE[0]) * (size - 1))
        row = int((v - V_RANGE[0]) / (V_RANGE[1] - V_RANGE[0]) * (size - 1))
        deltas[row, col] += rng.uniform(1.0, 1.4)
        placed += 1
    sigma = max(1.4, size / 450)
    lesion_map += ndimage.gaussian_filter(deltas, sigma) * (2 * np.pi * sigma * sigma)
    return count
