"""The model card (``README.md``) pushed with a compiled artifact.

Hub metadata (YAML front matter): ``base_model``, ``library_name: optimum-npu``, ``tags``
and ``pipeline_tag``. The body states the compile configuration, the target NPU spec, the
compiled graphs, the device memory per category and the simulated speed, and says how the
figures were obtained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from optimum_npu.device.memory import format_bytes
from optimum_npu.compile.artifact import ArtifactError, read_manifest
from optimum_npu.schema import MANIFEST_FILE, NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict, load_json



@dataclass(frozen=True)
class CardSection:
    """What a model family adds to the card of its artifacts (from its registry entry).

    Attributes:
        pipeline_tag: the Hub pipeline tag (``text-generation``, ``image-text-to-text``...).
        usage: the markdown ``## Use`` section (a runnable snippet for the repository).
        runtime_options: knobs chosen at load time (listed apart from the compile knobs).
    """

    pipeline_tag: str
    usage: str
    runtime_options: tuple[str, ...] = ()

_SPEC_ROWS = (("dram_bytes", "DRAM", format_bytes), ("dram_bandwidth", "DRAM bandwidth", lambda v: f"{v / 1e9:g} GB/s"),
              ("sram_bytes", "on-chip SRAM", format_bytes),
              ("link_bandwidth", "device link", lambda v: f"{v / 1e9:g} GB/s"),
              ("host_link_bandwidth", "host link", lambda v: f"{v / 1e9:g} GB/s"),
              ("devices_per_node", "devices per node", str))


def build_model_card(artifact_dir: str | Path, section: CardSection, *, repo_id: str | None = None,
                     base_model: str | None = None, figures: dict[str, Any] | None = None) -> ModelCard:
    """The model card of a compiled artifact.

    Args:
        artifact_dir: a compiled artifact (its ``npu_config.json``, ``config.json`` and manifest are read).
        section: the family's part (pipeline tag, usage snippet, runtime options).
        repo_id: the repository it is pushed to (named in the title).
        base_model: Hub id of the checkpoint it was compiled from (``base_model`` metadata).
        figures: from ``measure_figures`` (memory and simulated speed); None omits those sections.

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the README.md text.
    """
    root = Path(artifact_dir)
    stored = expect_dict(load_json(root / NPU_CONFIG_FILE, error=ArtifactError), NPU_CONFIG_FILE, ArtifactError)
    hf_config = expect_dict(load_json(root / "config.json", error=ArtifactError), "config.json", ArtifactError)
    manifest = {"files": read_manifest(root)}
    spec = stored["npu_spec"]
    tags = ["optimum-npu", "npu", "compiled", f"npu-{spec['name']}", hf_config.get("model_type", "unknown")]
    data = ModelCardData(base_model=base_model, library_name="optimum-npu", tags=tags,
                         pipeline_tag=section.pipeline_tag)
    title = repo_id or stored.get("architecture", "model")
    sections = [
        f"# {title}\n\n{stored.get('architecture')} compiled by optimum-npu for the "
        f"`{spec['name']}` NPU" + (f" from [{base_model}](https://huggingface.co/{base_model})." if base_model
                                   else ".") + " The compile knobs are fixed: loading does not recompile.",
        section.usage,
        _compile_section(stored, section.runtime_options),
        _spec_section(spec, stored.get("dtype")),
        _memory_section(figures),
        _speed_section(figures),
        _integrity_section(stored, manifest),
    ]
    body = "\n\n".join(s for s in sections if s)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def _compile_section(stored: dict[str, Any], runtime_options: tuple[str, ...]) -> str:
    skip = {"npu_spec", "graphs", "library_version", "format_version", "torch_version", "family", "architecture",
            "submodules", *runtime_options}
    rows = [f"| `{k}` | `{json.dumps(v)}` |" for k, v in stored.items() if k not in skip]
    graphs = ", ".join(f"`{g}`" for g in stored.get("graphs", [])) or "one set per submodule (see the knobs)"
    runtime = ", ".join(f"`{k}`" for k in runtime_options)
    return ("## Compile configuration\n\n| knob | value |\n|---|---|\n" + "\n".join(rows)
            + f"\n\nCompiled graphs: {graphs}. Runtime options ({runtime}) are chosen at load time.")


def _spec_section(spec: dict[str, Any], dtype: str | None) -> str:
    rows = [f"| {label} | {fmt(spec[key])} |" for key, label, fmt in _SPEC_ROWS if key in spec]
    peak = spec.get("peak_flops", {})
    if dtype in peak:
        rows.insert(0, f"| peak {dtype} compute | {peak[dtype] / 1e12:g} TFLOP/s |")
    source = f"\n\nSource of the figures: {spec['source']}" if spec.get("source") else ""
    return (f"## Target NPU: `{spec['name']}`\n\n| | |\n|---|---|\n" + "\n".join(rows) + source)


def _memory_section(figures: dict[str, Any] | None) -> str:
    if not figures:
        return ""
    memory, capacity = figures["memory_bytes"], figures["memory_capacity_bytes"]
    total = sum(memory.values())
    rows = [f"| {category} | {format_bytes(n)} |" for category, n in memory.items()]
    rows.append(f"| **total** | **{format_bytes(total)}** ({100 * total / max(capacity, 1):.2f}% of "
                f"{format_bytes(capacity)}) |")
    return ("## Device memory (one device)\n\nWhat loading this artifact reserves on one simulated "
            f"`{figures['spec']}` device: the compiler's memory plan as the device accounts it.\n\n"
            "| category | bytes |\n|---|---|\n" + "\n".join(rows))


def _speed_section(figures: dict[str, Any] | None) -> str:
    if not figures or not figures.get("runs"):
        return ""
    rows = [f"| {r['batch']} | {r['ttft_ms']:.3f} | {r['decode_ms_per_token']:.3f} | {r['tokens_per_s']:.1f} |"
            for r in figures["runs"]]
    return ("## Simulated speed\n\n"
            f"Greedy `generate()` on the simulated `{figures['spec']}` NPU with a synthetic prompt of "
            f"{figures['prompt_tokens']} tokens per sequence and {figures['new_tokens']} new tokens. Times come "
            "from optimum-npu's cost model (roofline per operator from the compiled static shapes), not from "
            "a measurement on hardware.\n\n| batch | TTFT (ms) | decode (ms/step) | decode tokens/s |\n"
            "|---|---|---|---|\n" + "\n".join(rows))


def _integrity_section(stored: dict[str, Any], manifest: dict[str, Any]) -> str:
    rows = [f"| `{path}` | {entry['size']} | `{entry['sha256'][:16]}…` |"
            for path, entry in manifest["files"].items()]
    return ("## Artifact\n\n"
            f"optimum-npu {stored.get('library_version')}, artifact format {stored.get('format_version')}, "
            f"torch {stored.get('torch_version')}. Loading checks every file against `{MANIFEST_FILE}` and "
            "refuses a missing, truncated or modified file.\n\n| file | bytes | sha256 |\n|---|---|---|\n"
            + "\n".join(rows))
