"""A convolutional autoencoder latent space for `shapes`, with the interface of `PCACodec`.

PCA cannot follow an object that moves and has sharp, striped edges; a small conv
autoencoder can. Code name -> meaning:
    carriers (2, S, S)   sin, cos of 2 pi (row + col) / stripe_period: the texture's known wave
                         (`engine.data.shapes_stripes`; the shapes' period is STRIPE_PERIOD)
    demodulate(x)        x * carriers, box-filtered over 4 px: the stripes' amplitude maps (smooth)
    encoder              [x, demodulate(x)] -> PixelUnshuffle(2) -> strided 4x4 convs -> Linear -> code
    decoder              code -> Linear -> 4x4 map -> transposed 4x4 convs -> 3x3 conv -> PixelShuffle(2)
                         -> planes (base, u, v); image = base + u * sin + v * cos
    centred_stripes      (the recipe) the carriers' phase is taken from the object's centre
                         (`object_centre`: of x in the encoder, of the decoded base in the decoder),
                         and the decoder gives one plane a: image = base + a * sin(centred phase).
                         On the grid's phase, u, v hold the stripes' phase 2 pi (pos_x + pos_y) / 4,
                         which turns five times across the image, and which a denoiser conditioned
                         on texture did not follow
    z (B, latent_dim)    code standardised per dimension (buffers code_mean, code_sd) and, last, the
                         standardised log of the pixel noise sd, which per-image p99 normalisation
                         makes vary ~3x between images (and so carries the object's intensity)
    noise_estimate       how encode measures that sd: "residual", the RMS of x - decode_mean(z), or
                         "flat_pairs" (the recipe; `flat_pair_noise_sd`)
Pixel (un)shuffle keeps every convolution at <= 32x32, so training fits on one CPU thread
(diffusers' Encoder/Decoder blocks were ~30x too slow here).
Training: deterministic AE, MSE against the noise-free images (`engine.data.shapes_images`
renders them; not clipped at 1, since the data clip after the noise and `decode` does too) plus
a weighted MSE of the demodulated error, and a little noise on the code for a smooth latent.
`decode` adds white Gaussian noise of the sample's level and clips to [0, 1], as the data do.
Without the carriers, or with carriers but no box filter, the stripes were never learned; the
noise sd sets the intensity a probe reads from a decoded image, hence "flat_pairs". The
measurements behind these choices are in assets/README.md ("shapes").
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from engine.data.shapes_stripes import demodulate, grid_carriers, period_box
from engine.diffusion.optim import WarmupCosineAdamW


@dataclass
class AutoencoderConfig:
    latent_dim: int = 65  # code dimensions + 1 (the noise level)
    channels: tuple[int, ...] = (32, 64, 128)  # per stride-2 stage, after PixelUnshuffle(2)
    stripe_period: float | None = None  # the stripes' period (shapes: STRIPE_PERIOD); None: a plain AE
    steps: int = 10000
    batch_size: int = 32
    lr: float = 2e-3
    stripe_weight: float = 16.0  # the stripes are a small share of the MSE and are learned late
    code_noise: float = 0.01  # training noise on the code, in units of its batch sd
    centred_stripes: bool = False  # stripe phase from the object's centre, not the pixel grid
    seed: int = 0


NOISE_ESTIMATES = ("residual", "flat_pairs")


def clipped_noise_moments(mean: torch.Tensor, sd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second moments of clip(mean + sd e, 0, 1) - clip(mean, 0, 1), e ~ N(0, 1): a
    pixel's residual when the data clip to [0, 1] after their noise (a censored normal)."""
    centre = mean.clamp(0.0, 1.0)
    lo, hi = -mean / sd, (1.0 - mean) / sd  # the clip bounds in units of the noise
    p_lo, p_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
    d_lo, d_hi = (-0.5 * lo**2).exp() / math.sqrt(2 * math.pi), (-0.5 * hi**2).exp() / math.sqrt(2 * math.pi)
    shift = mean - centre  # non-zero where the noise-free image itself lies outside [0, 1]
    # E[e^k ; lo < e < hi] for k = 0, 1, 2
    inside0, inside1, inside2 = p_hi - p_lo, d_lo - d_hi, p_hi - p_lo + lo * d_lo - hi * d_hi
    first = shift * inside0 + sd * inside1 - centre * p_lo + (1.0 - centre) * (1.0 - p_hi)
    second = (
        shift**2 * inside0
        + 2 * shift * sd * inside1
        + sd**2 * inside2
        + centre**2 * p_lo
        + (1.0 - centre) ** 2 * (1.0 - p_hi)
    )
    return first, second


