"""Spectral Diffusion's slim student: wavelet-gated down/up-sampling (`WGDownsample2D`, `WGUpsample2D`) in a diffusers
UNet (`WaveletGatedUNet2DModel`, a `ModelMixin` + `ConfigMixin` laid out like `UNet2DModel`).

Paper: Yang et al., "Diffusion Probabilistic Model Made Slim", CVPR 2023 (arXiv 2211.17106). No official code exists;
the formulas follow the paper as paraphrased by a secondary source, and every choice the paper leaves open is a config
field or said here:

- WG-Down: X -> Haar DWT -> (X_LL, X_LH, X_HL, X_HH), each C x H/2 x W/2; g = sigmoid(FFN(avgpool(X))) reshaped to four
  per-channel gate vectors (FFN = Linear(C, r*C) - SiLU - Linear(r*C, 4C), r = `gate_hidden_ratio`); the output is
  sum_i g_i * X_i (C channels). Nothing else: the ResNet blocks after it mix the channels.
- WG-Up: X (C channels) is first expanded by a 1x1 convolution to 4C (`WGUpsample2D(expand=True)`, inferred: in a UNet
  the up-sampler keeps the channel count, and a bare WG-Up divides it by 4), split channel-wise into four chunks read
  as wavelet sub-bands, gated as above (gates from avgpool of the block's input) and inverted: IDWT -> C x 2H x 2W.
- The gates see the features, which carry the timestep embedding, so they are input- and timestep-dependent.
- The haar transform is orthonormal (`wavelets.py`); gates start near 0.5 (default initialization of the FFN).
- Without wavelet gating (`use_wavelet_gating=False`) the same network down-samples with diffusers' `Downsample2D`
  (3x3 convolution, stride 2) and up-samples with `Upsample2D` (nearest x2, then a 3x3 convolution): the baseline.
- The UNet keeps diffusers' `UNet2DModel` layout and names (`conv_in`, `time_proj`, `time_embedding`, `down_blocks`,
  `mid_block`, `up_blocks`, `conv_norm_out`, `conv_out`), ResNet blocks (`ResnetBlock2D`) and skip connections; the
  middle block has two ResNet blocks and no attention (slim). It returns a `UNet2DOutput` (`.sample`), so diffusers'
  `DDPMPipeline(unet=student, scheduler=...)` samples it.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from .wavelets import haar_dwt2d, haar_idwt2d


class WaveletGates(nn.Module):
    """sigmoid(FFN(avgpool(x))) as four per-channel gate vectors: (N, 4, channels, 1, 1), each in (0, 1)."""

    def __init__(self, in_channels: int, channels: int, hidden_ratio: float = 1.0):
        super().__init__()
        hidden = max(1, round(in_channels * hidden_ratio))
        self.channels = channels
        self.ffn = nn.Sequential(nn.Linear(in_channels, hidden), nn.SiLU(), nn.Linear(hidden, 4 * channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(-2, -1))
        return torch.sigmoid(self.ffn(pooled)).view(x.shape[0], 4, self.channels, 1, 1)


class WGDownsample2D(nn.Module):
    """Wavelet-gated down-sampling: C x H x W -> C x H/2 x W/2, sum of the four gated Haar sub-bands."""

    def __init__(self, channels: int, gate_hidden_ratio: float = 1.0):
        super().__init__()
        self.channels = channels
        self.gates = WaveletGates(channels, channels, gate_hidden_ratio)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        g = self.gates(hidden_states)
        bands = haar_dwt2d(hidden_states)
        return sum(g[:, i] * band for i, band in enumerate(bands))


class WGUpsample2D(nn.Module):
    """Wavelet-gated up-sampling: the input's channels split into four chunks read as Haar sub-bands, gated, inverted.
    With `expand=False`: C x H x W -> C/4 x 2H x 2W (C divisible by 4); with `expand=True` (in the UNet) a 1x1
    convolution first makes 4C channels, so C x H x W -> C x 2H x 2W."""

    def __init__(self, channels: int, expand: bool = True, gate_hidden_ratio: float = 1.0):
        super().__init__()
        if not expand and channels % 4:
            raise ValueError(f"WGUpsample2D without expansion needs channels divisible by 4, got {channels}.")
        self.channels = channels
        self.expand = nn.Conv2d(channels, 4 * channels, 1) if expand else None
        self.out_channels = channels if expand else channels // 4
        self.gates = WaveletGates(channels, self.out_channels, gate_hidden_ratio)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        g = self.gates(hidden_states)
        x = self.expand(hidden_states) if self.expand is not None else hidden_states
        bands = x.chunk(4, dim=1)
        return haar_idwt2d(*(g[:, i] * band for i, band in enumerate(bands)))


class WGDownBlock2D(nn.Module):
    """One level of the encoder: ResNet blocks, then (not on the last level) the down-sampler."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers, groups, add_downsample, gated, ratio):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(
                in_channels=in_channels if i == 0 else out_channels,
                out_channels=out_channels,
                temb_channels=temb_channels,
                groups=groups,
            )  # fmt: skip
            for i in range(num_layers)
        )
        self.downsamplers = None
        if add_downsample:
            down = (
                WGDownsample2D(out_channels, ratio)
                if gated
                else Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=1, name="op")
            )
            self.downsamplers = nn.ModuleList([down])

    def forward(self, hidden_states, temb):
        states = ()
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb)
            states += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            states += (hidden_states,)
        return hidden_states, states


