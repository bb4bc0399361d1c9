"""Compile a vision-language model: the visual encoder and the language model as two submodules of one artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedModel

from optimum_npu.compile.artifact_write import write_atomically
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.decoder.export import compile_decoder
from optimum_npu.models.registry import Architecture
from optimum_npu.models.vlm.files import PROCESSOR_FILES, SUBMODULE_DIRS
from optimum_npu.models.vlm.npu_config import NPUVLMConfig
from optimum_npu.models.vlm.visual_export import compile_visual
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, MANIFEST_FILE, NPU_CONFIG_FILE
from optimum_npu.version import __version__


def compile_vlm(hf_model: PreTrainedModel, arch: Architecture, config: NPUVLMConfig, target: Path,
                processor_dir: Path | None = None) -> Path:
    """Writes the artifact of ``hf_model`` atomically to ``target``: ``visual/`` (one graph per patch bucket),
    ``language_model/`` (the decoder's graphs), configs, processor files and one manifest over all.

    ``config`` must already be resolved against the model (``NPUModelForImageTextToText._resolve``).
    """

    def fill(root: Path) -> None:
        compile_visual(hf_model, config.visual, root / SUBMODULE_DIRS["visual"])
        compile_decoder(hf_model, arch, config.language_model, root / SUBMODULE_DIRS["language_model"])
        (root / SUBMODULE_DIRS["language_model"] / MANIFEST_FILE).unlink()  # the top-level manifest covers it
        hf_model.config.save_pretrained(root)
        (hf_model.generation_config or GenerationConfig.from_model_config(hf_model.config)).save_pretrained(root)
        for name in PROCESSOR_FILES if processor_dir else ():
            if (Path(processor_dir) / name).is_file():
                shutil.copy2(Path(processor_dir) / name, root / name)
        document = {"architecture": arch.name, "family": arch.family, **config.to_dict(),
                    "submodules": SUBMODULE_DIRS, "npu_spec": resolve_spec(config.npu).to_dict(),
                    "library_version": __version__, "format_version": ARTIFACT_FORMAT_VERSION,
                    "torch_version": torch.__version__}
        (root / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))

    return write_atomically(target, fill)
