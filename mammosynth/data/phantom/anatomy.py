"""Phantom anatomy: breast outline, tissue maps, pectoral muscle, curvilinear structures, noise.

Everything a patient *is* lives in a **tissue map**: a 2-D array over normalised breast
coordinates ``(u, v)`` where ``u`` is the depth from the chest wall (0) to the nipple (1) and
``v`` runs across the breast (-1 … 1). Both views of a breast (CC and MLO) are affine warps of
the same map into image space, and the two breasts of a patient share one base map (they are
mirror images because every image is rendered in the canonical frame, chest wall on the left)
plus their own perturbation. That shared map is the patient's identity.

All functions here are pure given a ``numpy.random.Generator``; images are rendered in the
canonical frame (chest wall at x = 0) and mirrored for right breasts by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Extent of the tissue map in normalised coordinates. ``u < 0`` is tissue "behind" the
#: chest-wall line that MLO views show towards the axilla.
U_RANGE = (-0.6, 1.1)
V_RANGE = (-1.1, 1.1)

#: Attenuation of fat and the extra attenuation of fully glandular tissue (arbitrary units).
FAT_ATTENUATION = 0.28
GLAND_CONTRAST = 0.44


def map_size_for_height(height: int) -> int:
    """Side of the square tissue map used for images of ``height`` rows.

    About 0.6 map cells per image row keeps one map cell at ~1.5 image pixels, capped so
    that VinDr-size images (3518 rows) stay affordable.
    """
    return int(np.clip(round(0.6 * height / 64) * 64, 192, 2048))


def power_law_noise(rng: np.random.Generator, size: int, beta: float = 3.0,
                    synth_size: int = 1024) -> np.ndarray:
    """A zero-mean, unit-variance random field with power spectrum ``P(f) ∝ 1 / f**beta``.

    The field is synthesised at ``min(size, synth_size)`` by FFT filtering of white noise
    and upsampled (cubic) to ``size``: with beta ≈ 3, as measured for mammographic
    parenchyma, almost all power is at low frequencies, so nothing is lost.

    Args:
        rng: random generator.
        size: side of the returned square field.
        beta: spectral exponent.
        synth_size: largest side synthesised by FFT.

    Returns:
        ``float32`` array ``(size, size)``.
    """
    n = min(size, synth_size)
    # The FFT of white noise is complex white noise: draw the half spectrum directly.
    spectrum = (rng.standard_normal((n, n // 2 + 1), dtype=np.float32)
                + 1j * rng.standard_normal((n, n // 2 + 1), dtype=np.float32))
    fy = np.fft.fftfreq(n).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(n).astype(np.float32)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amplitude = f ** np.float32(-beta / 2.0)
    amplitude[0, 0] = 0.0
    field = np.fft.irfft2(spectrum * amplitude, s=(n, n))
    if n != size:
        field = ndimage.zoom(field, size / n, order=1, mode="grid-wrap", grid_mode=True)
    field = field.astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-8
    return field


def map_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ``(u, v)`` coordinates of every cell of a ``size × size`` tissue map."""
    u = np.linspace(U_RANGE[0], U_RANGE[1], size, dtype=np.float32)[None, :]
    v = np.linspace(V_RANGE[0], V_RANGE[1], size, dtype=np.float32)[:, None]
    return u, v


