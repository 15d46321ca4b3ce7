"""The Siamese re-identification network (DESIGN §9): image → L2-normalised embedding.

One shared CNN embeds every image; two images of the same study (same patient) should get
embeddings with a high cosine similarity, images of different studies a low one. It is
trained with a metric-learning loss (:mod:`mammosynth.training.train_siamese`) and used
by the privacy gate (:class:`mammosynth.privacy.checker.PrivacyChecker`) and the audit.

The backbone is MONAI's 2-D ResNet (no torchvision). Images of any size are resized
internally to ``input_size`` (default 128×96, half of the 256×192 prepared frames) with an
antialiased bilinear filter, so the same network embeds 256×192 or 512×384 data; the
resolution an index was built at is recorded by the index, not by the network.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from monai.networks.nets import ResNet

__all__ = ["SIAMESE_PRESETS", "SiameseEmbedder", "check_zoom_factors", "zoom_about_centre"]

#: Named sizes (constructor arguments). ``bundled`` is the 2-CPU network (the ``train-siamese`` defaults);
#: ``tiny`` is for tests; ``vindr-512`` / ``vindr-1024`` are ResNet-18s for VinDr-Mammo on GPUs (embedding at
#: half the frame size). The embedding stays 128 wide: a 1 M-image index is then 512 MB of float32.
SIAMESE_PRESETS: dict[str, dict] = {
    "bundled": {"input_size": (128, 96), "block_inplanes": (16, 32, 64, 128), "layers": (1, 1, 1, 1),
                "embedding_dim": 128},
    "tiny": {"input_size": (64, 48), "block_inplanes": (4, 4, 8, 8), "layers": (1, 1, 1, 1), "embedding_dim": 32},
    "vindr-512": {"input_size": (256, 192), "block_inplanes": (64, 128, 256, 512), "layers": (2, 2, 2, 2),
                  "embedding_dim": 128},
    "vindr-1024": {"input_size": (384, 288), "block_inplanes": (64, 128, 256, 512), "layers": (2, 2, 2, 2),
                   "embedding_dim": 128},
}
SIAMESE_PRESETS["device-512"] = SIAMESE_PRESETS["bundled"]
SIAMESE_PRESETS["vindr-tiny"] = SIAMESE_PRESETS["tiny"]



class SiameseEmbedder(ModelMixin, ConfigMixin):
    """A 2-D ResNet that maps a mammogram to a unit-length embedding.

    Args:
        embedding_dim: size of the embedding.
        input_size: ``(height, width)`` the images are resized to before the CNN.
        block_inplanes: channels of the four ResNet stages.
        layers: residual blocks per stage.
        flip_invariant: sum the CNN features of the image and its vertical, horizontal and
            double flips before normalising, so a flipped copy gets exactly the same
            embedding (4 × the compute; flips are the one disguise a CNN with global pooling
            cannot learn to see through from a few thousand images).
        zoom_tta: extra zoom factors (e.g. ``(0.9, 1.1)``) whose CNN features are added to the
            image's own before normalising: the image is zoomed about its centre within the
            same ``input_size`` frame (cropped when enlarged, padded with background when
            shrunk). Test-time augmentation: costs ``1 + len(zoom_tta)`` × the compute and makes
            the embedding steadier under the small scale changes between views and breasts.
            ``build-index --zoom-tta`` sets it; it is part of :meth:`fingerprint`.
        trained_augment: the disguise ranges the network was trained to see through
            (:class:`~mammosynth.privacy.augment.AugmentConfig` as a dict; ``None``: its defaults).
            A record, not a setting: the audit's battery reports each family against it.

    ``forward`` takes float images ``(N, 1, H, W)`` in [-1, 1] (see
    :func:`mammosynth.data.dataset.to_unit_range`) and returns ``(N, embedding_dim)``
    rows of L2 norm 1; :meth:`embed_frames` does the same for uint16 frames, batched and
    without gradients.
    """

    @register_to_config
    def __init__(
        self,
        embedding_dim: int = 128,
        input_size: Sequence[int] = (128, 96),
        block_inplanes: Sequence[int] = (16, 32, 64, 128),
        layers: Sequence[int] = (1, 1, 1, 1),
        flip_invariant: bool = True,
        zoom_tta: Sequence[float] = (),
        trained_augment: dict | None = None,
    ):
        super().__init__()
        if len(input_size) != 2 or min(input_size) < 32:
            raise ValueError(f"input_size has to be (height, width), each at least 32, but is {tuple(input_size)}")
        check_zoom_factors(zoom_tta)
        if len(block_inplanes) != 4 or len(layers) != 4:
            raise ValueError(
                f"block_inplanes and layers need 4 entries (one per ResNet stage) but have "
                f"{len(block_inplanes)} and {len(layers)}"
            )
        self.backbone = ResNet(
            block="basic",
            layers=list(layers),
            block_inplanes=list(block_inplanes),
            spatial_dims=2,
            n_input_channels=1,
            conv1_t_size=7,
            conv1_t_stride=2,
            num_classes=embedding_dim,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` float images in [-1, 1] → ``(N, embedding_dim)`` unit vectors."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images have to be (N, 1, H, W) but are {tuple(images.shape)}")
        size = tuple(int(s) for s in self.config.input_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        n = images.shape[0]
        views = torch.cat([images, *(zoom_about_centre(images, float(z)) for z in self.config.zoom_tta)])
        if self.config.flip_invariant:
            views = torch.cat([views, views.flip(-2), views.flip(-1), views.flip(-2, -1)])
        return F.normalize(self.backbone(views).view(-1, n, self.config.embedding_dim).sum(0), dim=1)

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint16 frames ``(N, H, W)`` → float32 embeddings ``(N, embedding_dim)`` (eval mode).

        The model is put in eval mode for the call and restored afterwards.
        """
        from ..data.dataset import to_unit_range

        if frames.ndim != 3:
            raise ValueError(f"frames have to be (N, H, W) but are {tuple(frames.shape)}")
        was_training = self.training
        self.eval()
        out = []
        try:
            for start in range(0, len(frames), batch_size):
                batch = to_unit_range(np.asarray(frames[start : start + batch_size])[:, None])
                out.append(self(batch.to(self.device, self.dtype)).float().cpu().numpy())
        finally:
            self.train(was_training)
        dim = int(self.config.embedding_dim)
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    def fingerprint(self) -> str:
        """A short hash of the weights (and of ``zoom_tta`` when set); an index records it to
        refuse another network or other embedding settings.

        Floating tensors are hashed as float16, so the same weights saved in fp32 or fp16
        give the same fingerprint.
        """
        digest = hashlib.sha256()
        if self.config.zoom_tta:
            digest.update(repr([round(float(z), 6) for z in self.config.zoom_tta]).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            tensor = tensor.detach().cpu()
            if tensor.is_floating_point():
                tensor = tensor.to(torch.float16)
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def check_zoom_factors(factors: Sequence[float]) -> list[float]:
    """``zoom_tta`` factors as floats; each has to lie in [0.5, 2] (else ``ValueError``)."""
    values = [float(z) for z in factors]
    if any(not 0.5 <= z <= 2.0 for z in values):
        raise ValueError(f"zoom_tta factors have to lie in [0.5, 2], but are {tuple(values)}")
    return values


def zoom_about_centre(images: torch.Tensor, factor: float, background: float = -1.0) -> torch.Tensor:
    """Zoom ``(N, C, H, W)`` images by ``factor`` about their centre, keeping ``H×W``: an enlarged
    image is cropped, a shrunk one padded with ``background`` (air in [-1, 1] units)."""
    h, w = images.shape[-2:]
    zh, zw = max(1, round(h * factor)), max(1, round(w * factor))
    if (zh, zw) == (h, w):
        return images
    zoomed = F.interpolate(images, size=(zh, zw), mode="bilinear", antialias=True, align_corners=False)
    if factor > 1:
        top, left = (zh - h) // 2, (zw - w) // 2
        return zoomed[..., top : top + h, left : left + w]
    out = images.new_full(images.shape, background)
    top, left = (h - zh) // 2, (w - zw) // 2
    out[..., top : top + zh, left : left + zw] = zoomed
    return out
