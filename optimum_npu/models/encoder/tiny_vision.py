"""Tiny vision encoders and an image processor built in code (tests, examples; nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel, ViTImageProcessorPil

from optimum_npu.models.encoder.tasks import VISION_STEMS, task_of_architecture

#: The labels of the tiny classifiers (``config.id2label``), so pipelines print names.
LABELS = ("cat", "dog", "bird")
#: Model sizes: a few layers and channels, enough for every code path (ResNet: a strided stem, a max pool,
#: basic blocks with a projection shortcut, batch norms, the adaptive average pool).
CONFIGS = {
    "vit": dict(patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "resnet": dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
}


def build_vision(architecture: str, seed: int = 0, image_size: int = 32) -> PreTrainedModel:
    """A randomly initialised tiny ``architecture`` (``ViTForImageClassification``, ``ResNetForImageClassification``)
    in eval mode; its batch norms get non-trivial running statistics, so inference normalisation is exercised."""
    task_of_architecture(architecture)   # refuses a class the family does not compile
    model_type = next(t for t, stem in VISION_STEMS.items() if architecture.startswith(stem))
    sizes = {"image_size": image_size} if model_type == "vit" else {}
    config = transformers.AutoConfig.for_model(model_type, num_labels=len(LABELS), **CONFIGS[model_type], **sizes,
                                               id2label=dict(enumerate(LABELS)),
                                               label2id={name: i for i, name in enumerate(LABELS)})
    config.architectures = [architecture]
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config).eval()
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model


def build_image_processor(directory: str | Path, image_size: int = 32) -> ViTImageProcessorPil:
    """An image processor resizing to ``image_size`` and normalising (ImageNet mean/std), saved in ``directory``."""
    processor = ViTImageProcessorPil(size={"height": image_size, "width": image_size},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    processor.save_pretrained(directory)
    return processor


def save_vision(architecture: str, directory: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """``build_vision`` + its image processor saved as a checkpoint folder."""
    build_vision(architecture, seed, image_size).save_pretrained(directory)
    build_image_processor(directory, image_size)
    return Path(directory)
