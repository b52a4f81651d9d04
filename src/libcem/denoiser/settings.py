"""Settings of the patch-graph denoiser: one frozen dataclass, the only home of its constants."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from libcem.errors import LibcemError

HEADS = ("texture", "structure", "color", "spatial")  # every attention head, in a fixed order
GRAY_HEADS = ("texture", "structure", "spatial")  # chroma means nothing on a single channel


@dataclass(frozen=True)
class DenoiseConfig:
    """Denoiser settings. Sizes in pixels; `sigma` values on the 0..255 scale.

    patch: side of the square patches (graph nodes).
    step, step_wiener: stride of the reference patches (a group is built around each) in
        the first and the second pass.
    search_radius: half-side of the search window for the K nearest patches.
    group_size: K of the first pass (graph diffusion); group_size_wiener: K of the second pass.
    heads: attention heads to use; grayscale images drop `color` automatically.
    em_max_iter, em_tol: EM stops after em_max_iter iterations or once an iteration raises
        the objective (mean log-likelihood per coefficient, nats) by less than em_tol.
    em_sigma: also update sigma in EM. Off by default: the per-group scales absorb part of the
        noise and the EM noise level comes out about 8% low (measured on Set12 at sigma 25),
        while the weak-texture PCA estimate (`noise`) is within 2% for sigma >= 10.
    em_groups: groups drawn (seeded) to fit the global EM parameters.
    scale_iter: EM iterations of the per-group scales when the global parameters are fixed.
    second_pass: run the Wiener pass on a graph built from the first estimate (as BM3D does).
    wiener_passes_color: Wiener passes on colour images, each on the previous estimate (a
        second pass gained 0.1 dB on McMaster crops; colour runs well under CBM3D's time,
        while on gray images a second pass would cost the speed parity with BM3D).
    tile, overlap: images larger than tile x tile are processed in overlapping tiles.
    chunk: reference patches processed at once (bounds memory).
    seed: seed of the generator that draws the EM groups.
    """

    patch: int = 7
    step: int = 4
    step_wiener: int = 4
    search_radius: int = 16
    group_size: int = 32
    group_size_wiener: int = 32
    heads: tuple[str, ...] = HEADS
    em_max_iter: int = 15
    em_sigma: bool = False
    em_tol: float = 1e-4
    em_groups: int = 128
    scale_iter: int = 2
    second_pass: bool = True
    wiener_passes_color: int = 2
    tile: int = 768
    overlap: int = 48
    chunk: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "patch": 2 <= self.patch <= 32,
            "step": 1 <= self.step <= self.patch,
            "step_wiener": 1 <= self.step_wiener <= self.patch,
            "search_radius": 1 <= self.search_radius <= 64,
            "group_size": 2 <= self.group_size <= (2 * self.search_radius + 1) ** 2,
            "group_size_wiener": 2 <= self.group_size_wiener <= (2 * self.search_radius + 1) ** 2,
            "em_max_iter": self.em_max_iter >= 1,
            "em_tol": self.em_tol >= 0,
            "em_groups": self.em_groups >= 16,
            "scale_iter": self.scale_iter >= 0,
            "tile": self.tile >= 4 * self.patch,
            "overlap": 0 <= 2 * self.overlap < self.tile,
            "chunk": self.chunk >= 1,
            "wiener_passes_color": self.wiener_passes_color >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
            raise LibcemError(f"invalid denoiser setting(s): {values}")
        unknown = [h for h in self.heads if h not in HEADS]
        if unknown or not self.heads:
            raise LibcemError(f"heads must be a non-empty subset of {HEADS}, got {self.heads}")

    def heads_for(self, channels: int) -> tuple[str, ...]:
        """The heads that make sense for an image with `channels` channels (1 or 3)."""
        heads = self.heads if channels > 1 else tuple(h for h in self.heads if h in GRAY_HEADS)
        return heads or ("texture",)

    def override(self, **changes) -> "DenoiseConfig":
        """A copy with some fields changed (unknown names raise LibcemError)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise LibcemError(f"unknown denoiser setting(s): {', '.join(unknown)}")
        return replace(self, **changes)
