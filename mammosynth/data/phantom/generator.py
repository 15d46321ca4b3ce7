"""Generate a phantom dataset in the exact VinDr-Mammo layout (DESIGN §3, §4).

One study = one patient = four images (L-CC, L-MLO, R-CC, R-MLO). Every study draws its
randomness from ``numpy.random.default_rng([seed, study_index])``, so a dataset is the same
byte for byte whatever the number of worker processes, and study *k* of a 1,000-study set
is study *k* of a 10-study set with the same seed.

Layout written under ``out``::

    images/<study_id>/<image_id>.dicom
    breast-level_annotations.csv
    finding_annotations.csv
    metadata.csv
    phantom_truth.csv        everything the generator knows (not part of VinDr)
"""

from __future__ import annotations

import csv
import datetime as _dt
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import anatomy, findings
from .dicom_writer import VENDORS, ImageHeader, Vendor, to_stored, voi_window, write_mg_dicom

logger = logging.getLogger(__name__)

#: VinDr-Mammo-like density prevalence (A, B, C, D).
DEFAULT_DENSITY_PREVALENCE = (0.01, 0.10, 0.76, 0.13)
DENSITY_LABELS = ("A", "B", "C", "D")
#: Fibroglandular fraction ranges drawn for each category and the cut-offs that label a
#: measured fraction (ACR quartiles: <25% A, 25–50% B, 50–75% C, >75% D).
DENSITY_TARGETS = ((0.06, 0.21), (0.29, 0.46), (0.54, 0.71), (0.79, 0.92))
DENSITY_CUTS = (0.25, 0.50, 0.75)
#: Width / height of VinDr-Mammo images (3518 × 2800).
ASPECT = 2800 / 3518

BREAST_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position",
                  "height", "width", "breast_birads", "breast_density", "split"]
FINDING_COLUMNS = BREAST_COLUMNS[:-1] + ["finding_categories", "finding_birads",
                                         "xmin", "ymin", "xmax", "ymax", "split"]
