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

__all__ = ["SiameseEmbedder"]


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
    ):
        super().__init__()
        if len(input_size) != 2 or min(input_size) < 32:
            raise ValueError(f"input_size has to be (height, width), each at least 32, but is {tuple(input_size)}")
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
        if not self.config.flip_invariant:
            return F.normalize(self.backbone(images), dim=1)
        n = images.shape[0]
        views = torch.cat([images, images.flip(-2), images.flip(-1), images.flip(-2, -1)])
        return F.normalize(self.backbone(views).view(4, n, -1).sum(0), dim=1)

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
        """A short hash of the weights; an index records it to refuse another network.

        Floating tensors are hashed as float16, so the same weights saved in fp32 or fp16
        give the same fingerprint.
        """
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            tensor = tensor.detach().cpu()
            if tensor.is_floating_point():
                tensor = tensor.to(torch.float16)
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]
