"""A GAN small enough to watch learn: two MLPs on 2-D points (in the spirit of GAN Lab).

The generator maps 2-D noise to 2-D points; the discriminator gives every point of the plane a
probability of being real. Plotted together they show the game itself: the decision map shifts
towards the data, and the generated points slide along its gradient towards the real ones, until
the map turns flat grey (D can no longer tell) or the game falls apart (too high a learning rate).

    gan = Gan2D("ring", seed=0)
    gan.train(200)                      # 200 alternating D/G updates, a few ms each on a CPU
    gan.fake_points(), gan.real_points(), gan.decision_map(), gan.history
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.data.toy2d import check, plane, sample
from core.runtime import make_generator, seeded_init, set_learning_rate

def mlp(n_in: int, n_out: int, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, n_out))


class Gan2D:
    """One user's live GAN: the two networks, their optimisers, the losses so far."""

    def __init__(self, distribution: str = "ring", seed: int = 0, lr_g: float = 1e-3, lr_d: float = 1e-3,
                 batch_size: int = 256, shown: int = 500):
        self.distribution, self.batch_size = check(distribution), batch_size
        self.rng = make_generator(seed)
        self.G, self.D = mlp(2, 2), mlp(2, 1)
        gen = make_generator(seed + 1)  # per-user weights, without touching the global stream
        seeded_init(self.G, gen)
        seeded_init(self.D, gen)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr_g, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr_d, betas=(0.5, 0.999))
        self.set_learning_rates(lr_g, lr_d)
        # The same noise and real points are plotted every frame, so motion on screen is learning.
        self.shown_z = torch.randn(shown, 2, generator=self.rng)
        self.shown_real = sample(distribution, shown, self.rng)
        self.step = 0
        self.history: list[tuple[int, float, float]] = []  # (step, D loss, G loss)
        self.diverged: str | None = None

    def set_learning_rates(self, lr_g: float, lr_d: float) -> None:
        set_learning_rate(self.opt_g, lr_g, "The generator learning rate")
        set_learning_rate(self.opt_d, lr_d, "The discriminator learning rate")

    def train(self, steps: int) -> None:
        """`steps` rounds of one D update then one G update; stops early (and says why) on divergence."""
        for _ in range(max(0, int(steps))):
            if self.diverged:
                return
            real = sample(self.distribution, self.batch_size, self.rng)
            fake = self.G(torch.randn(self.batch_size, 2, generator=self.rng))
            real_logit, fake_logit = self.D(real), self.D(fake.detach())
            loss_d = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                      + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
            self.opt_d.zero_grad()
            loss_d.backward()
            self.opt_d.step()
            fake_logit = self.D(fake)
            loss_g = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
            self.opt_g.zero_grad()
            loss_g.backward()
            self.opt_g.step()
            self.step += 1
            self.history.append((self.step, loss_d.item(), loss_g.item()))
            if not math.isfinite(loss_d.item() + loss_g.item()):
                self.diverged = f"the losses became infinite or NaN at step {self.step}"
        self._check_points()

    def _check_points(self) -> None:
        far = self.fake_points().abs().max().item()
        if not self.diverged and not math.isfinite(far):
            self.diverged = f"the generator's output became NaN by step {self.step}"
        elif not self.diverged and far > 1e3:
            self.diverged = f"the generated points flew off to ±{far:.0e} by step {self.step}"

    @torch.no_grad()
    def fake_points(self) -> torch.Tensor:
        return self.G(self.shown_z)

    def real_points(self) -> torch.Tensor:
        return self.shown_real

    @torch.no_grad()
    def decision_map(self, resolution: int = 80) -> torch.Tensor:
        """D's probability of "real" on a resolution x resolution grid over the plotted square
        (row 0 is the top, y = +EXTENT)."""
        return torch.sigmoid(self.D(plane(resolution))).reshape(resolution, resolution)


def distance_to_data(points: torch.Tensor, real: torch.Tensor) -> float:
    """Mean distance from each point to its nearest real point: how far the forgeries are from the data."""
    return torch.cdist(points, real).min(dim=1).values.mean().item()