METADATA_COLUMNS = [
    "SOP Instance UID", "Series Instance UID", "Study Instance UID", "Modality",
    "Presentation Intent Type", "Manufacturer", "Manufacturer's Model Name", "Patient's Age",
    "Patient's Sex", "View Position", "Image Laterality", "Photometric Interpretation",
    "Rows", "Columns", "Bits Allocated", "Bits Stored", "High Bit", "Pixel Representation",
    "Imager Pixel Spacing", "Pixel Spacing", "Rescale Intercept", "Rescale Slope",
    "Window Center", "Window Width", "VOI LUT Function", "Presentation LUT Shape",
    "Transfer Syntax UID",
]
TRUTH_COLUMNS = [
    "study_index", "study_id", "series_id", "image_id", "laterality", "view_position",
    "height", "width", "split", "patient_number", "age", "manufacturer", "model",
    "photometric", "bits_stored", "voi", "pixel_spacing", "transfer_syntax",
    "breast_depth", "breast_half_height", "outline_exponent", "mlo_angle",
    "pectoral_width", "pectoral_height", "view_cy", "view_a", "view_b", "view_angle",
    "density_target", "density_fraction", "breast_density", "breast_birads", "cancer",
    "benign_calcifications", "n_findings", "finding_id", "finding_category", "mass_shape",
    "mass_margin", "calc_morphology", "finding_radius", "finding_u", "finding_v",
    "finding_birads_lexicon", "finding_birads", "xmin", "ymin", "xmax", "ymax",
]
VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
INSTITUTIONS = ("Phantom General Hospital", "Mammosynth Screening Centre",
                "Procedural Breast Clinic", "Synthetic Imaging Institute")


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. The config is the recipe: same config → same bytes.

    Attributes:
        studies: number of studies (patients, 4 images each).
        seed: master seed.
        height: image rows; columns are ``round(height × 2800/3518)`` like VinDr-Mammo.
        density_prevalence: share of density A, B, C, D (sums to 1).
        finding_rate: share of breasts with at least one boxed finding.
        second_finding_rate: share of those with a second finding.
        benign_rate: share of finding-free breasts with benign calcifications (BI-RADS 2).
        birads_noise: probability of a one-step BI-RADS label error per finding.
        jpeg2000_fraction: share of files stored JPEG 2000 lossless.
        test_fraction: share of studies in the ``test`` split.
        category_weights: relative frequency of the finding categories
            (:data:`findings.CATEGORIES` order).
    """

    studies: int
    seed: int = 0
    height: int = 1024
    density_prevalence: tuple[float, float, float, float] = DEFAULT_DENSITY_PREVALENCE
    finding_rate: float = 0.4
    second_finding_rate: float = 0.15
    benign_rate: float = 0.3
    birads_noise: float = 0.08
    jpeg2000_fraction: float = 0.1
    test_fraction: float = 0.2
    category_weights: tuple[float, ...] = findings.CATEGORY_WEIGHTS

    def __post_init__(self) -> None:
        if not isinstance(self.studies, int) or self.studies < 1:
            raise ValueError(f"studies must be a positive integer, got {self.studies!r}")
        if not isinstance(self.height, int) or not 128 <= self.height <= 8192:
            raise ValueError(f"height must be an integer between 128 and 8192 pixels, got {self.height!r}")
        p = tuple(float(x) for x in self.density_prevalence)
        if len(p) != 4 or min(p) < 0 or abs(sum(p) - 1.0) > 0.01:
            raise ValueError(
                "density prevalence must be 4 non-negative shares for A,B,C,D that sum to 1, "
                f"got {self.density_prevalence!r}")
        object.__setattr__(self, "density_prevalence", p)
        for name in ("finding_rate", "second_finding_rate", "benign_rate", "birads_noise",
                     "jpeg2000_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        w = tuple(float(x) for x in self.category_weights)
        if len(w) != len(findings.CATEGORIES) or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"category_weights needs {len(findings.CATEGORIES)} non-negative "
                             f"weights for {findings.CATEGORIES}, got {self.category_weights!r}")
        object.__setattr__(self, "category_weights", w)

    @property
    def width(self) -> int:
        return int(round(self.height * ASPECT))


@dataclass
class StudyRows:
    """The CSV rows of one study."""

    breast: list[dict] = field(default_factory=list)
    finding: list[dict] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)


@dataclass
class PhantomSummary:
    """What was written."""

    out: str
    studies: int
    images: int
    seconds: float
    images_per_second: float
    workers: int
    splits: dict[str, int]
    breast_birads: dict[str, int]
    breast_density: dict[str, int]
    findings: dict[str, int]
    vendors: dict[str, int]
    transfer_syntaxes: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def density_label(fraction: float) -> str:
    """ACR density letter of a fibroglandular fraction."""
    return DENSITY_LABELS[int(np.searchsorted(DENSITY_CUTS, fraction, side="right"))]


def _hex(rng: np.random.Generator) -> str:
    return rng.bytes(16).hex()


@dataclass(frozen=True)
class _Study:
    """Who and where: the study's identifiers, vendor, split and patient age."""

    index: int
    study_id: str
    vendor: Vendor
    split: str
    age: int
    study_date: _dt.date
    accession: str
    institution: str


@dataclass(frozen=True)
class _PatientTissue:
    """What both breasts of a patient share: outline, density target and texture maps."""

    shape: anatomy.PatientShape
    target: float
    n: int
    base: np.ndarray
    fine: np.ndarray
    lines: np.ndarray


@dataclass(frozen=True)
class _Breast:
    """One breast: its tissue maps, the geometry of each view and its findings."""

    shape: anatomy.PatientShape
    target: float
    maps: anatomy.BreastMaps
    projected: np.ndarray
    geometries: dict[str, anatomy.ViewGeometry]
    findings: list[findings.Finding]
    benign: int
    birads: int