def flat_pair_noise_sd(
    images: torch.Tensor, mean: torch.Tensor, flat: float = 0.02, iterations: int = 10
) -> torch.Tensor:
    """(B,) pixel-noise sd of `images` (B, 1, S, S) around their noise-free estimate `mean`.

    Uses anti-diagonal neighbours (row + 1, col) and (row, col + 1): the stripes' phase
    2 pi (row + col) / 4 is the same at both, so where `mean` is flat (the pair differs by less
    than `flat`) the difference of their residuals is noise alone and the codec's smooth error
    cancels. The sd is matched to the censored-normal moments (`clipped_noise_moments`) by
    fixed-point iteration, so the clipped noise of a dark background does not bias it low."""
    residual = images - mean.clamp(0.0, 1.0)
    res_a, res_b = residual[..., 1:, :-1], residual[..., :-1, 1:]
    mean_a, mean_b = mean[..., 1:, :-1], mean[..., :-1, 1:]
    weight = ((mean_a - mean_b).abs() < flat).to(images.dtype)
    count = weight.sum((1, 2, 3)).clamp_min(1.0)
    observed = ((res_a - res_b).pow(2) * weight).sum((1, 2, 3)) / count
    sd = (observed / 2).sqrt().clamp_min(1e-6)
    for _ in range(iterations):
        first_a, second_a = clipped_noise_moments(mean_a, sd[:, None, None, None])
        first_b, second_b = clipped_noise_moments(mean_b, sd[:, None, None, None])
        expected = ((second_a + second_b - 2 * first_a * first_b) * weight).sum((1, 2, 3)) / count
        sd = (sd * (observed / expected.clamp_min(1e-12)).sqrt()).clamp_min(1e-6)
    return sd


class _Decoder(nn.Module):
    def __init__(self, code_dim: int, channels: tuple[int, ...], side: int, out_channels: int):
        super().__init__()
        self.stem, self.shape = nn.Linear(code_dim, channels[-1] * side * side), (channels[-1], side, side)
        widths = channels[::-1] + channels[:1]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, 2, 1) for a, b in zip(widths, widths[1:], strict=False))
        self.head = nn.Conv2d(channels[0], out_channels, 3, 1, 1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.stem(code)).view(len(code), *self.shape)
        for up in self.ups:
            h = F.silu(up(h))
        return F.pixel_shuffle(self.head(h), 2)