def uv_to_map_index(u: np.ndarray, v: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, column) index into a tissue map for normalised coordinates."""
    col = (u - U_RANGE[0]) * ((size - 1) / (U_RANGE[1] - U_RANGE[0]))
    row = (v - V_RANGE[0]) * ((size - 1) / (V_RANGE[1] - V_RANGE[0]))
    return row, col


def superellipse_radius(u: np.ndarray, v: np.ndarray, exponent: float) -> np.ndarray:
    """Normalised radius: 0 at the chest-wall centre, 1 on the skin; ``u < 0`` is a band."""
    uu = np.maximum(u, 0.0)
    return (uu ** exponent + np.abs(v) ** exponent) ** (1.0 / exponent)


@dataclass(frozen=True)
class PatientShape:
    """Size and shape of a patient's breasts (shared by both breasts, with perturbation).

    Attributes:
        depth: breast depth (chest wall → nipple) as a fraction of the image width.
        half_height: half the breast height on CC as a fraction of the image height.
        exponent: superellipse exponent of the outline (2 = ellipse; larger = fuller).
        pectoral_width: pectoral muscle width on MLO at the top edge (fraction of width).
        pectoral_height: pectoral muscle height on the chest-wall edge (fraction of height).
        mlo_angle: rotation of the nipple axis on MLO (radians, nipple pointing down-right).
    """

    depth: float
    half_height: float
    exponent: float
    pectoral_width: float
    pectoral_height: float
    mlo_angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> PatientShape:
        """A random patient: small to large breasts, round to full outlines."""
        size = rng.uniform(0.0, 1.0)
        return cls(
            depth=float(0.50 + 0.30 * size + rng.normal(0, 0.02)),
            half_height=float(0.30 + 0.11 * size + rng.normal(0, 0.015)),
            exponent=float(rng.uniform(1.8, 2.6)),
            pectoral_width=float(rng.uniform(0.22, 0.40)),
            pectoral_height=float(rng.uniform(0.35, 0.60)),
            mlo_angle=float(rng.uniform(0.18, 0.38)),
        )

    def perturbed(self, rng: np.random.Generator, scale: float = 1.0) -> PatientShape:
        """The contralateral breast: the same shape with a few percent of difference."""
        return PatientShape(
            depth=float(self.depth * (1 + rng.normal(0, 0.025 * scale))),
            half_height=float(self.half_height * (1 + rng.normal(0, 0.025 * scale))),
            exponent=float(self.exponent + rng.normal(0, 0.05 * scale)),
            pectoral_width=float(self.pectoral_width * (1 + rng.normal(0, 0.04 * scale))),
            pectoral_height=float(self.pectoral_height * (1 + rng.normal(0, 0.04 * scale))),
            mlo_angle=float(self.mlo_angle + rng.normal(0, 0.02 * scale)),
        )


@dataclass(frozen=True)
class ViewGeometry:
    """Where a breast lies in one image (canonical frame, chest wall at x = 0).

    A pixel ``(x, y)`` maps to tissue-map coordinates by rotating ``(x, y - cy)`` by
    ``angle`` and dividing by ``(a, b)``: ``u = x_r / a``, ``v = y_r / b``.

    Attributes:
        height: image rows.
        width: image columns.
        cy: row of the nipple axis at the chest wall.
        a: breast depth in pixels.
        b: breast half-height in pixels.
        angle: rotation of the nipple axis (0 on CC).
        exponent: superellipse exponent of the outline.
        pectoral: (width, height) of the pectoral triangle in pixels, or ``None`` (CC).
    """

    height: int
    width: int
    cy: float
    a: float
    b: float
    angle: float
    exponent: float
    pectoral: tuple[float, float] | None

    def image_to_uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised tissue coordinates of image points."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dy = y - self.cy
        return (x * c + dy * s) / self.a, (-x * s + dy * c) / self.b

    def uv_to_image(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image points (canonical frame) of normalised tissue coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        xr, yr = np.asarray(u) * self.a, np.asarray(v) * self.b
        return xr * c - yr * s, self.cy + xr * s + yr * c

    @property
    def nipple(self) -> tuple[float, float]:
        """Image position (x, y) of the nipple tip."""
        x, y = self.uv_to_image(np.float32(1.0), np.float32(0.0))
        return float(x), float(y)

    def in_pectoral(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where an image point lies in the pectoral muscle (always False on CC)."""
        if self.pectoral is None:
            return np.zeros(np.broadcast(x, y).shape, dtype=bool)
        pw, ph = self.pectoral
        return (np.asarray(x) / pw) + (np.asarray(y) / ph) ** 1.15 < 1.0