def generate_study(config: PhantomConfig, index: int, out: Path | None) -> StudyRows:
    """Make one study (4 images), write its DICOM files under ``out`` (if given), and
    return its CSV rows. Pure function of ``(config, index)``."""
    rng = np.random.default_rng([config.seed, index])
    study = _draw_study(config, index, rng)
    # 1. The patient: shape, tissue pattern, curvilinear structures (shared by all views).
    tissue = _draw_patient_tissue(config, rng)
    # 2. Each breast: its own tissue map, and findings placed in it so both views show them.
    breasts = {laterality: _draw_breast(config, tissue, rng) for laterality in ("L", "R")}
    # 3. Render and write the four images.
    rows = StudyRows()
    if out is not None:
        (out / "images" / study.study_id).mkdir(parents=True, exist_ok=True)
    for number, (laterality, view) in enumerate(VIEWS, start=1):
        _add_image(rows, config, study, breasts[laterality], laterality, view, number, rng, out)
    return rows


def _draw_study(config: PhantomConfig, index: int, rng: np.random.Generator) -> _Study:
    study_id = _hex(rng)
    vendor = VENDORS[int(rng.choice(len(VENDORS), p=_normalised([v.weight for v in VENDORS])))]
    split = "test" if rng.random() < config.test_fraction else "training"
    age = int(rng.integers(40, 76))
    study_date = _dt.date(2018, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 4 * 365)))
    accession = f"PA{config.seed % 1000:03d}{index:08d}"
    institution = INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))]
    return _Study(index, study_id, vendor, split, age, study_date, accession, institution)


def _draw_patient_tissue(config: PhantomConfig, rng: np.random.Generator) -> _PatientTissue:
    shape = anatomy.PatientShape.sample(rng)
    category = int(rng.choice(4, p=config.density_prevalence))
    target = float(rng.uniform(*DENSITY_TARGETS[category]))
    n = anatomy.map_size_for_height(config.height)
    base = anatomy.power_law_noise(rng, n, beta=3.0)
    fine = anatomy.power_law_noise(rng, n, beta=2.2)
    lines = 0.13 * anatomy.curvilinear_structures(
        rng, n, vessels=int(rng.integers(4, 9)), ligaments=int(rng.integers(20, 40)))
    return _PatientTissue(shape, target, n, base, fine, lines)


def _draw_breast(config: PhantomConfig, tissue: _PatientTissue, rng: np.random.Generator) -> _Breast:
    h, w, n = config.height, config.width, tissue.n
    b_shape = tissue.shape.perturbed(rng, 0.5)
    own = anatomy.power_law_noise(rng, n, beta=3.0)
    envelope = anatomy.gland_envelope(n, b_shape.exponent)
    score = 2.0 * envelope + 0.95 * tissue.base + 0.25 * own + 0.25 * tissue.fine
    region = anatomy.breast_region(n, b_shape.exponent)
    b_target = float(np.clip(tissue.target + rng.normal(0, 0.015), 0.02, 0.97))
    gland, fraction = anatomy.gland_map(score, region, b_target)
    gland *= np.clip(1.0 + 0.2 * tissue.fine, 0.5, 1.5)  # fine parenchymal texture in dense tissue
    geometries = {view: anatomy.view_geometry(b_shape, view, h, w, rng) for view in ("CC", "MLO")}
    lesion = np.zeros((n, n), np.float32)
    breast_findings = _draw_findings(config, b_shape, geometries, lesion, tissue.base, rng)
    benign = 0
    if not breast_findings and rng.random() < config.benign_rate:
        benign = findings.render_benign_calcifications(rng, lesion, b_shape.exponent)
    birads = max((f.birads for f in breast_findings), default=2 if benign else 1)
    maps = anatomy.BreastMaps(gland, tissue.lines, lesion, fraction, b_shape.exponent)
    skin_cells = max(0.8, max(1.5, 0.004 * h) * n / (1.7 * geometries["CC"].a))
    return _Breast(b_shape, b_target, maps, maps.projected(skin_cells), geometries, breast_findings, benign, birads)


def _draw_findings(config: PhantomConfig, b_shape: anatomy.PatientShape,
                   geometries: dict[str, anatomy.ViewGeometry], lesion: np.ndarray,
                   base: np.ndarray, rng: np.random.Generator) -> list[findings.Finding]:
    """Findings placed in both views and rendered into ``lesion`` (none for most breasts)."""
    placed: list[findings.Finding] = []
    if rng.random() >= config.finding_rate:
        return placed
    count = 1 + int(rng.random() < config.second_finding_rate)
    for _ in range(count):
        cat = findings.CATEGORIES[int(rng.choice(len(findings.CATEGORIES), p=_normalised(config.category_weights)))]
        finding = findings.sample_finding(rng, cat, _hex(rng), config.birads_noise)
        if findings.place_finding(rng, finding, list(geometries.values()), b_shape.exponent, placed):
            aspect = geometries["CC"].a / geometries["CC"].b
            findings.render_finding(rng, finding, lesion, base, aspect)
            placed.append(finding)
    return placed


