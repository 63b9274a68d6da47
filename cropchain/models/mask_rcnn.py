"""Mask R-CNN for cropland field delineation, light enough to train on a CPU.

Follows the CESBIO study "Feedback on Mask R-CNN for croplands delineation" (torchvision's
``MaskRCNN``, one foreground class: cropland parcel), with the changes a CPU, small
Sentinel-2 fields and multi-channel inputs need:

- **Backbone**: ResNet-18 (not the study's ResNet-50), built with no weights (none can be
  downloaded at run time; the study's ImageNet weights would not fit 26 NDVI channels
  anyway), with trainable BatchNorm (torchvision's default frozen BatchNorm only makes
  sense with pretrained statistics), its first convolution replaced to take the variant's
  channel count, and only its stages 1-3 feeding a 64-channel FPN (strides 4, 8, 16 and a
  max-pooled level at 32). Stage 4 holds 8.4 M of ResNet-18's 11.2 M parameters and sees
  at stride 32 objects that are 11 px (1.3 ha) on average at 10 m: dropping it and narrowing
  the FPN from 256 to 64 channels cuts a training step on a CPU about 5-fold.
- **Heads**: box head MLP of 256 units (torchvision: 1024), mask head of 2 convolutions of
  64 channels (torchvision: 4 of 256), anchors of 8-128 px (torchvision: 32-512), since the
  fields are 3-40 px across at 10 m.
- **Unlabelled land** (``ignore_unlabelled``): the reference covers part of the land only, and
  the fields it leaves out look like the labelled ones. Optionally, an anchor or proposal that
  would be a negative example (background) is ignored (label -1, torchvision's "between
  thresholds") when less than ``min_labelled`` of its box lies on labelled pixels (the
  learning parcels, target key ``labelled``): the model then learns what is not a field only
  from boxes around and across the learning parcels (misplaced, partial or merged boxes),
  never from land whose truth is unknown.
- **Input normalization**: the model's transform subtracts the per-channel mean and divides
  by the per-channel standard deviation of the learning patches (``image_mean`` /
  ``image_std``, one value per channel of the variant), and scales the patch by ``upscale``
  (``min_size = max_size = upscale * patch size``: no resizing to torchvision's 800 px).

Inputs: a list of float32 tensors ``[C, H, W]`` (reflectance 0-1 or NDVI -1..1); outputs in
evaluation mode: per image ``boxes`` ``[N, 4]`` (x0, y0, x1, y1 in input pixels), ``scores``
``[N]`` (0-1), ``labels`` ``[N]`` (all 1) and ``masks`` ``[N, 1, H, W]`` (0-1 probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

#: hyper-parameters of :func:`build_mask_rcnn` and their defaults (config ``delineation.model``)
MODEL_DEFAULTS: dict[str, Any] = {
    "fpn_channels": 64,
    "representation_size": 256,
    "mask_channels": 64,
    "mask_layers": 2,
    "anchor_sizes": [8, 16, 32, 64],
    "box_detections_per_img": 100,
    "rpn_batch_size_per_image": 128,
    "box_batch_size_per_image": 128,
    "ignore_unlabelled": False,
    "min_labelled": 0.5,
}


def labelled_share(boxes: torch.Tensor, labelled: torch.Tensor, scale: float) -> torch.Tensor:
    """Share of each box's pixels that are labelled.

    Parameters
    ----------
    boxes : float ``[N, 4]`` (x0, y0, x1, y1) in the model's scaled input pixels.
    labelled : ``[H, W]`` (bool or 0/1) in patch pixels, 1 on labelled land.
    scale : model input px per patch px.

    Returns
    -------
    float32 ``[N]`` in 0-1 (boxes outside the patch: 0), from a summed-area table.
    """
    lab = labelled.to(torch.float32)
    h, w = lab.shape
    sat = torch.zeros((h + 1, w + 1), dtype=torch.float64)
    sat[1:, 1:] = lab.to(torch.float64).cumsum(0).cumsum(1)
    b = boxes.detach().to(torch.float64) / scale
    x0 = b[:, 0].floor().clamp(0, w).long()
    y0 = b[:, 1].floor().clamp(0, h).long()
    x1 = torch.maximum(b[:, 2].ceil().clamp(0, w).long(), x0)
    y1 = torch.maximum(b[:, 3].ceil().clamp(0, h).long(), y0)
    total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = ((x1 - x0) * (y1 - y0)).to(torch.float64)
    return torch.where(area > 0, total / area.clamp(min=1), torch.zeros_like(area)).to(torch.float32)


def _ignore_unlabelled(
    labels: torch.Tensor, boxes: torch.Tensor, target: dict[str, torch.Tensor], min_labelled: float
) -> None:
    """Set to -1 (ignored) the background labels (0) of boxes mostly off the labelled land, in place."""
    if "labelled" not in target:
        return
    share = labelled_share(boxes, target["labelled"], float(target["labelled_scale"]))
    labels[(labels == 0) & (share < min_labelled)] = -1


class IgnoringRPN(RegionProposalNetwork):
    """torchvision's RPN whose background anchors off the labelled land are ignored (module docstring)."""

    min_labelled: float = 0.5

    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched = super().assign_targets_to_anchors(anchors, targets)
        for lab, anc, t in zip(labels, anchors, targets, strict=True):
            _ignore_unlabelled(lab, anc, t, self.min_labelled)
        return labels, matched


