"""Image decoders of the SGQN and SMG baselines: from an embedding vector back to frame-sized maps.

Both methods decode with the same body: a Linear layer to the size of the conv trunk's output,
reshaped to that feature map, ReLU, a 3x3 conv to 128 channels, nearest upsampling to half the
frame size, ReLU, a 3x3 conv to 64 channels, nearest upsampling to the frame size, ReLU (all convs
padded by 1). With the paper's network (trunk map 32x21x21, 84 px frames) the two upsamplings are
exact doublings (21 -> 42 -> 84); other sizes upsample to the frame size directly instead of
assuming a factor of 4. The heads are 3x3 convs on the 64 channels. PyTorch's default
initialisation throughout (the official decoders do not apply the orthogonal init).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class DecoderBody(nn.Module):
    """``[N, in_dim] -> [N, 64, H, W]``: Linear to ``map_shape``, ReLU, then two conv + nearest-upsampling
    stages (to H/2 then H) each followed by ReLU."""

    def __init__(self, in_dim: int, map_shape: tuple[int, int, int], frame_size: tuple[int, int],
                 channels: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        self.map_shape = tuple(map_shape)
        self.frame_size = tuple(frame_size)
        self.out_channels = channels[1]
        self.linear = nn.Linear(in_dim, math.prod(map_shape))
        self.conv1 = nn.Conv2d(map_shape[0], channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_size
        x = F.relu(self.linear(z).view(-1, *self.map_shape))
        x = F.relu(F.interpolate(self.conv1(x), size=(h // 2, w // 2), mode="nearest"))
        return F.relu(F.interpolate(self.conv2(x), size=(h, w), mode="nearest"))


class AttributionDecoder(nn.Module):
    """SGQN's saliency predictor head: ``(z, action) -> logits [N, C, H, W]`` (C = the observation's channels)."""

    def __init__(self, latent_dim: int, action_dim: int, map_shape, frame_size, out_channels: int) -> None:
        super().__init__()
        self.body = DecoderBody(latent_dim + action_dim, map_shape, frame_size)
        self.head = nn.Conv2d(self.body.out_channels, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([z, action], dim=1)))


class ImageDecoder(nn.Module):
    """SMG's background decoder: ``z -> 255 * sigmoid(conv) [N, 3, H, W]`` (one RGB frame per vector)."""

    def __init__(self, latent_dim: int, map_shape, frame_size) -> None:
        super().__init__()
        self.body = DecoderBody(latent_dim, map_shape, frame_size)
        self.image = nn.Conv2d(self.body.out_channels, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 255.0 * torch.sigmoid(self.image(self.body(z)))


class ImageMaskDecoder(ImageDecoder):
    """SMG's foreground decoder: ``z -> (255 * sigmoid(image conv) [N, 3, H, W], sigmoid(mask conv) [N, 1, H, W])``."""

    def __init__(self, latent_dim: int, map_shape, frame_size) -> None:
        super().__init__(latent_dim, map_shape, frame_size)
        self.mask = nn.Conv2d(self.body.out_channels, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(z)
        return 255.0 * torch.sigmoid(self.image(x)), torch.sigmoid(self.mask(x))