def _add_image(rows: StudyRows, config: PhantomConfig, study: _Study, breast: _Breast, laterality: str,
               view: str, number: int, rng: np.random.Generator, out: Path | None) -> None:
    """Render one view, write its DICOM file (if ``out``) and append its CSV rows."""
    vendor, geometry = study.vendor, breast.geometries[view]
    image, mask = anatomy.render_view(breast.projected, geometry, rng, vendor.noise_photons,
                                      vendor.electronic_noise)
    if laterality == "R":
        image, mask = image[:, ::-1], mask[:, ::-1]
    stored = np.ascontiguousarray(to_stored(image, vendor))
    mask = np.ascontiguousarray(mask)
    image_id, series_id = _hex(rng), _hex(rng)
    jpeg2000 = bool(rng.random() < config.jpeg2000_fraction)
    header = ImageHeader(image_id, study.study_id, series_id, laterality, view, study.index + 1, study.age,
                         study.study_date, study.accession, study.institution, number, 1)
    syntax = ("1.2.840.10008.1.2.4.90" if jpeg2000 else "1.2.840.10008.1.2.1")
    if out is not None:
        syntax = write_mg_dicom(out / "images" / study.study_id / f"{image_id}.dicom", stored,
                                mask, header, vendor, jpeg2000=jpeg2000)
    density = density_label(breast.maps.density_fraction)
    common = {
        "study_id": study.study_id, "series_id": series_id, "image_id": image_id,
        "laterality": laterality, "view_position": view, "height": config.height, "width": config.width,
        "breast_birads": f"BI-RADS {breast.birads}", "breast_density": f"DENSITY {density}",
    }
    rows.breast.append({**common, "split": study.split})
    rows.metadata.append(_metadata_row(common, stored, mask, vendor, study.age, syntax, header))
    truth_common = _truth_row(study, breast, geometry, common, syntax, density)
    _add_finding_rows(rows, breast.findings, geometry, laterality, common, truth_common, study.split)


def _truth_row(study: _Study, breast: _Breast, geometry: anatomy.ViewGeometry, common: dict, syntax: str,
               density: str) -> dict:
    """The ``phantom_truth.csv`` columns every row of one image shares."""
    vendor, b_shape = study.vendor, breast.shape
    return {
        "study_index": study.index, **{k: common[k] for k in ("study_id", "series_id", "image_id",
                                                              "laterality", "view_position", "height", "width")},
        "split": study.split, "patient_number": study.index + 1, "age": study.age,
        "manufacturer": vendor.manufacturer, "model": vendor.model,
        "photometric": vendor.photometric, "bits_stored": vendor.bits_stored,
        "voi": vendor.voi, "pixel_spacing": vendor.pixel_spacing,
        "transfer_syntax": syntax, "breast_depth": round(b_shape.depth, 4),
        "breast_half_height": round(b_shape.half_height, 4),
        "outline_exponent": round(b_shape.exponent, 4),
        "mlo_angle": round(b_shape.mlo_angle, 4),
        "pectoral_width": round(b_shape.pectoral_width, 4),
        "pectoral_height": round(b_shape.pectoral_height, 4),
        "view_cy": round(geometry.cy, 2), "view_a": round(geometry.a, 2),
        "view_b": round(geometry.b, 2), "view_angle": round(geometry.angle, 4),
        "density_target": round(breast.target, 4),
        "density_fraction": round(breast.maps.density_fraction, 4), "breast_density": density,
        "breast_birads": breast.birads, "cancer": int(breast.birads >= 4),
        "benign_calcifications": breast.benign, "n_findings": len(breast.findings),
    }


