"""The linear-Gaussian latent generator: the floor a diffusion model must beat on scarce data.

One joint Gaussian over the encoded features c (C slots, `conditions.FeatureSchema`) and the
codec's latent z (D): mean mu and covariance Sigma, fitted on the training subjects. Asked a
subset S of the features (`slot`), it samples the exact Gaussian conditional

    z | c_S  ~  N(mu_z + Sigma_zS Sigma_SS^-1 (c_S - mu_S),  Sigma_zz - Sigma_zS Sigma_SS^-1 Sigma_Sz)

so with every feature given (the score's way: free features from the training table) it is
the latent regressed linearly on the features with a Gaussian residual; with fewer, the
others are marginalised under the same Gaussian. Sample i's draw is mu + L eps_i with the
sample's own seeded latent noise eps_i (`ConditionalDiffusion.initial_noise`), so seeds mean
the same as for the diffusion model. It stands in the denoiser's place of a
`ConditionalDiffusion`: the codec, probe, table, card and every caller (samples, probes,
scores) are shared.
"""

from __future__ import annotations

import torch
from torch import nn

RIDGE = 1e-4  # added to the conditioning block's diagonal: one-hot levels sum to 1 (a singular block)


class LatentGaussian(nn.Module):
    """Joint Gaussian of (c, z); build with `LatentGaussian.fit(c, z)`."""

    kind = "linear-gaussian"

    def __init__(self, cond_dim: int, latent_dim: int):
        super().__init__()
        self.cond_dim, self.latent_dim = int(cond_dim), int(latent_dim)
        dim = self.cond_dim + self.latent_dim
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("covariance", torch.eye(dim, dtype=torch.float64))
        # the training rows [c, z] (N, C + D): kept so the fit can be bootstrapped over subjects
        self.register_buffer("rows", torch.zeros(0, dim, dtype=torch.float32))
        self.numeric_slots = ()  # read-out guidance does not apply: the conditioning is exact

    @classmethod
    def fit(cls, c: torch.Tensor, z: torch.Tensor) -> LatentGaussian:
        """Mean and (unbiased) covariance of the training rows' [c, z]."""
        if len(c) != len(z) or len(c) < 3:
            raise ValueError("need matching c and z with at least 3 rows")
        return cls._of_rows(torch.cat([c, z], 1).float(), c.shape[1])

    @classmethod
    def _of_rows(cls, rows: torch.Tensor, cond_dim: int) -> LatentGaussian:
        model = cls(cond_dim, rows.shape[1] - cond_dim)
        model.mean.copy_(rows.double().mean(0))
        model.covariance.copy_(torch.cov(rows.double().T))
        model.rows = rows.clone()
        return model.eval()

    def bootstrap(self, seed: int) -> tuple[LatentGaussian, torch.Tensor]:
        """The model refitted on a bootstrap resample of its training subjects (seeded), and the
        resampled row indices (to draw the free features from the same subjects)."""
        if len(self.rows) < 3:
            raise ValueError("this model was saved without its training rows: refit it")
        g = torch.Generator().manual_seed(int(seed))
        index = torch.randint(len(self.rows), (len(self.rows),), generator=g)
        return LatentGaussian._of_rows(self.rows[index], self.cond_dim), index

    def config_json(self) -> dict:
        """The card's "denoiser" entry (what `storage.build` rebuilds it from)."""
        return {"kind": self.kind, "cond_dim": self.cond_dim, "latent_dim": self.latent_dim, "ridge": RIDGE}

    def conditional(self, asked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the asked slots S (indices into c): the gain Sigma_zS Sigma_SS^-1 (D, |S|) and the
        Cholesky factor (D, D) of the residual covariance of z | c_S."""
        sigma = self.covariance
        z = torch.arange(self.cond_dim, self.cond_dim + self.latent_dim)
        if len(asked) == 0:
            return torch.zeros(self.latent_dim, 0, dtype=sigma.dtype), torch.linalg.cholesky(sigma[z][:, z])
        block = sigma[asked][:, asked] + RIDGE * torch.eye(len(asked), dtype=sigma.dtype)
        cross = sigma[z][:, asked]  # (D, |S|)
        gain = torch.linalg.solve(block, cross.T).T
        residual = sigma[z][:, z] - gain @ cross.T
        residual = (residual + residual.T) / 2 + 1e-9 * torch.eye(self.latent_dim, dtype=sigma.dtype)
        return gain, torch.linalg.cholesky(residual)

    @torch.inference_mode()
    def sample(self, c: torch.Tensor, slot: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z (n, D) for conditions c (n, C), slot masks (n, C) 1 = asked, and standard normal noise (n, D)."""
        out = torch.empty(len(c), self.latent_dim, dtype=torch.float64)
        patterns, which = torch.unique(slot > 0, dim=0, return_inverse=True)
        mu_c, mu_z = self.mean[: self.cond_dim], self.mean[self.cond_dim :]
        for p, pattern in enumerate(patterns):  # rows asked the same features share one conditional
            rows = torch.nonzero(which == p).flatten()
            asked = torch.nonzero(pattern).flatten()
            gain, factor = self.conditional(asked)
            mean = mu_z + (c[rows][:, asked].double() - mu_c[asked]) @ gain.T
            out[rows] = mean + noise[rows].double() @ factor.T
        return out.float()