class AutoencoderCodec(nn.Module):
    """Image (B, 1, S, S) <-> latent (B, latent_dim). Fit with `fit_autoencoder`."""

    def __init__(
        self,
        size: int = 64,
        latent_dim: int = 65,
        channels: tuple[int, ...] = (32, 64, 128),
        stripe_period: float | None = None,
        centred_stripes: bool = False,
        noise_estimate: str = "residual",
    ):
        super().__init__()
        if centred_stripes and not stripe_period:
            raise ValueError("centred_stripes needs a stripe_period")
        if noise_estimate not in NOISE_ESTIMATES:
            raise ValueError(f"noise_estimate {noise_estimate!r}: use one of {', '.join(NOISE_ESTIMATES)}")
        self.noise_estimate = noise_estimate
        self.size, self.latent_dim, self.code_dim = size, latent_dim, latent_dim - 1
        self.channels, self.stripe_period, self.centred_stripes = tuple(channels), stripe_period, centred_stripes
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.register_buffer("grid", torch.stack([rows, cols]).float(), persistent=False)
        self.register_buffer("carriers", grid_carriers(size, stripe_period or math.inf)[: 2 if stripe_period else 0])
        inputs = 1 + len(self.carriers)  # the image and its demodulated stripes
        # decoded planes: base and, centred, one amplitude on the object-centred sine, else a sin and a cos
        planes = 1 + (1 if centred_stripes else len(self.carriers))
        side = size // 2 // 2 ** len(channels)  # of the smallest feature map
        widths = (4 * inputs, *channels)
        convs = [m for a, b in zip(widths, widths[1:], strict=False) for m in (nn.Conv2d(a, b, 4, 2, 1), nn.SiLU())]
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(2), *convs, nn.Flatten(), nn.Linear(channels[-1] * side * side, self.code_dim)
        )
        self.decoder = _Decoder(self.code_dim, self.channels, side, 4 * planes)
        self.register_buffer("code_mean", torch.zeros(self.code_dim))
        self.register_buffer("code_sd", torch.ones(self.code_dim))
        self.register_buffer("log_rms_stats", torch.tensor([0.0, 1.0]))  # mean, sd of log RMS residual

    def demodulate(self, images: torch.Tensor, carriers: torch.Tensor | None = None) -> torch.Tensor:
        """Stripe amplitude maps (B, 2, S, S) against `carriers` (default: the grid's). The 4 px box
        filter nulls the carrier on a smooth base; unfiltered, the carrier aliases in the strided
        convs and the stripes are never learned."""
        return demodulate(images, self.carriers if carriers is None else carriers)

    def object_centre(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2) row, col of the object's centre: the centroid of the box-filtered image (the
        stripes nulled) above half way from the background (median of the border) to the peak.
        The cut is symmetric about the centre of a symmetric object, so it is not pulled towards
        the image centre as an untrimmed centroid is by the background's noise."""
        smooth = period_box(images)[:, 0]
        border = torch.cat(
            [
                smooth[:, :2].flatten(1),
                smooth[:, -2:].flatten(1),
                smooth[:, :, :2].flatten(1),
                smooth[:, :, -2:].flatten(1),
            ],
            1,
        )
        background = border.median(1).values
        peak = smooth.flatten(1).amax(1)
        weight = F.relu(smooth - ((background + peak) / 2)[:, None, None])
        mass = weight.sum((1, 2)).clamp_min(1e-6)
        return (weight[:, None] * self.grid).sum((2, 3)) / mass[:, None] + 0.5  # period_box's shift

    def centred_carriers(self, centre: torch.Tensor) -> torch.Tensor:
        """(B, 2, S, S) sin, cos of 2 pi ((row - centre row) + (col - centre col)) / period: the
        stripes' own phase, so the code holds their amplitude alone, not a phase that turns
        five times as the object crosses the image (which a denoiser cannot follow)."""
        offset = self.grid.sum(0) - centre.sum(1)[:, None, None]
        phase = 2 * math.pi * offset / self.stripe_period
        return torch.stack([phase.sin(), phase.cos()], 1)

    def raw_code(self, images: torch.Tensor) -> torch.Tensor:
        """Unstandardised code (B, code_dim)."""
        if not self.stripe_period:
            return self.encoder(images)
        carriers = self.centred_carriers(self.object_centre(images)) if self.centred_stripes else self.carriers
        return self.encoder(torch.cat([images, self.demodulate(images, carriers)], 1))

    def image_of_code(self, code: torch.Tensor) -> torch.Tensor:
        planes = self.decoder(code)
        base = planes[:, :1]
        if self.centred_stripes:
            # no gradient through the centre: a centre still wrong early in training would send the
            # heavily weighted stripe error into the base plane
            return base + planes[:, 1:] * self.centred_carriers(self.object_centre(base.detach()))[:, :1]
        return base + (planes[:, 1:] * self.carriers).sum(1, keepdim=True)

    def noise_sd(self, images: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """(B,) the pixel-noise sd of `images` around the noise-free image of their `code`."""
        mean = self.image_of_code(code)
        if self.noise_estimate == "flat_pairs":
            return flat_pair_noise_sd(images, mean)
        # the data are clipped to [0, 1] after their noise; the code's image is not
        return (images - mean.clamp(0.0, 1.0)).pow(2).mean((1, 2, 3)).sqrt().clamp_min(1e-6)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> (B, latent_dim)."""
        images = images.float()
        code = self.raw_code(images)
        level = (self.noise_sd(images, code).log() - self.log_rms_stats[0]) / self.log_rms_stats[1]
        return torch.cat([(code - self.code_mean) / self.code_sd, level[:, None]], 1)

    @torch.inference_mode()
    def fit_statistics(self, images: torch.Tensor) -> None:
        """Standardisation of the code and of the log noise sd over `images` (the training set)."""
        codes = torch.cat([self.raw_code(b.float()) for b in images.split(512)])
        pairs = zip(images.split(512), codes.split(512), strict=True)
        log_sd = torch.cat([self.noise_sd(b.float(), c) for b, c in pairs]).log()
        self.code_mean.copy_(codes.mean(0))
        self.code_sd.copy_(codes.std(0).clamp_min(1e-6))
        self.log_rms_stats.copy_(torch.stack([log_sd.mean(), log_sd.std().clamp_min(1e-3)]))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The noise-free image (B, 1, S, S) of a latent, not clipped."""
        return self.image_of_code(z[:, : self.code_dim] * self.code_sd + self.code_mean)

    def decode(self, z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Image (B, 1, S, S) in [0, 1]; `noise` (B, S, S) standard normal adds the pixel noise."""
        x = self.decode_mean(z)
        if noise is not None:
            rms = (z[:, self.code_dim] * self.log_rms_stats[1] + self.log_rms_stats[0]).exp()
            x = x + rms[:, None, None, None] * noise[:, None]
        return x.clamp(0.0, 1.0)


def fit_autoencoder(
    images: torch.Tensor,
    *,
    targets: torch.Tensor | None = None,
    config: AutoencoderConfig | None = None,
    noise_estimate: str = "residual",
    log=print,
    **overrides,
) -> AutoencoderCodec:
    """Train on (N, 1, S, S) images in [0, 1]. `targets`: their noise-free versions where known
    (default: the images); `overrides` replace config fields, e.g. latent_dim=65, steps=7000, seed=0.
    `noise_estimate` only sets how `encode` measures the noise (no effect on the training)."""
    config = AutoencoderConfig(**{**asdict(config or AutoencoderConfig()), **overrides})
    targets = images if targets is None else targets
    torch.manual_seed(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    codec = AutoencoderCodec(
        images.shape[-1],
        config.latent_dim,
        config.channels,
        config.stripe_period,
        config.centred_stripes,
        noise_estimate,
    )
    optimiser = WarmupCosineAdamW(
        codec.parameters(), steps=config.steps, lr=config.lr, weight_decay=1e-5, warmup=max(1, config.steps // 50)
    )
    start, running = time.time(), None
    for step in range(config.steps):
        batch = torch.randint(len(images), (config.batch_size,), generator=g)
        code = codec.raw_code(images[batch].float())
        code = code + config.code_noise * code.std(0).detach() * torch.randn(code.shape, generator=g)
        # clean targets: the pixel noise would only add variance to the gradient
        error = codec.image_of_code(code) - targets[batch].float()
        mse = error.pow(2).mean()
        loss = mse + config.stripe_weight * codec.demodulate(error).pow(2).mean() if config.stripe_period else mse
        optimiser.step(loss)
        running = mse.item() if running is None else 0.98 * running + 0.02 * mse.item()
        if (step + 1) % max(1, config.steps // 20) == 0:
            log(f"step {step + 1}/{config.steps}: RMS error {running**0.5:.4f} ({time.time() - start:.0f} s)")
    codec.eval()
    codec.fit_statistics(images)
    return codec


def save_autoencoder(codec: AutoencoderCodec, path) -> None:
    """safetensors, with the constructor arguments as metadata so `load_autoencoder` can rebuild it."""
    shape = {
        "size": codec.size,
        "latent_dim": codec.latent_dim,
        "channels": codec.channels,
        "stripe_period": codec.stripe_period,
        "centred_stripes": codec.centred_stripes,
        "noise_estimate": codec.noise_estimate,
    }
    save_file(codec.state_dict(), str(path), metadata={"autoencoder": json.dumps(shape)})


def load_autoencoder(path) -> AutoencoderCodec:
    with safe_open(str(path), "pt") as f:
        shape = json.loads(f.metadata()["autoencoder"])
    codec = AutoencoderCodec(**shape)
    codec.load_state_dict(load_file(str(path)))
    return codec.eval()