def _add_finding_rows(rows: StudyRows, breast_findings: list[findings.Finding], geometry: anatomy.ViewGeometry,
                      laterality: str, common: dict, truth_common: dict, split: str) -> None:
    """One finding row and one truth row per finding, or one "No Finding" row of each."""
    if not breast_findings:
        rows.finding.append({**common, "finding_categories": "['No Finding']",
                             "finding_birads": "", "xmin": "", "ymin": "", "xmax": "",
                             "ymax": "", "split": split})
        rows.truth.append({**truth_common, "finding_category": findings.NO_FINDING})
    for finding in breast_findings:
        box = finding.box(geometry, laterality)
        coords = dict(zip(("xmin", "ymin", "xmax", "ymax"), (f"{c:.2f}" for c in box)))
        rows.finding.append({**common, "finding_categories": f"['{finding.category}']",
                             "finding_birads": f"BI-RADS {finding.birads}", **coords,
                             "split": split})
        rows.truth.append({
            **truth_common, "finding_id": finding.finding_id,
            "finding_category": finding.category, "mass_shape": finding.shape,
            "mass_margin": finding.margin, "calc_morphology": finding.morphology,
            "finding_radius": round(finding.radius, 4), "finding_u": round(finding.u, 4),
            "finding_v": round(finding.v, 4),
            "finding_birads_lexicon": finding.birads_lexicon,
            "finding_birads": finding.birads, **coords,
        })


def _normalised(weights: Sequence[float]) -> np.ndarray:
    p = np.asarray(weights, dtype=np.float64)
    return p / p.sum()


def _metadata_row(common: dict, stored: np.ndarray, mask: np.ndarray, vendor, age: int,
                  syntax: str, header: ImageHeader) -> dict:
    center, width = voi_window(stored, mask, vendor)
    window = vendor.voi != "lut"
    if vendor.voi == "window-sigmoid":
        width *= 0.8
    return {
        "SOP Instance UID": common["image_id"], "Series Instance UID": common["series_id"],
        "Study Instance UID": common["study_id"], "Modality": "MG",
        "Presentation Intent Type": "FOR PRESENTATION", "Manufacturer": vendor.manufacturer,
        "Manufacturer's Model Name": vendor.model, "Patient's Age": f"{age:03d}Y",
        "Patient's Sex": "F", "View Position": header.view,
        "Image Laterality": header.laterality, "Photometric Interpretation": vendor.photometric,
        "Rows": common["height"], "Columns": common["width"], "Bits Allocated": 16,
        "Bits Stored": vendor.bits_stored, "High Bit": vendor.bits_stored - 1,
        "Pixel Representation": 0,
        "Imager Pixel Spacing": f"[{vendor.pixel_spacing}, {vendor.pixel_spacing}]",
        "Pixel Spacing": f"[{vendor.pixel_spacing}, {vendor.pixel_spacing}]",
        "Rescale Intercept": f"{vendor.rescale_intercept:g}",
        "Rescale Slope": f"{vendor.rescale_slope:g}",
        "Window Center": f"{center:g}" if window else "",
        "Window Width": f"{width:g}" if window else "",
        "VOI LUT Function": {"window": "LINEAR", "window-sigmoid": "SIGMOID"}.get(vendor.voi, ""),
        "Presentation LUT Shape": "INVERSE" if vendor.photometric == "MONOCHROME1" else "IDENTITY",
        "Transfer Syntax UID": syntax,
    }


def _study_job(job: tuple[PhantomConfig, int, str]) -> StudyRows:
    config, index, out = job
    return generate_study(config, index, Path(out))


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n",
                                extrasaction="raise", restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


