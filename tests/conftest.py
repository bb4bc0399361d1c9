"""Shared fixtures: tiny checkpoints built in code, compiled once per session, and their eager references.

Nothing is downloaded (ARCHITECTURE.md §8). Every compiled model goes through the full artifact
path: ``from_pretrained(checkpoint, export=True)`` -> ``save_pretrained(dir)`` ->
``from_pretrained(dir)``; tests use the *reloaded* model, so they also cover the artifact round trip.

Compiles are the expensive part (~1-2 s each), so they are cached for the session by their
(architecture, model overrides, compile knobs) key: a fixture that asks for a configuration
already compiled by another test module gets the same model back.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from marks import first_fast

from optimum_npu.device.device import DEFAULT_REGISTRY
from optimum_npu.models.decoder import NPUModelForCausalLM
from optimum_npu.models.tiny import build_tokenizer, save_causal_lm

from encoder_fixtures import encoders  # noqa: E402,F401  (session fixture: tiny encoders compiled once)
from seq2seq_fixtures import seq2seq_models, whisper  # noqa: E402,F401  (session: tiny T5, BART, Whisper)
from vision_fixtures import vision_models  # noqa: E402,F401  (session fixture: tiny ViT / ResNet)
from moe_fixtures import moe_runs  # noqa: E402,F401  (MoE: session fixture, tiny MoE models compiled once)
from diffusion_fixtures import booby_trapped, sd_pipeline  # noqa: E402,F401  (diffusion: the tiny SD pipeline compiled once)

ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"]

#: The compile envelope every test model shares (variants override single knobs).
NPU_CONFIG = {"max_seq_len": 128, "batch_size": 4, "decoder_batch_sizes": [1, 2, 4], "prefill_chunk_size": 16}


@dataclass(frozen=True)
class CompiledPair:
    """A compiled-and-reloaded NPU model and the same checkpoint in eager Transformers."""

    architecture: str
    checkpoint: Path
    artifact: Path
    model: NPUModelForCausalLM
    ref: PreTrainedModel
    npu_config: dict[str, Any]

    def __repr__(self) -> str:  # keeps pytest ids and failure output short
        return f"CompiledPair({self.architecture}, {self.npu_config})"


def _key(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def pytest_configure(config):
    """Under pytest-xdist, each worker gets its share of the cores as torch intra-op threads (one each for
    ``-n 2`` on two cores), and so do the subprocesses it starts (``OMP_NUM_THREADS``). Two workers with two
    threads each oversubscribe the cores: the tiny models' ops gain nothing from a second thread, and waiting
    threads spin, which cost the suite about half of its CPU time on denoising loops."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory) -> Callable[..., Path]:
    """``make_checkpoint(architecture, **overrides)`` -> a saved tiny HF checkpoint (seed 0), built once per key."""
    cache: dict[str, Path] = {}

    def make(architecture: str, **overrides) -> Path:
        key = _key({"architecture": architecture, **overrides})
        if key not in cache:
            path = tmp_path_factory.mktemp(f"ckpt-{architecture}")
            cache[key] = save_causal_lm(path, architecture, size="tiny", seed=0, **overrides)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def make_compiled(make_checkpoint, tmp_path_factory) -> Callable[..., CompiledPair]:
    """``make_compiled(architecture, npu_overrides=None, **model_overrides)`` -> a CompiledPair, compiled once per key.

    The NPU model is compiled from the checkpoint, saved with ``save_pretrained`` and reloaded
    from the saved directory. The eager reference is loaded in the compiled dtype.
    """
    cache: dict[str, CompiledPair] = {}

    def make(architecture: str, npu_overrides: dict[str, Any] | None = None, **model_overrides) -> CompiledPair:
        npu_config = {**NPU_CONFIG, **(npu_overrides or {})}
        key = _key({"architecture": architecture, "model": model_overrides, "npu": npu_config})
        if key not in cache:
            checkpoint = make_checkpoint(architecture, **model_overrides)
            compiled = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=dict(npu_config))
            artifact = tmp_path_factory.mktemp(f"npu-{architecture}") / "artifact"
            compiled.save_pretrained(artifact)
            compiled.release()  # free the exported copy's simulated-device memory; the reloaded one is used
            model = NPUModelForCausalLM.from_pretrained(artifact)
            dtype = getattr(torch, npu_config.get("dtype", "float32"))
            ref = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).eval()
            cache[key] = CompiledPair(architecture, checkpoint, artifact, model, ref, npu_config)
        return cache[key]

    yield make
    for pair in cache.values():
        pair.model.release()


@pytest.fixture(scope="session", params=first_fast(ARCHITECTURES))
def compiled(request, make_compiled) -> CompiledPair:
    """Every registered architecture, compiled once with NPU_CONFIG (the reloaded artifact + eager reference)."""
    return make_compiled(request.param)


@pytest.fixture(scope="session")
def llama(make_compiled) -> CompiledPair:
    """The Llama model of ``compiled`` (same cache entry: no extra compile)."""
    return make_compiled("LlamaForCausalLM")


@pytest.fixture(scope="session", autouse=True)
def _import_objects_frozen():
    """Moves what exists before the first test (modules of torch, Transformers, the library and the tests) out
    of the garbage collector's reach: a full ``gc.collect()`` then walks only what tests create (0.02 s
    instead of ~0.5 s), both the explicit ones (leak checks) and Python's automatic ones. Objects created
    later, models included, are collected as usual."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session", autouse=True)
def _every_model_released():
    """Device reservations do not outlive the session: fixtures release the models they share, tests release
    theirs in ``finally`` (or drop them); anything still reserved at the end is a leak."""
    yield
    gc.collect()
    leaked = {d.name: d.memory.by_category() for d in DEFAULT_REGISTRY.devices if d.memory.used}
    assert not leaked, f"models still hold device memory after the session: {leaked}"
    DEFAULT_REGISTRY.reset()


@pytest.fixture
def no_graph_runs(model, monkeypatch) -> list:
    """Makes any graph call of the test module's ``model`` fixture fail loudly; the list records attempts."""
    calls = []

    def refuse(graph_name, *args, **kwargs):
        calls.append(graph_name)
        raise AssertionError(f"graph {graph_name} ran although the request is invalid")

    monkeypatch.setattr(model._runtime.engine, "run", refuse)
    return calls


@pytest.fixture(scope="session", autouse=True)
def _isolated_compile_cache(tmp_path_factory):
    """Tests never read or fill the user's ~/.cache/optimum-npu (subprocesses inherit the variable).

    Under pytest-xdist (``-n 2``) the workers share one cache in the run's common temporary folder, so a model
    one worker compiled is a cache hit for the other (entries are written to a temporary folder and renamed
    into place: a reader sees a whole entry or none, and when both compile the same key the first one stays).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "compile-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("compile-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("OPTIMUM_NPU_CACHE", str(cache))
    patch.delenv("OPTIMUM_NPU_CACHE_REPO", raising=False)
    yield
    patch.undo()