def view_geometry(shape: PatientShape, view: str, height: int, width: int,
                  rng: np.random.Generator) -> ViewGeometry:
    """Place a breast in a CC or MLO image with a little positioning variation.

    Args:
        shape: the breast's shape.
        view: ``"CC"`` or ``"MLO"``.
        height: image rows.
        width: image columns.
        rng: random generator (positioning jitter of this acquisition).
    """
    if view not in ("CC", "MLO"):
        raise ValueError(f"view must be 'CC' or 'MLO', got {view!r}")
    a = shape.depth * width * (1 + rng.normal(0, 0.02))
    if view == "CC":
        b = shape.half_height * height * (1 + rng.normal(0, 0.02))
        b = min(b, 0.46 * height)
        cy = height * (0.5 + rng.normal(0, 0.02))
        cy = float(np.clip(cy, b + 0.02 * height, height - b - 0.02 * height))
        return ViewGeometry(height, width, cy, float(min(a, 0.9 * width)), float(b), 0.0,
                            shape.exponent, None)
    angle = shape.mlo_angle + rng.normal(0, 0.02)
    b = shape.half_height * height * 1.12 * (1 + rng.normal(0, 0.02))
    a = min(a * 0.97, 0.88 * width / math.cos(angle))
    # Lowest point of the rotated ellipse must stay in the image.
    below = math.sqrt((a * math.sin(angle)) ** 2 + (b * math.cos(angle)) ** 2)
    cy = height * (0.42 + rng.normal(0, 0.02))
    if cy + below > 0.97 * height:
        scale = (0.97 * height - cy) / below
        a, b = a * scale, b * scale
    pectoral = (shape.pectoral_width * width * (1 + rng.normal(0, 0.03)),
                shape.pectoral_height * height * (1 + rng.normal(0, 0.03)))
    return ViewGeometry(height, width, float(cy), float(a), float(b), float(angle),
                        shape.exponent, pectoral)


@dataclass
class BreastMaps:
    """Tissue maps of one breast (square arrays over :data:`U_RANGE` × :data:`V_RANGE`).

    Attributes:
        gland: fibroglandular fraction 0–1 per cell.
        structure: curvilinear structures (vessels, Cooper's ligaments), additive.
        lesion: added attenuation of findings (masses, asymmetries, distortions, calcs).
        density_fraction: mean of ``gland`` over the breast (``u ≥ 0, r ≤ 1``).
        exponent: superellipse exponent of the outline.
    """

    gland: np.ndarray
    structure: np.ndarray
    lesion: np.ndarray
    density_fraction: float
    exponent: float

    def attenuation(self) -> np.ndarray:
        """The per-cell attenuation of the tissue (before thickness and noise)."""
        return (FAT_ATTENUATION + GLAND_CONTRAST * self.gland + self.structure + self.lesion)

    def projected(self, skin_cells: float) -> np.ndarray:
        """What a view samples: attenuation × compressed thickness + the skin line, 0 in air.

        Everything here depends on ``(u, v)`` only, so it is computed once per breast in
        map space and each view is a single affine warp of it.

        Args:
            skin_cells: skin thickness in map cells.
        """
        size = self.gland.shape[0]
        u, v = map_grid(size)
        r = superellipse_radius(u, v, self.exponent)
        # Compressed thickness: flat in the middle, rounding off over the last ~12% to the skin.
        edge = np.clip((1.0 - r) / 0.12, 0.0, 1.0)
        thickness = np.sqrt(1.0 - (1.0 - edge) ** 2)
        cell = (U_RANGE[1] - U_RANGE[0]) / (size - 1)
        depth_cells = (1.0 - r) / cell
        skin = 0.10 * np.exp(-((depth_cells / skin_cells - 1.0) ** 2)) * (r <= 1.0)
        return (self.attenuation() * thickness + skin).astype(np.float32)


def gland_envelope(size: int, exponent: float) -> np.ndarray:
    """Where glandular tissue tends to be: a cone behind the nipple, none under the skin."""
    u, v = map_grid(size)
    r = superellipse_radius(u, v, exponent)
    along = np.clip(u / 0.2, 0, 1) * np.clip((1.02 - u) / 0.35, 0, 1)
    across = np.exp(-((v / (0.45 + 0.25 * np.clip(u, 0, 1))) ** 2))
    under_skin = np.clip((0.97 - r) / 0.18, 0, 1)
    return (along * across * under_skin).astype(np.float32)