OUTPUT_FILES = ("breast-level_annotations.csv", "finding_annotations.csv", "metadata.csv",
                "phantom_truth.csv")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    existing = [name for name in ("images",) + OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds a dataset ({', '.join(existing)}); choose another --out or "
            "pass --overwrite to replace it")
    if existing:
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def generate_phantom_dataset(
    out: str | os.PathLike,
    studies: int,
    seed: int = 0,
    height: int = 1024,
    workers: int | None = None,
    *,
    density_prevalence: Sequence[float] = DEFAULT_DENSITY_PREVALENCE,
    jpeg2000_fraction: float = 0.1,
    finding_rate: float = 0.4,
    test_fraction: float = 0.2,
    birads_noise: float = 0.08,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PhantomSummary:
    """Generate a phantom dataset in the VinDr-Mammo layout.

    Args:
        out: output folder (created; must not already hold a dataset unless ``overwrite``).
        studies: number of studies (4 images each).
        seed: master seed; the output is a pure function of the arguments except ``workers``.
        height: image rows (default 1024; 3518 gives VinDr-size 3518 × 2800 images).
        workers: processes to use (default: ``os.cpu_count()``).
        density_prevalence: shares of density A, B, C, D.
        jpeg2000_fraction: share of files written JPEG 2000 lossless.
        finding_rate: share of breasts with a boxed finding.
        test_fraction: share of studies in the test split.
        birads_noise: per-finding probability of a one-step BI-RADS label error.
        overwrite: replace an existing dataset in ``out``.
        progress: called as ``progress(done, total)`` after every study.

    Returns:
        A :class:`PhantomSummary` (also written to ``out/phantom_summary.json``).
    """
    import json

    config = PhantomConfig(studies=studies, seed=seed, height=height,
                           density_prevalence=tuple(density_prevalence),
                           finding_rate=finding_rate, jpeg2000_fraction=jpeg2000_fraction,
                           test_fraction=test_fraction, birads_noise=birads_noise)
    workers = int(workers or os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    workers = min(workers, studies)
    out = Path(out)
    _prepare_out(out, overwrite)
    start = time.perf_counter()
    results = _run_studies(config, out, workers, progress, start)
    _write_tables(out, results)
    summary = _summary(out, results, workers, time.perf_counter() - start)
    (out / "phantom_summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _run_studies(config: PhantomConfig, out: Path, workers: int, progress: Callable[[int, int], None] | None,
                 start: float) -> list[StudyRows]:
    """Every study's rows in study order; ``workers`` processes generate and write them."""
    studies = config.studies
    jobs = [(config, i, str(out)) for i in range(studies)]
    results: list[StudyRows] = []
    step = max(1, studies // 20)

    def collect(rows: StudyRows) -> None:
        results.append(rows)
        done = len(results)
        if progress is not None:
            progress(done, studies)
        if done % step == 0 or done == studies:
            logger.info("phantom: %d/%d studies (%.1f images/s)", done, studies,
                        4 * done / max(time.perf_counter() - start, 1e-9))

    if workers == 1:
        for job in jobs:
            collect(_study_job(job))
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            for rows in pool.imap(_study_job, jobs, chunksize=1):
                collect(rows)
    return results


def _write_tables(out: Path, results: list[StudyRows]) -> None:
    for name, columns, attr in (
        ("breast-level_annotations.csv", BREAST_COLUMNS, "breast"),
        ("finding_annotations.csv", FINDING_COLUMNS, "finding"),
        ("metadata.csv", METADATA_COLUMNS, "metadata"),
        ("phantom_truth.csv", TRUTH_COLUMNS, "truth"),
    ):
        _write_csv(out / name, columns, [row for r in results for row in getattr(r, attr)])


def _summary(out: Path, results: list[StudyRows], workers: int, seconds: float) -> PhantomSummary:
    breast_rows = [row for r in results for row in r.breast]
    truth_rows = [row for r in results for row in r.truth]
    return PhantomSummary(
        out=str(out), studies=len(results), images=len(breast_rows), seconds=round(seconds, 2),
        images_per_second=round(len(breast_rows) / max(seconds, 1e-9), 2), workers=workers,
        splits=dict(Counter(r["split"] for r in breast_rows[::4])),
        breast_birads=dict(sorted(Counter(r["breast_birads"] for r in breast_rows[::2]).items())),
        breast_density=dict(sorted(Counter(r["breast_density"] for r in breast_rows[::2]).items())),
        findings=dict(Counter(r["finding_category"] for r in truth_rows
                              if r["view_position"] == "CC")),
        vendors=dict(Counter(r.metadata[0]["Manufacturer"] for r in results)),
        transfer_syntaxes=dict(Counter(r["Transfer Syntax UID"] for r in
                                       (row for res in results for row in res.metadata))),
    )
