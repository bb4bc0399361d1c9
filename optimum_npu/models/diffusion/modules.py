"""Compiled components that stand in for Diffusers' and Transformers' modules inside a Diffusers pipeline.

Each is an ``nn.Module`` with the attributes the pipeline reads (``config``, ``dtype``, ``device``) and the
call the pipeline makes (``text_encoder(ids)``, ``unet(sample, t, encoder_hidden_states=...)``,
``vae.decode(z)``, ``vae.encode(x)``); the call runs the component's bucket graph on its
``DeviceEngine``. A graph is picked by the input shapes: every input's non-batch dimensions must be the
graph's, and the rows are run on the smallest compiled batch that holds them, padded (repeated rows) and
cut off after. Nothing here calls an HF module: these classes hold no weights.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from optimum_npu.device.engine import DeviceEngine
from optimum_npu.models.diffusion.stats import ComponentCall, DiffusionStats


class ComponentInputError(ValueError):
    """A component call whose shapes no compiled graph takes (the pipeline checks calls before this)."""


class NPUComponent(nn.Module):
    """One compiled component: its engine, graphs and the config of the module it replaces.

    Args:
        name: the component's folder (``unet``, ``text_encoder``, ``vae_decoder``...).
        engine: its bucket graphs loaded on its device.
        config: the replaced module's config (attribute access, as the pipeline reads it).
        dtype: the compute dtype.
        stats: the pipeline's stats, where each call is recorded.
        device_id: the simulated device it runs on.
    """

    def __init__(self, name: str, engine: DeviceEngine, config: Any, dtype: torch.dtype, stats: DiffusionStats,
                 device_id: int):
        super().__init__()
        self.npu_name, self.config, self._dtype, self._stats, self.device_id = name, config, dtype, stats, device_id
        self._engine = engine
        self._graphs = sorted(engine.graphs.values(), key=lambda g: g.inputs_of_kind("input")[0].shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Inputs and outputs live on the host; the graphs run on the simulated NPU."""
        return torch.device("cpu")

    def release(self) -> None:
        self._engine.release()

    def run_graph(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Runs the graph that takes ``inputs`` (same non-batch shapes, batch >= rows); outputs cut to the rows."""
        rows = next(iter(inputs.values())).shape[0]
        graph = next((g for g in self._graphs if {s.name for s in g.inputs_of_kind("input")} == set(inputs) and all(
            tuple(s.shape[1:]) == tuple(inputs[s.name].shape[1:]) and s.shape[0] >= rows
            for s in g.inputs_of_kind("input"))), None)
        if graph is None:
            raise ComponentInputError(self._not_compiled(inputs, rows))
        padded = {}
        for spec in graph.inputs_of_kind("input"):
            tensor = inputs[spec.name].to(torch.long if spec.name == "input_ids" else
                                          torch.float32 if spec.name == "timestep" else self._dtype)
            extra = spec.shape[0] - rows
            padded[spec.name] = torch.cat([tensor, tensor[-1:].expand(extra, *tensor.shape[1:])]) if extra else tensor
        result, record = self._engine.run(graph.name, padded, self.npu_name)
        outputs = result if isinstance(result, tuple) else (result,)
        self._stats.calls.append(ComponentCall(self.npu_name, graph.name, rows, graph.inputs_of_kind("input")[0]
                                               .shape[0], self.device_id, record.total_seconds))
        return tuple(out[:rows] for out in outputs)

    def _not_compiled(self, inputs: dict[str, torch.Tensor], rows: int) -> str:
        shapes = {name: list(t.shape) for name, t in inputs.items()}
        compiled = [{s.name: list(s.shape) for s in g.inputs_of_kind("input")} for g in self._graphs]
        return (f"{self.npu_name} was called with {shapes}, which no compiled graph takes (compiled: {compiled}); "
                "recompile with the resolution and batch_size this call needs")


class NPUTextEncoder(NPUComponent):
    """A CLIP or T5 text encoder: ``forward(input_ids)`` returns the HF model's output (``text_output``)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, **unused):
        if attention_mask is not None and not bool((attention_mask == 1).all()):
            raise ComponentInputError(f"{self.npu_name} was compiled without an attention mask (the pipelines pad "
                                      "prompts to the tokenizer's length and attend to every token); pass none")
        first, second, penultimate = self.run_graph({"input_ids": input_ids})
        layers = self.config.num_hidden_layers if hasattr(self.config, "num_hidden_layers") else self.config.num_layers
        hidden = (None,) * (layers - 1) + (penultimate, None)   # the penultimate layer is what pipelines read
        output = self.text_output(first, second, hidden)
        return output if return_dict is not False else output.to_tuple()

    def text_output(self, first: torch.Tensor, second: torch.Tensor, hidden: tuple) -> Any:
        """The HF output object of the graph's two outputs (in the model's own order) and hidden states."""
        raise NotImplementedError(f"{type(self).__name__} does not say which output class it returns")


class NPUDenoiser(NPUComponent):
    """A UNet or SD3 transformer: the pipeline's denoiser call, one graph call per denoising step."""

    #: The graph kind (``unet`` or ``transformer``) and the HF output class of the replaced module.
    kind: str
    output_class: type

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        features = self.config.get("projection_class_embeddings_input_dim")
        if features:   # SDXL checks its time ids against the size of the UNet's added-embedding input
            self.add_embedding = SimpleNamespace(linear_1=SimpleNamespace(in_features=features))

    def forward(self, sample: torch.Tensor | None = None, timestep: Any = None, encoder_hidden_states=None,
                added_cond_kwargs: dict | None = None, return_dict: bool = True, hidden_states=None,
                pooled_projections=None, **others):
        given = sorted(k for k, v in others.items() if v is not None)
        if given:
            raise ComponentInputError(f"{self.npu_name} got {given}, which the compiled graphs do not take; leave "
                                      "them out (IP-adapters, ControlNet residuals and LoRA scales are not compiled)")
        latents = sample if sample is not None else hidden_states
        rows = latents.shape[0]
        timestep = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(rows)
        if self.kind == "transformer":
            inputs = {"hidden_states": latents, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states,
                      "pooled_projections": pooled_projections}
        else:
            inputs = {"sample": latents, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states}
            if added_cond_kwargs:
                inputs.update(text_embeds=added_cond_kwargs["text_embeds"], time_ids=added_cond_kwargs["time_ids"])
        (noise,) = self.run_graph(inputs)
        return self.output_class(sample=noise) if return_dict else (noise,)


class NPUAutoencoder(nn.Module):
    """The VAE: ``decode`` on the compiled decoder, ``encode`` on the compiled encoder (each when compiled; a VAE
    compiled alone may hold both in one component)."""

    #: The HF output classes of ``decode`` / ``encode`` and the latent distribution.
    outputs: dict[str, type]

    def __init__(self, decoder: NPUComponent | None, encoder: NPUComponent | None, config: Any):
        super().__init__()
        self.decoder_part, self.encoder_part, self.config = decoder, encoder, config

    @property
    def _stats(self) -> DiffusionStats:
        return (self.decoder_part or self.encoder_part)._stats

    @property
    def dtype(self) -> torch.dtype:
        return (self.decoder_part or self.encoder_part).dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        if self.decoder_part is None:
            raise ComponentInputError("this VAE's decoder is not compiled; compile it with parts=['decoder', "
                                      "'encoder']")
        (image,) = self.decoder_part.run_graph({"latents": z})
        return self.outputs["decoder"](sample=image) if return_dict else (image,)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        if self.encoder_part is None:
            raise ComponentInputError("this VAE's encoder is not compiled (text-to-image artifacts leave it out); "
                                      "compile the image-to-image or inpainting pipeline class instead, or a VAE "
                                      "alone with parts=['decoder', 'encoder']")
        (moments,) = self.encoder_part.run_graph({"image": x})
        posterior = self.outputs["distribution"](moments)
        return self.outputs["encoder"](latent_dist=posterior) if return_dict else (posterior,)

    def release(self) -> None:
        for part in {id(p): p for p in (self.decoder_part, self.encoder_part) if p is not None}.values():
            part.release()
