"""A StyleGAN-style generator and its residual discriminator (Generative Deep Learning ch. 10).

StyleGAN (Karras et al. 2019) and StyleGAN2 (Karras et al. 2020) keep the GAN game of core.gan but
change how the generator *uses* its latent vector:

    mapping network   z -> w: 4 fully connected layers turn the normal z into an intermediate latent w
                      whose space need not follow the data's tangled distribution.
    styles            each convolution of the synthesis network gets its own copy of w, turned by a learnt
                      affine map into a style s (one scale per input channel). The synthesis starts from a
                      learnt constant 4x4 tensor, not from z: all variation enters through the styles
                      (and the noise).
    modulation        StyleGAN2's form of AdaIN: the style scales the conv's input channels
                      (w'_ijk = s_i w_ijk), then the output is *demodulated*, divided by its expected norm
                      sigma_j = sqrt(sum_ik (s_i w_ijk)^2), so no style can blow the activations up.
    noise inputs      per-pixel Gaussian noise added after each convolution with a learnt strength: the
                      stochastic details (hair strands, skin texture) that no style should have to encode.
    skip outputs      every resolution adds its own RGB image (toRGB) to the upsampled sum of the coarser ones.

Because each layer reads its own w, two latents can be *mixed*: coarse layers (4-8 px: pose, face shape)
from one, fine layers (16-32 px: colours, texture) from another. Truncation moves w towards the average
w: w' = w_avg + psi (w - w_avg), trading variety for typical, clean faces.

The discriminator is StyleGAN2's residual one with a minibatch standard-deviation feature; the loss is
the non-saturating logistic loss with an R1 penalty on real images (core.gan.train_step, loss "r1").
Every weight uses the *equalised learning rate*: stored as N(0, 1) and scaled by 1/sqrt(fan_in) at run
time, so Adam moves every layer at the same relative speed.

Left out of this small version: path-length regularisation, progressive growing, upfirdn
anti-aliasing filters (bilinear up/down sampling instead), and the 512-wide, 1024-px networks.

    python -m core.train gan --model stylegan --data faces --image-size 32 --minutes 60 --threads 1
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NOISE_MODES = ("const", "random", "off")  # fixed per-layer noise, fresh noise from a generator, none
W_AVG_BETA = 0.995  # how slowly the running mean of w (truncation's centre) moves during training
MIXING_PROBABILITY = 0.5  # share of training batches whose styles switch latents at a random layer


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * math.sqrt(2)  # sqrt(2) keeps the activations' variance at 1


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate: y = (W * lr_mul / sqrt(fan_in)) x + b * lr_mul."""

    def __init__(self, d_in: int, d_out: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((d_out,), bias_init / lr_mul))
        self.scale, self.lr_mul = lr_mul / math.sqrt(d_in), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale, self.padding = 1 / math.sqrt(c_in * kernel * kernel), kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class MappingNetwork(nn.Module):
    """z -> w through `layers` fully connected layers (learning rate x0.01, as in StyleGAN)."""

    def __init__(self, z_dim: int, w_dim: int, layers: int):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=0.01) for a, b in zip(dims, dims[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)  # pixel norm: z on the sphere of radius sqrt(d)
        for layer in self.layers:
            x = _lrelu(layer(x))
        return x


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled by a style computed from w (StyleGAN2's AdaIN)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # A in the paper: w -> s, starting at s = 1
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.scale, self.padding = 1 / math.sqrt(c_in * kernel * kernel), kernel // 2
        self.demodulate, self.upsample = demodulate, upsample

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.affine(w)                                  # s_i, one per input channel  [N, c_in]
        weight = self.weight * self.scale                       # w_ijk                       [c_out, c_in, k, k]
        x = x * style[:, :, None, None]                         # modulation: w'_ijk = s_i w_ijk, applied to the input
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:                                     # sigma_j = sqrt(sum_ik (s_i w_ijk)^2)
            sigma = (style.square() @ weight.square().sum((2, 3)).T + 1e-8).sqrt()  # [N, c_out]
            x = x / sigma[:, :, None, None]                     # w''_ijk = w'_ijk / sigma_j
        return x


class StyleLayer(nn.Module):
    """Modulated conv -> + noise x learnt strength -> + bias -> leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, c_out, 3, w_dim, upsample=upsample)
        self.noise_strength = nn.Parameter(torch.zeros(()))  # starts at 0: the network decides how much noise helps
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("const_noise", torch.randn(1, 1, resolution, resolution))  # "const" mode: fixed detail

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x, w)
        if noise is not None:
            x = x + self.noise_strength * noise  # one map per image, broadcast over the channels
        return _lrelu(x + self.bias[:, None, None])


class ToRGB(nn.Module):
    """1x1 modulated conv to colour, without demodulation (its output *is* the picture's contribution)."""

    def __init__(self, c_in: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[:, None, None]


def channels_at(cfg, resolution: int) -> int:
    """Feature channels at a resolution: `width` at full size, doubling at each halving, at most 8x width."""
    return cfg.width * min(8, cfg.image_size // resolution)


def style_resolutions(image_size: int) -> list[int]:
    """The size each style layer draws at: one layer at 4 px, then two at every doubling up to
    `image_size` (the first of the two upsamples). One w per layer: its length is how many styles there are."""
    doublings = image_size.bit_length() - 3  # 4 -> 8 -> ... -> image_size
    return [4] + [4 << k for k in range(1, doublings + 1) for _ in range(2)]


class StyleGenerator(nn.Module):
    """z -> image in [-1, 1]. Built from a core.gan.GANConfig with architecture "style".

    forward(z) is what core.gan calls (training, sampling, latent walks): constant noise, psi = 1. The
    style controls go through `mapping`, `truncate` and `synthesis` (see `styles` and `mix` below)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.constant = nn.Parameter(torch.randn(1, channels_at(cfg, 4), 4, 4))
        self.layers, self.to_rgb = nn.ModuleList(), nn.ModuleList()
        c_in, previous = channels_at(cfg, 4), 4
        for i, resolution in enumerate(style_resolutions(cfg.image_size)):
            c_out = channels_at(cfg, resolution)
            self.layers.append(StyleLayer(c_in, c_out, cfg.w_dim, resolution, upsample=resolution > previous))
            if i % 2 == 0:  # the last layer at each resolution has a toRGB
                self.to_rgb.append(ToRGB(c_out, cfg.channels, cfg.w_dim))
            c_in, previous = c_out, resolution

    @property
    def num_styles(self) -> int:
        """How many w's the synthesis reads: one per style layer (each toRGB shares its resolution's last)."""
        return len(self.layers)

    def layer_resolutions(self) -> list[int]:
        return style_resolutions(self.cfg.image_size)

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        return self.w_avg + psi * (w - self.w_avg)  # w' = w_avg + psi (w - w_avg)

    def synthesis(self, ws: torch.Tensor, noise: str | list[torch.Tensor] = "const",
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """ws [N, num_styles, w_dim] -> images. noise: a NOISE_MODES name or one map [N, 1, r, r] per layer."""
        maps = self.noise_maps(len(ws), noise, generator, ws.device) if isinstance(noise, str) else noise
        x = self.constant.expand(len(ws), -1, -1, -1)
        rgb = None
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], maps[i])
            if i % 2 == 0:  # layers 0, 2, 4, ... end a resolution: add its colours to the upsampled sum
                part = self.to_rgb[i // 2](x, ws[:, i])
                rgb = part if rgb is None else F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + part
        return rgb

    def noise_maps(self, n: int, mode: str, generator: torch.Generator | None, device) -> list:
        if mode not in NOISE_MODES:
            raise ValueError(f"Noise must be one of {', '.join(NOISE_MODES)}, not {mode!r}.")
        if mode == "off":
            return [None] * len(self.layers)
        if mode == "const":
            return [layer.const_noise for layer in self.layers]
        # drawn on the CPU from the call's generator: the same seed gives the same details on every device
        return [torch.randn(n, 1, r, r, generator=generator).to(device) for r in self.layer_resolutions()]

    def forward(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        w = self.mapping(z)
        ws = w[:, None].expand(-1, self.num_styles, -1)
        if self.training:
            with torch.no_grad():  # truncation's centre: a running mean of w over training
                self.w_avg.lerp_(w.detach().mean(0).to(self.w_avg.dtype), 1 - W_AVG_BETA)
            ws = self._mixing_regularisation(z, ws)
            return self.synthesis(ws, "random")
        return self.synthesis(ws, "const")

    def _mixing_regularisation(self, z: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        """Half the batches switch to another image's w at a random layer, so neighbouring layers cannot
        rely on sharing one w (what makes style mixing work). Training noise, like the noise inputs', comes
        from torch's global generator: it never reaches a user's picture."""
        if torch.rand(()) >= MIXING_PROBABILITY:
            return ws
        crossover = int(torch.randint(1, self.num_styles, ()))
        other = self.mapping(z.roll(1, dims=0))[:, None]
        layer = torch.arange(self.num_styles, device=ws.device)[None, :, None]
        return torch.where(layer < crossover, ws, other)


# --- the controls a user turns (pure: explicit generators, no state) --------------------------

def latents(G: StyleGenerator, seeds) -> torch.Tensor:
    """One z per seed, drawn as core.gan.sample draws a single image (same seed, same face)."""
    from core.runtime import make_generator

    return torch.cat([torch.randn(1, G.cfg.z_dim, generator=make_generator(int(s))) for s in seeds])


@torch.no_grad()
def styles(G: StyleGenerator, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
    """z [N, z_dim] -> truncated ws [N, num_styles, w_dim] (the same w for every layer)."""
    if not 0.0 <= psi <= 1.5:
        raise ValueError(f"Truncation psi must be between 0 and 1.5, not {psi}.")
    device = next(G.parameters()).device
    w = G.truncate(G.mapping(z.to(device)), psi)
    return w[:, None].expand(-1, G.num_styles, -1)


def mix_styles(coarse: torch.Tensor, fine: torch.Tensor, crossover: int) -> torch.Tensor:
    """Layers [0, crossover) read `coarse`'s w, layers [crossover, end) `fine`'s. crossover = num_styles: all coarse."""
    num = coarse.shape[1]
    if not 0 <= crossover <= num:
        raise ValueError(f"The crossover layer must be between 0 and {num}, not {crossover}.")
    layer = torch.arange(num, device=coarse.device)[None, :, None]
    return torch.where(layer < crossover, coarse, fine)


@torch.no_grad()
def render(G: StyleGenerator, ws: torch.Tensor, noise: str = "const", generator: torch.Generator | None = None) -> torch.Tensor:
    """ws -> images in [0, 1] on the CPU."""
    return ((G.eval().synthesis(ws, noise, generator).float() + 1) / 2).clamp(0, 1).cpu()


# --- the discriminator -------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """Two 3x3 convs and a halving, beside a 1x1 shortcut; the sum / sqrt(2) keeps the variance."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.conv2 = EqualConv2d(c_in, c_in, 3), EqualConv2d(c_in, c_out, 3)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.conv2(_lrelu(self.conv1(x))), 2)
        return (_lrelu(y) + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class ResidualDiscriminator(nn.Module):
    """image -> one logit. fromRGB, residual blocks down to 4x4, then the minibatch standard deviation:
    one extra channel holding how much the images of a small group differ, so a generator that draws the
    same face every time is easy to spot."""

    def __init__(self, cfg, group: int = 4):
        super().__init__()
        self.cfg, self.group = cfg, group
        self.from_rgb = EqualConv2d(cfg.channels, channels_at(cfg, cfg.image_size), 1)
        blocks, resolution = [], cfg.image_size
        while resolution > 4:
            blocks.append(ResidualBlock(channels_at(cfg, resolution), channels_at(cfg, resolution // 2)))
            resolution //= 2
        self.blocks = nn.Sequential(*blocks)
        c = channels_at(cfg, 4)
        self.conv = EqualConv2d(c + 1, c, 3)
        self.dense = EqualLinear(c * 16, c)
        self.out = EqualLinear(c, 1)

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = math.gcd(self.group, n)
        spread = x.view(group, -1, c, h, w).std(0, unbiased=False).mean((1, 2, 3))  # one number per group slot
        return torch.cat([x, spread.repeat(group)[:, None, None, None].expand(n, 1, h, w)], dim=1)

    def forward(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        x = self.blocks(_lrelu(self.from_rgb(x)))
        x = _lrelu(self.conv(self.minibatch_stddev(x)))
        return self.out(_lrelu(self.dense(x.flatten(1)))).flatten()