class IgnoringRoIHeads(RoIHeads):
    """torchvision's RoI heads whose background proposals off the labelled land are ignored
    (module docstring)."""

    min_labelled: float = 0.5

    def select_training_samples(self, proposals, targets):
        self._targets = targets
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._targets = None

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        matched, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        for lab, prop, t in zip(labels, proposals, self._targets or [], strict=False):
            _ignore_unlabelled(lab, prop, t, self.min_labelled)
        return matched, labels


def build_mask_rcnn(
    n_channels: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    *,
    input_size: int,
    fpn_channels: int = 64,
    representation_size: int = 256,
    mask_channels: int = 64,
    mask_layers: int = 2,
    anchor_sizes: Sequence[int] = (8, 16, 32, 64),
    box_detections_per_img: int = 100,
    rpn_batch_size_per_image: int = 128,
    box_batch_size_per_image: int = 128,
    ignore_unlabelled: bool = False,
    min_labelled: float = 0.5,
) -> MaskRCNN:
    """Mask R-CNN with one foreground class (cropland parcel) on a ResNet-18 FPN, no weights.

    Parameters
    ----------
    n_channels : channels of the input (4 for ``bgrn`` / ``bgr_ndvi``, the number of dates
        for ``ndvi_stack``).
    image_mean, image_std : per-channel normalization (length ``n_channels``).
    input_size : side in px to which the transform scales each image (``upscale x patch
        size``); images are square patches during training.
    anchor_sizes : one anchor size (px, after scaling) per FPN level (stride 4, 8, 16, 32).
    ignore_unlabelled : ignore the negative anchors / proposals with less than
        ``min_labelled`` of their box on labelled land (targets then need ``labelled``
        ``[S, S]`` and ``labelled_scale``, see :func:`labelled_share`).

    Returns
    -------
    torchvision.models.detection.MaskRCNN with ``num_classes = 2`` (background, parcel).
    """
    if len(image_mean) != n_channels or len(image_std) != n_channels:
        raise ValueError(
            f"image_mean/image_std need {n_channels} values, got {len(image_mean)}/{len(image_std)}"
        )
    if len(anchor_sizes) != 4:
        raise ValueError(
            f"anchor_sizes needs 4 sizes (FPN levels at strides 4, 8, 16, 32), got {list(anchor_sizes)}"
        )
    body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    body.conv1 = nn.Conv2d(n_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2"},
        in_channels_list=[64, 128, 256],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(
        sizes=tuple((int(s),) for s in anchor_sizes), aspect_ratios=((0.5, 1.0, 2.0),) * 4
    )
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    mask_head = MaskRCNNHeads(fpn_channels, [mask_channels] * mask_layers, 1)
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=input_size,
        max_size=input_size,
        image_mean=[float(v) for v in image_mean],
        image_std=[float(v) for v in image_std],
        rpn_anchor_generator=anchors,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_head=box_head,
        box_predictor=_box_predictor(representation_size),
        box_detections_per_img=box_detections_per_img,
        box_batch_size_per_image=box_batch_size_per_image,
        mask_head=mask_head,
        mask_predictor=_mask_predictor(mask_channels),
    )
    if ignore_unlabelled:  # same modules and weights, only the choice of negative examples differs
        model.rpn.__class__ = IgnoringRPN
        model.roi_heads.__class__ = IgnoringRoIHeads
        model.rpn.min_labelled = model.roi_heads.min_labelled = float(min_labelled)
    return model


def _box_predictor(representation_size: int) -> nn.Module:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    return FastRCNNPredictor(representation_size, 2)


def _mask_predictor(mask_channels: int) -> nn.Module:
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    return MaskRCNNPredictor(mask_channels, mask_channels, 2)


def set_input_size(model: MaskRCNN, size: int) -> None:
    """Scale inputs so that their shorter side is ``size`` px (``upscale x window`` at inference)."""
    model.transform.min_size = (int(size),)
    model.transform.max_size = int(size)