class WGUpBlock2D(nn.Module):
    """One level of the decoder (diffusers' `UpBlock2D` layout): ResNet blocks that each take a skip connection, then
    (not on the last level) the up-sampler."""

    def __init__(self, in_channels, prev_output_channel, out_channels, temb_channels, num_layers, groups, add_upsample,
                 gated, ratio):  # fmt: skip
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            first = prev_output_channel if i == 0 else out_channels
            resnets.append(ResnetBlock2D(in_channels=first + skip, out_channels=out_channels,
                                         temb_channels=temb_channels, groups=groups))  # fmt: skip
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = None
        if add_upsample:
            up = (
                WGUpsample2D(out_channels, expand=True, gate_hidden_ratio=ratio)
                if gated
                else Upsample2D(out_channels, use_conv=True, out_channels=out_channels)
            )
            self.upsamplers = nn.ModuleList([up])

    def forward(self, hidden_states, skips, temb):
        for resnet in self.resnets:
            hidden_states = resnet(torch.cat([hidden_states, skips[-1]], dim=1), temb)
            skips = skips[:-1]
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states)
        return hidden_states


class WGMidBlock2D(nn.Module):
    """The middle block: two ResNet blocks at the lowest resolution (no attention: the student is slim)."""

    def __init__(self, channels, temb_channels, groups):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=temb_channels, groups=groups)
            for _ in range(2)
        )

    def forward(self, hidden_states, temb):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


class WaveletGatedUNet2DModel(ModelMixin, ConfigMixin):
    r"""A slim UNet for unconditional diffusion whose down/up-samplers are wavelet-gated (Spectral Diffusion), a
    diffusers model: `save_pretrained` writes `config.json` + `diffusion_pytorch_model.safetensors`, and
    `WaveletGatedUNet2DModel.from_pretrained(folder_or_repo)` (diffusers' loader) reads them back.

    Parameters:
        sample_size (`int`): height and width of the images (divisible by 2^(levels - 1)).
        in_channels, out_channels (`int`): image channels in and predicted-noise channels out.
        block_out_channels (`tuple[int]`): channels of each level; each level after the first halves H and W.
        layers_per_block (`int`): ResNet blocks per encoder level (the decoder has one more, as in `UNet2DModel`).
        norm_num_groups (`int`): GroupNorm groups (every channel count must be divisible by it).
        use_wavelet_gating (`bool`): wavelet-gated samplers; False gives the baseline with diffusers' plain
            `Downsample2D` / `Upsample2D` (strided and nearest-neighbour + 3x3 convolutions).
        gate_hidden_ratio (`float`): hidden width of the gates' FFN, as a multiple of its input channels.
        flip_sin_to_cos, freq_shift: the sinusoidal timestep embedding, as in `UNet2DModel`.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: tuple[int, ...] = (16, 32),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        use_wavelet_gating: bool = True,
        gate_hidden_ratio: float = 1.0,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
    ):
        super().__init__()
        channels = list(block_out_channels)
        _check_config(sample_size, in_channels, out_channels, channels, layers_per_block, norm_num_groups,
                      gate_hidden_ratio)  # fmt: skip
        temb = channels[0] * 4
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        gated, ratio, groups = use_wavelet_gating, gate_hidden_ratio, norm_num_groups
        self.down_blocks = nn.ModuleList()
        out = channels[0]
        for i, ch in enumerate(channels):
            inp, out = out, ch
            self.down_blocks.append(WGDownBlock2D(inp, out, temb, layers_per_block, groups,
                                                  i < len(channels) - 1, gated, ratio))  # fmt: skip
        self.mid_block = WGMidBlock2D(channels[-1], temb, groups)
        self.up_blocks = nn.ModuleList()
        reversed_channels = channels[::-1]
        out = reversed_channels[0]
        for i, ch in enumerate(reversed_channels):
            prev, out = out, ch
            inp = reversed_channels[min(i + 1, len(channels) - 1)]
            self.up_blocks.append(WGUpBlock2D(inp, prev, out, temb, layers_per_block + 1, groups,
                                              i < len(channels) - 1, gated, ratio))  # fmt: skip
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels[0])
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, return_dict: bool = True
    ) -> UNet2DOutput | tuple:
        """The predicted noise eps(x_t, t) for `sample` x_t (N, C, H, W) at `timestep` (a number or one per image)."""
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
        elif timesteps.dim() == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=self.dtype))
        hidden = self.conv_in(sample)
        skips = (hidden,)
        for block in self.down_blocks:
            hidden, states = block(hidden, emb)
            skips += states
        hidden = self.mid_block(hidden, emb)
        for block in self.up_blocks:
            n = len(block.resnets)
            hidden = block(hidden, skips[-n:], emb)
            skips = skips[:-n]
        out = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        return UNet2DOutput(sample=out) if return_dict else (out,)


def _check_config(sample_size, in_channels, out_channels, channels, layers_per_block, groups, ratio) -> None:
    """ValueErrors naming the field and the fix."""
    if not channels or min(channels) < 1:
        raise ValueError(f"block_out_channels must list positive channel counts, got {channels}.")
    if any(c % groups for c in channels):
        raise ValueError(
            f"every block_out_channels entry must be divisible by norm_num_groups={groups}, got {channels}."
        )
    if not isinstance(sample_size, int) or sample_size < 1 or sample_size % 2 ** (len(channels) - 1):
        raise ValueError(
            f"sample_size {sample_size} must be divisible by 2^{len(channels) - 1} (one halving per level after the "
            f"first of block_out_channels={channels}); use fewer levels or another size."
        )
    if in_channels < 1 or out_channels < 1 or layers_per_block < 1:
        raise ValueError("in_channels, out_channels and layers_per_block must be positive integers.")
    if not ratio > 0:
        raise ValueError(f"gate_hidden_ratio must be positive, got {ratio}.")
