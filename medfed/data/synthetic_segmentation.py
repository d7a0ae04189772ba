"""Synthetic scans with a tumour to segment, each site with its own scanner: 2D or 3D.

Nothing here is a real image: every scan and its mask are drawn from the model below,
deterministically from ``seed``, vectorised over the scans (the default 240 scans of
32×32 take about 0.05 s; 240 volumes of 16×32×32 about 0.5 s). The task is segmentation:
``y`` is an int64 mask, 1 where the tumour is and 0 elsewhere, ``(n, H, W)`` for slices or
``(n, D, H, W)`` for volumes (``volume = true``); ``x`` is ``(n, 1, H, W)`` or
``(n, 1, D, H, W)``.

What a scan holds (intensities before the scanner, about 0–1), geometry in units of the
half-side of the scan (so a 64 px scan is a finer view of the same anatomy):

- a textured background (0.05 plus smooth noise) and an organ, a soft-edged ellipse
  (ellipsoid) with half-axes 0.55–0.8 slightly off centre, 0.25–0.4 brighter, with its own
  tissue texture;
- distractors in every scan: 0–3 small bright spots (half-width 0.04–0.07) anywhere in the
  organ, as bright as a tumour, so intensity alone does not segment it;
- in a share ``tumour_rate`` of the scans, one tumour inside the organ: an irregular blob
  (a sphere of radius 0.12–0.3 whose boundary is pushed in and out by smooth noise), whose
  intensity is 0.15–0.45 above the organ with its own texture. The mask is the blob; the
  image shows it with a slightly blurred edge (partial-volume effect).

Each site has its own scanner (:class:`~medfed.data.synthetic_imaging.Scanner`: blur,
contrast curve, gain, offset and noise), ``scanner_shift`` times the nominal ranges:
intensities are not renormalised per site, so a model sees each site's acquisition (a
feature shift; the masks follow the same anatomy everywhere). Site sizes come from
:func:`~medfed.data.partition.skewed_sizes` (``size_skew``); every site has at least
:data:`MIN_SITE_SIZE` scans and holds out a 25 % test set stratified by tumour presence.

How hard it is: an all-background mask scores Dice 0 on every scan with a tumour; an
all-tumour mask about 0.06 for slices and 0.02 for volumes (twice the tumour's share of the
pixels); one intensity threshold for all sites, chosen with hindsight on the test scans,
about 0.45 (the scanners move the intensities differently at each site). The default U-Net
(:mod:`medfed.site.unet`) trained by FedAvg over the 3 default sites reaches 0.55–0.65.

Training settings, chosen on validation data: ``benchmarks/new_task_defaults.py`` splits
each site's *training* scans again (75/25, stratified by tumour presence; the test scans are
not loaded) and trains the default U-Net with FedAvg for 10 rounds. 2D slices (32×32):
SGD 0.05 gives 0.54 (1 local epoch) and 0.56 (2), SGD 0.1 0.39–0.61 and SGD 0.2 collapses
to all background (Dice 0); Adam 0.003 gives 0.49 and 0.53, Adam 0.01 0.00 and 0.58. 3D
volumes (8×16×16): Adam 0.003 with 2 epochs is best (0.43), SGD 0.1–0.2 0.00–0.34. Adam 0.003
with 2 local epochs is never far from the best and never collapsed, in 2D or in 3D, so the
tests use it; learning rates where some runs stay at all background are avoided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.partition import skewed_sizes, train_test_indices
from medfed.data.synthetic_imaging import Scanner
from medfed.errors import DataError

__all__ = [
    "DEFAULT_PER_SITE",
    "MIN_SITE_SIZE",
    "SegmentationOptions",
    "generate_segmentation",
]

MIN_SITE_SIZE = 12
DEFAULT_PER_SITE = 80
MAX_IMAGES = 20_000
MAX_VOXELS = 2**28  # about 1 GiB of float32 scans in all
TEST_FRACTION = 0.25

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SegmentationOptions:
    """The generator's knobs (see the module docstring)."""

    num_sites: int = 3
    num_images: int = 240
    image_size: int = 32
    volume: bool = False
    depth: int = 16
    tumour_rate: float = 0.8
    scanner_shift: float = 1.0
    size_skew: float = 0.3

    def __post_init__(self) -> None:
        name = "synthetic-segmentation"
        if self.num_sites < 1:
            raise DataError(f"{name} needs at least 1 site, not {self.num_sites}")
        low = MIN_SITE_SIZE * self.num_sites
        if not low <= self.num_images <= MAX_IMAGES:
            raise DataError(
                f"{name}: num_images must be between {low} ({MIN_SITE_SIZE} per site) and "
                f"{MAX_IMAGES}, not {self.num_images}"
            )
        if not 16 <= self.image_size <= 64:
            raise DataError(f"{name}: image_size must be between 16 and 64, not {self.image_size}")
        if not 8 <= self.depth <= 32:
            raise DataError(f"{name}: depth must be between 8 and 32, not {self.depth}")
        voxels = self.num_images * self.image_size**2 * (self.depth if self.volume else 1)
        if voxels > MAX_VOXELS:
            raise DataError(
                f"{name}: {self.num_images} scans of this size hold {voxels:,} voxels, more "
                f"than {MAX_VOXELS:,}; lower num_images, image_size or depth"
            )
        if not 0.1 <= self.tumour_rate <= 1.0:
            raise DataError(
                f"{name}: tumour_rate must be between 0.1 and 1, not {self.tumour_rate}"
            )
        for option in ("scanner_shift", "size_skew"):
            value = getattr(self, option)
            if not 0 <= value <= 3:
                raise DataError(f"{name}: {option} must be between 0 and 3, not {value}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape of one scan: ``(H, W)`` or ``(D, H, W)``."""
        side = (self.image_size, self.image_size)
        return (self.depth, *side) if self.volume else side


def _smooth(images: Float32Array, sigma: npt.NDArray[np.floating]) -> Float32Array:
    """Blur each scan (over its 2 or 3 spatial axes) with its own Gaussian, by FFT.

    ``sigma[i]`` is in pixels; periodic boundaries, which is fine for noise textures and
    for anatomy that lies inside the frame.
    """
    spatial = images.shape[1:]
    axes = tuple(range(1, images.ndim))
    freqs = [np.fft.fftfreq(n) for n in spatial[:-1]] + [np.fft.rfftfreq(spatial[-1])]
    grids = np.meshgrid(*freqs, indexing="ij")
    freq2 = sum(g**2 for g in grids).astype(np.float32)[None]
    sig2 = np.asarray(sigma, dtype=np.float32).reshape(-1, *([1] * len(spatial))) ** 2
    transfer = np.exp(np.float32(-2.0 * np.pi**2) * sig2 * freq2)
    spectrum = np.fft.rfftn(images, axes=axes) * transfer
    return np.fft.irfftn(spectrum, s=spatial, axes=axes).astype(np.float32)


def _texture(
    n: int, spatial: tuple[int, ...], sigma: float, rng: np.random.Generator
) -> Float32Array:
    """Smooth noise of standard deviation 1 in each scan."""
    noise = rng.standard_normal((n, *spatial), dtype=np.float32)
    field = _smooth(noise, np.full(n, sigma))
    spread = field.std(axis=tuple(range(1, field.ndim)), keepdims=True)
    return np.asarray(field / spread, dtype=np.float32)


def _column(values: npt.NDArray[np.floating] | npt.NDArray[np.bool_], ndim: int) -> Float32Array:
    return np.asarray(values, np.float32).reshape(-1, *([1] * ndim))


def _render(
    tumour: npt.NDArray[np.bool_], spatial: tuple[int, ...], rng: np.random.Generator
) -> tuple[Float32Array, npt.NDArray[np.int64]]:
    """Clean scans ``(n, *spatial)`` and their masks; ``tumour[i]`` says whether to add one."""
    n, dims = len(tumour), len(spatial)
    half = spatial[-1] / 2.0  # pixels per unit of geometry, the same along every axis
    coords = [
        ((np.arange(s) - (s - 1) / 2) / half)
        .astype(np.float32)
        .reshape(1, *[s if a == i else 1 for a in range(dims)])
        for i, s in enumerate(spatial)
    ]

    def draw(low: float, high: float, k: int = n) -> Float32Array:
        return _column(rng.uniform(low, high, k), dims)

    image = 0.05 + 0.03 * _texture(n, spatial, 2.0, rng)
    centre = [draw(-0.12, 0.12) for _ in range(dims)]
    radii = [draw(0.55, 0.8) for _ in range(dims)]
    # the slices of a volume span less than its side: keep the organ's depth inside them
    if dims == 3:
        radii[0] = np.minimum(radii[0], np.float32(0.8 * spatial[0] / spatial[-1]))
    r = np.sqrt(sum(((c - m) / a) ** 2 for c, m, a in zip(coords, centre, radii, strict=True)))
    organ = 1.0 / (1.0 + np.exp((r - 1.0) * 14.0))
    tissue = 0.04 * _texture(n, spatial, 1.5, rng)
    image = image + organ * (draw(0.25, 0.4) + tissue)

    def position(reach: float, k: int) -> list[Float32Array]:
        """Points inside the organ: a random direction, at most ``reach`` of its radii."""
        direction = rng.standard_normal((k, dims))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        dist = reach * rng.uniform(0.0, 1.0, k) ** (1.0 / dims)
        return [
            m + a * _column(dist * direction[:, i], dims)
            for i, (m, a) in enumerate(zip(centre, radii, strict=True))
        ]

    # distractors: small bright spots, in every scan
    for _ in range(3):
        has = _column(rng.random(n) < 0.5, dims)
        spot = position(0.8, n)
        width = draw(0.04, 0.07)
        d2 = sum((c - s) ** 2 for c, s in zip(coords, spot, strict=True))
        image = image + has * draw(0.2, 0.45) * np.exp(-0.5 * d2 / width**2)

    # the tumour: an irregular blob inside the organ
    where = position(0.5, n)
    radius = draw(0.12, 0.3)
    dist = np.sqrt(sum((c - w) ** 2 for c, w in zip(coords, where, strict=True)))
    bumps = _texture(n, spatial, 0.12 * half, rng)
    mask = (dist / radius + 0.25 * bumps < 1.0) & _column(tumour, dims).astype(bool)
    edge = _smooth(mask.astype(np.float32), np.full(n, 0.6))
    lesion = draw(0.15, 0.45) + 0.05 * _texture(n, spatial, 1.0, rng)
    image = image + edge * lesion
    return image.astype(np.float32), mask.astype(np.int64)


def _scan(
    image: Float32Array,
    scanners: list[Scanner],
    site: npt.NDArray[np.int64],
    rng: np.random.Generator,
) -> Float32Array:
    """Pass clean scans through their site's scanner (blur, contrast, gain, offset, noise)."""
    dims = image.ndim - 1
    scale = image.shape[-1] / 32.0

    def per_scan(attr: str) -> Float32Array:
        values = np.array([getattr(s, attr) for s in scanners], dtype=np.float32)
        return _column(values[site], dims)

    blurred = _smooth(image, np.array([scanners[k].blur for k in site]) * scale)
    curved = np.maximum(blurred, 0.0) ** per_scan("gamma")
    out = per_scan("gain") * curved + per_scan("offset")
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    return np.asarray(out + per_scan("noise") * noise, dtype=np.float32)


def generate_segmentation(
    *, seed: int = 0, options: SegmentationOptions | None = None
) -> FederatedDataset:
    """A synthetic segmentation consortium, the same for the same ``seed`` and ``options``."""
    opts = options or SegmentationOptions()
    rng = np.random.default_rng([seed, 0x5E6])
    sizes = skewed_sizes(
        opts.num_images,
        num_sites=opts.num_sites,
        skew=opts.size_skew,
        rng=rng,
        min_size=MIN_SITE_SIZE,
    )
    scanners = [Scanner.draw(opts.scanner_shift, rng) for _ in range(opts.num_sites)]
    site = np.repeat(np.arange(opts.num_sites), sizes)
    with_tumour = np.round(sizes * opts.tumour_rate).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(len(site)) - start[site]
    order = np.lexsort((rng.random(len(site)), site))  # shuffled within each site
    tumour = (rank < with_tumour[site])[order]
    clean, y = _render(tumour, opts.shape, rng)
    x = _scan(clean, scanners, site, rng)[:, None]

    width = max(2, len(str(opts.num_sites)))
    sites = []
    for k, scanner in enumerate(scanners):
        lo, hi = int(start[k]), int(start[k] + sizes[k])
        train, test = train_test_indices(
            hi - lo, test_fraction=TEST_FRACTION, rng=rng, labels=tumour[lo:hi].astype(np.int64)
        )
        sites.append(
            SiteData(
                name=f"segmentation-site-{k + 1:0{width}d}",
                x_train=x[lo:hi][train],
                y_train=y[lo:hi][train],
                x_test=x[lo:hi][test],
                y_test=y[lo:hi][test],
                description=(
                    f"synthetic scanner: blur {scanner.blur:.2f} px, gamma {scanner.gamma:.2f}, "
                    f"gain {scanner.gain:.2f}, offset {scanner.offset:+.2f}, "
                    f"noise {scanner.noise:.3f}"
                ),
            )
        )
    shape = "×".join(map(str, opts.shape))
    what = "volumes" if opts.volume else "slices"
    return FederatedDataset(
        name="synthetic-segmentation",
        spec=DataSpec(kind=TaskKind.SEGMENTATION, input_shape=(1, *opts.shape), n_classes=2),
        sites=tuple(sites),
        description=(
            f"synthetic {shape} {what} with a tumour mask to segment (1 = tumour), "
            f"{opts.num_images} scans in {opts.num_sites} sites with different scanners"
        ),
        source="generated by medfed.data.synthetic_segmentation (no real image)",
        notes={
            "seed": str(seed),
            "volume": str(opts.volume).lower(),
            "tumour_rate": str(opts.tumour_rate),
            "scanner_shift": str(opts.scanner_shift),
            "size_skew": str(opts.size_skew),
        },
    )