def breast_region(size: int, exponent: float) -> np.ndarray:
    """Boolean map of cells inside the breast (``u ≥ 0`` and radius ≤ 1)."""
    u, v = map_grid(size)
    return (superellipse_radius(u, v, exponent) <= 1.0) & (u >= 0)


def gland_map(score: np.ndarray, region: np.ndarray, target_fraction: float,
              softness: float = 0.6) -> tuple[np.ndarray, float]:
    """Turn a tissue score into a soft gland map whose mean over ``region`` hits a target.

    Args:
        score: envelope + texture per cell.
        region: cells inside the breast.
        target_fraction: wanted fibroglandular fraction (0–1).
        softness: width of the soft threshold in units of the score's std.

    Returns:
        The gland map (0–1) and its achieved mean over ``region``.
    """
    inside = score[region]
    std = float(inside.std()) + 1e-6
    width = softness * std
    lo, hi = float(inside.min()) - 4 * width, float(inside.max()) + 4 * width
    sub = inside[:: max(1, inside.size // 20000)]
    for _ in range(30):  # bisection on the threshold: mean(sigmoid) is monotone in it
        mid = 0.5 * (lo + hi)
        frac = float(np.mean(1.0 / (1.0 + np.exp(-(sub - mid) / width))))
        if frac > target_fraction:
            lo = mid
        else:
            hi = mid
    threshold = 0.5 * (lo + hi)
    gland = (1.0 / (1.0 + np.exp(-(score - threshold) / width))).astype(np.float32)
    # Outside the breast the map still needs sensible values for the MLO band (u < 0).
    return gland, float(gland[region].mean())


def curvilinear_structures(rng: np.random.Generator, size: int,
                           vessels: int, ligaments: int) -> np.ndarray:
    """Vessels (long wiggly lines from the chest wall towards the nipple) and Cooper's
    ligaments (short arcs in the subcutaneous fat), rasterised into a tissue map."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    to_px = lambda u, v: (  # noqa: E731 - tiny local helper
        float((u - U_RANGE[0]) / (U_RANGE[1] - U_RANGE[0]) * (size - 1)),
        float((v - V_RANGE[0]) / (V_RANGE[1] - V_RANGE[0]) * (size - 1)),
    )
    line_width = max(1, size // 400)
    for _ in range(vessels):
        u, v = -0.1, rng.uniform(-0.7, 0.7)
        heading = rng.normal(0, 0.3) - 0.6 * v
        points = [to_px(u, v)]
        steps = int(rng.integers(25, 45))
        for _ in range(steps):
            heading += rng.normal(0, 0.18) - 0.05 * v
            u += 0.025 * math.cos(heading)
            v += 0.025 * math.sin(heading) * 1.3
            points.append(to_px(u, v))
        draw.line(points, fill=int(rng.integers(110, 190)), width=line_width + 1)
    for _ in range(ligaments):
        centre_angle = rng.uniform(-1.3, 1.3)
        radius = rng.uniform(0.72, 0.95)
        span = rng.uniform(0.08, 0.25)
        angles = np.linspace(centre_angle - span, centre_angle + span, 8)
        wobble = rng.normal(0, 0.015, size=angles.size).cumsum()
        points = [to_px((radius + w) * math.cos(t), (radius + w) * math.sin(t) * 1.05)
                  for t, w in zip(angles, wobble)]
        draw.line(points, fill=int(rng.integers(70, 140)), width=line_width)
    lines = np.asarray(canvas, dtype=np.float32) / 255.0
    return ndimage.gaussian_filter(lines, sigma=max(0.6, size / 900))


def _breast_bbox(geometry: ViewGeometry) -> tuple[int, int, int, int]:
    """Rows and columns ``(y0, y1, x0, x1)`` that contain the breast (outline + MLO band)."""
    t = np.linspace(-np.pi / 2, np.pi / 2, 91)
    p = geometry.exponent
    u = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** (2 / p) * 1.06
    v = np.sign(np.sin(t)) * np.abs(np.sin(t)) ** (2 / p) * 1.03
    u = np.concatenate([u, [U_RANGE[0], U_RANGE[0]]])
    v = np.concatenate([v, [-1.03, 1.03]])
    x, y = geometry.uv_to_image(u, v)
    h, w = geometry.height, geometry.width
    return (int(np.clip(np.floor(y.min()) - 2, 0, h)), int(np.clip(np.ceil(y.max()) + 3, 0, h)),
            0, int(np.clip(np.ceil(x.max()) + 3, 0, w)))


def render_view(projected: np.ndarray, geometry: ViewGeometry, rng: np.random.Generator,
                noise_photons: float, electronic_noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Render one view: warp the breast's projected map into the image, add the nipple,
    the pectoral muscle (MLO) and Poisson–Gaussian detector noise.

    Args:
        projected: :meth:`BreastMaps.projected` of the breast.
        geometry: where the breast lies in this image.
        rng: random generator for the detector noise.
        noise_photons: mean photon count behind fat (quantum noise ∝ 1/sqrt).
        electronic_noise: standard deviation of the additive electronic noise.

    Returns:
        ``(image, breast_mask)``: float32 attenuation-like display values (≈ 0–1.3, 0 is
        air) in the canonical frame, and the boolean mask of breast pixels.
    """
    h, w = geometry.height, geometry.width
    size = projected.shape[0]
    c, s = math.cos(geometry.angle), math.sin(geometry.angle)
    ku = (size - 1) / (U_RANGE[1] - U_RANGE[0])
    kv = (size - 1) / (V_RANGE[1] - V_RANGE[0])
    a, b, cy = geometry.a, geometry.b, geometry.cy
    # (row, col) in the map of output pixel (y, x): the inverse of ViewGeometry.uv_to_image.
    matrix = np.array([[kv * c / b, -kv * s / b], [ku * s / a, ku * c / a]])
    offset = np.array([kv * (-c * cy / b - V_RANGE[0]), ku * (-s * cy / a - U_RANGE[0])])
    # Only the breast's bounding box needs warping; the rest is air.
    y0, y1, x0, x1 = _breast_bbox(geometry)
    image = np.zeros((h, w), np.float32)
    image[y0:y1, x0:x1] = ndimage.affine_transform(
        projected, matrix, offset=offset + matrix @ np.array([y0, x0]),
        output_shape=(y1 - y0, x1 - x0), order=1, mode="constant", cval=0.0, prefilter=False)
    mask = image > 0.012
    # Nipple: a small denser bump at the tip.
    nx, ny = geometry.nipple
    nr = 0.035 * b
    y0, y1 = max(0, int(ny - nr) - 1), min(h, int(ny + nr) + 2)
    x0, x1 = max(0, int(nx - nr) - 1), min(w, int(nx + 1.3 * nr) + 2)
    if y1 > y0 and x1 > x0:
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        nipple = ((xx - nx - 0.3 * nr) ** 2 + (yy - ny) ** 2) <= nr * nr
        block = image[y0:y1, x0:x1]
        block[nipple & ~mask[y0:y1, x0:x1]] = 0.30
        mask[y0:y1, x0:x1] |= nipple
    if geometry.pectoral is not None:
        pw, ph = geometry.pectoral
        y1, x1 = min(h, int(ph) + 2), min(w, int(pw) + 2)
        yy = np.arange(y1, dtype=np.float32)[:, None]
        xx = np.arange(x1, dtype=np.float32)[None, :]
        signed = 1.0 - (xx / pw + (yy / ph) ** 1.15)
        muscle = np.clip(signed * (min(pw, ph) / 3.0), 0.0, 1.0)
        block = image[:y1, :x1]
        muscle_value = 0.60 + 0.12 * block
        image[:y1, :x1] = block * (1.0 - muscle) + muscle_value * muscle
        mask[:y1, :x1] |= muscle > 0
    # Poisson–Gaussian detector noise in the log (attenuation) domain: quantum noise grows
    # where fewer photons get through (dense tissue), electronic noise is constant.
    sigma = np.exp(np.float32(2.2) * image)
    sigma *= np.float32(1.0 / noise_photons)
    sigma += np.float32(electronic_noise ** 2)
    np.sqrt(sigma, out=sigma)
    sigma *= rng.standard_normal((h, w), dtype=np.float32)
    image += sigma
    np.maximum(image, 0.0, out=image)
    return image, mask
