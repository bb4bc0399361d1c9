"""Diffusers components as registry families: each compiled, saved and loaded alone with its own config class,
and a compiled pipeline's component folder loaded alone. Outputs equal the eager Diffusers module within 1e-4
while every Diffusers / Transformers forward is booby-trapped."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from optimum_npu import (NPUAutoencoderKL, NPUDiffusionCLIPTextModel, NPUStableDiffusionPipeline, NPUT5EncoderModel,
                         NPUUNet2DConditionModel, NPUVAEConfig)
from optimum_npu.compile.artifact import ArtifactError, write_manifest
from optimum_npu.models.auto import NPUAutoModel
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.diffusion.component_models import NPUComponentModel
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.families import FAMILIES

from hub_fixtures import hub, hub_server  # noqa: E402,F401  (fixtures: a local Hub for the push test)


#: The tiny pipeline's UNet alone: its VAE's scale (2) and tokenizer length (16) given, unguided batch 2.
UNET_CONFIG = {"resolutions": [[32, 32]], "batch_size": 2, "guidance": [False], "vae_scale_factor": 2,
               "text_tokens": 16}


def _unet_inputs(rows: int, height: int, width: int, tokens: int = 16, context: int = 32):
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(rows, 4, height // 2, width // 2, generator=generator), torch.tensor(7.0),
            torch.randn(rows, tokens, context, generator=generator))


def test_component_entries_are_families_with_their_config_classes():
    entries = {name: FAMILIES[name] for name in ("diffusion_unet", "diffusion_transformer", "diffusion_vae",
                                                 "diffusion_text_encoder")}
    for name, family in entries.items():
        assert issubclass(family.model_class, NPUComponentModel) and family.model_class.family_name == name
        assert family.placement(3, True) == {"device": 3, "profile": True}
        family.config_class.coerce(family.export_config({"batch_size": 2}, {}))   # a valid config of its class
    assert entries["diffusion_vae"].config_class is NPUVAEConfig
    assert "tensor_parallel_size" in entries["diffusion_unet"].config_class.knobs()
    assert "tensor_parallel_size" not in entries["diffusion_text_encoder"].config_class.knobs()


@pytest.mark.parametrize("npu_config,match", [
    ({"unet": {"batch_size": 0}}, r"npu_config\['unet'\]: batch_size=0 is invalid: give the images per call"),
    ({"vae": {"batch_size": 2}}, r"npu_config\['vae'\] has unknown knobs \['batch_size'\]; a vae entry takes "
                                 r"\['device'\]"),
    ({"text_encoder": {"device": -1}}, r"npu_config\['text_encoder'\]: device=-1 is invalid"),
    ({"transformer": {"guidance": "yes"}}, r"npu_config\['transformer'\]: guidance='yes' is invalid"),
])
def test_nested_entry_errors_name_the_component_and_knob(npu_config, match):
    with pytest.raises(NPUConfigError, match=match):
        NPUDiffusionConfig.coerce(npu_config)


def test_component_config_errors_name_the_class_and_knob(sd_pipeline):
    _, eager, _ = sd_pipeline
    with pytest.raises(NPUConfigError, match=r"NPUAutoencoderKL npu_config: parts=\['middle'\] is invalid: give "
                                             r"\['decoder'\]"):
        NPUAutoencoderKL.from_model(eager.vae, {"parts": ["middle"]}, compile_cache=False)
    with pytest.raises(NPUConfigError, match=r"NPUDiffusionCLIPTextModel npu_config has unknown knobs "
                                             r"\['max_lenght'\]; a "
                                             r"NPUTextEncoderConfig takes .*'max_length'"):
        NPUDiffusionCLIPTextModel.from_model(eager.text_encoder, {"max_lenght": 8}, compile_cache=False)
    with pytest.raises(ValueError, match=r"NPUT5EncoderModel compiles \['T5EncoderModel'\], not CLIPTextModel"):
        NPUT5EncoderModel.from_model(eager.text_encoder, compile_cache=False)


def test_pipeline_unet_folder_loads_alone_and_equals_the_pipeline_component(sd_pipeline, booby_trapped):
    npu, eager, root = sd_pipeline
    unet = NPUUNet2DConditionModel.from_pretrained(root / "unet")
    try:
        assert unet.npu_config.resolutions == ((32, 32), (32, 48)) and unet.npu_config.guidance == (True, False)
        sample, timestep, context = _unet_inputs(4, 32, 48)
        alone = unet(sample, timestep, encoder_hidden_states=context).sample
        inside = npu.unet(sample, timestep, encoder_hidden_states=context).sample
        assert torch.equal(alone, inside) and alone.abs().max() > 0
        assert [c.graph for c in unet.npu_stats.calls] == ["unet_b4_h32_w48"]
    finally:
        unet.release()
    auto = NPUAutoModel.from_pretrained(root / "vae_decoder")   # the family comes from the folder's document
    try:
        assert type(auto) is NPUAutoencoderKL
        assert auto.npu_graphs == ["vae_decoder_b2_h32_w32", "vae_decoder_b2_h32_w48"]
        with pytest.raises(ValueError, match="encoder is not compiled"):
            auto.encode(torch.zeros(2, 3, 32, 32))
    finally:
        auto.release()


@pytest.fixture(scope="module")
def unet_alone(sd_pipeline, tmp_path_factory):
    """(the session pipeline's UNet compiled alone from its Diffusers folder, saved and reloaded on npu:1; the
    eager pipeline saved as a Diffusers folder)."""
    _, eager, _ = sd_pipeline
    root = tmp_path_factory.mktemp("unet-alone")
    eager.save_pretrained(root / "sd")
    compiled = NPUUNet2DConditionModel.from_pretrained(root / "sd" / "unet", export=True, compile_cache=False,
                                                       npu_config=UNET_CONFIG)
    compiled.save_pretrained(root / "unet-npu")
    compiled.release()
    unet = NPUUNet2DConditionModel.from_pretrained(root / "unet-npu", npu_config={"device": 1})
    yield unet, root
    unet.release()


def test_unet_alone_compiles_saves_loads_and_equals_eager(sd_pipeline, unet_alone, monkeypatch):
    _, eager, _ = sd_pipeline
    unet, root = unet_alone
    sample, timestep, context = _unet_inputs(2, 32, 32)
    with torch.no_grad():
        reference = eager.unet(sample, timestep, encoder_hidden_states=context).sample
    monkeypatch.setattr(type(eager.unet), "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    out = unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
    assert (out - reference).abs().max() < 1e-4 and reference.abs().max() > 0
    assert set(unet.npu_stats.memory) == {1} and unet.npu_stats.seconds > 0
    assert unet.npu_graphs == ["unet_b2_h32_w32"]
    with pytest.raises(NPUConfigError, match=r"\['batch_size'\] differ from the compiled artifact"):
        NPUUNet2DConditionModel.from_pretrained(root / "unet-npu", npu_config={"batch_size": 4})
    with pytest.raises(ValueError, match="holds a compiled UNet2DConditionModel, which NPUAutoencoderKL does not "
                                         "load; load it with NPUUNet2DConditionModel"):
        NPUAutoencoderKL.from_pretrained(root / "unet-npu")


def test_pipeline_assembled_around_a_unet_compiled_alone(sd_pipeline, unet_alone):
    """The compiled UNet's folder is copied into the pipeline (not recompiled); the images equal eager's."""
    _, eager, _ = sd_pipeline
    unet, root = unet_alone
    with pytest.raises(NPUConfigError, match=r"the compiled unet does not fit this pipeline: its knobs "
                                             r"\{'batch_size': 2\} must be \{'batch_size': 1\}"):
        NPUStableDiffusionPipeline.from_pretrained(root / "sd", export=True, unet=unet, npu_config={"batch_size": 1})
    pipe = NPUStableDiffusionPipeline.from_pretrained(root / "sd", export=True, unet=unet, compile_cache=False)
    pipe.set_progress_bar_config(disable=True)
    try:
        assert pipe.npu_config.batch_size == 2 and pipe.npu_config.guidance == (False,)
        manifest = json.loads((pipe.artifact_dir / "npu_manifest.json").read_text())["files"]
        assert manifest["unet/model.safetensors"] == json.loads(
            (root / "unet-npu" / "npu_manifest.json").read_text())["files"]["model.safetensors"]
        call = {"prompt": ["a red cat", "a blue dog"], "num_inference_steps": 2, "output_type": "np",
                "guidance_scale": 1.0, "height": 32, "width": 32}
        reference = eager(generator=torch.Generator().manual_seed(0), **call).images
        images = pipe(generator=torch.Generator().manual_seed(0), **call).images
        assert np.abs(images - reference).max() < 1e-4 and np.std(reference) > 1e-3
    finally:
        pipe.release()


def test_vae_and_text_encoder_alone_equal_eager(sd_pipeline, request):
    _, eager, _ = sd_pipeline
    generator = torch.Generator().manual_seed(1)
    latents, image = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 3, 32, 32, generator=generator)
    ids = torch.randint(2, 54, (2, 16), generator=generator)
    with torch.no_grad():
        references = (eager.vae.decode(latents).sample, eager.vae.encode(image).latent_dist.parameters,
                      eager.text_encoder(ids, output_hidden_states=True).hidden_states[-2])
    vae = NPUAutoencoderKL.from_model(eager.vae, {"resolutions": [[32, 32]], "parts": ["decoder", "encoder"]},
                                      compile_cache=False)
    text = NPUDiffusionCLIPTextModel.from_model(eager.text_encoder, {"batch_size": 2}, compile_cache=False)
    request.getfixturevalue("booby_trapped")
    try:
        outputs = (vae.decode(latents).sample, vae.encode(image).latent_dist.parameters,
                   text(ids, output_hidden_states=True).hidden_states[-2])
        for out, reference in zip(outputs, references):
            assert (out - reference).abs().max() < 1e-4 and reference.abs().max() > 0
        assert text.npu_config.max_length == 16 and sorted(vae.npu_graphs) == ["vae_decoder_b1_h32_w32",
                                                                               "vae_encoder_b1_h32_w32"]
    finally:
        vae.release()
        text.release()


def test_tampered_component_family_is_refused(sd_pipeline, tmp_path):
    """A re-signed component document naming another family: the family is a closed table, checked first."""
    _, _, root = sd_pipeline
    copy = tmp_path / "unet"
    shutil.copytree(root / "unet", copy)
    document = json.loads((copy / "npu_config.json").read_text())
    document["family"] = "os.system"
    (copy / "npu_config.json").write_text(json.dumps(document))
    (copy / "npu_manifest.json").unlink()
    write_manifest(copy)
    with pytest.raises(NPUConfigError, match=r"family=.os.system. must be one of \[.diffusion_text_encoder., "):
        NPUUNet2DConditionModel.from_pretrained(copy)


@pytest.mark.slow
def test_cli_exports_a_unet_folder_and_the_second_export_is_a_verified_cache_hit(unet_alone, tmp_path, capsys):
    from optimum_npu.cli import main

    _, root = unet_alone
    command = ["export", str(root / "sd" / "unet"), "", "--pipeline-config", json.dumps(UNET_CONFIG)]
    assert main(command[:2] + [str(tmp_path / "first")] + command[3:]) == 0
    assert "compiled 1 graphs (unet_b2_h32_w32)" in capsys.readouterr().out
    assert main(command[:2] + [str(tmp_path / "second")] + command[3:]) == 0
    assert "reused the compiled artifact from the compile cache" in capsys.readouterr().out
    unet = NPUAutoModel.from_pretrained(tmp_path / "second")
    try:
        assert type(unet) is NPUUNet2DConditionModel and unet.npu_config.text_tokens == 16
    finally:
        unet.release()


@pytest.mark.slow
def test_push_and_pull_a_component_with_its_card(unet_alone, hub, tmp_path):
    from huggingface_hub import ModelCard

    from hub_fixtures import new_repo_id
    from hub_server import TOKEN

    unet, _ = unet_alone
    repo = new_repo_id("unet")
    unet.push_to_hub(repo, token=TOKEN, private=True)
    card = ModelCard.load(repo, token=TOKEN).text
    assert "NPUUNet2DConditionModel.from_pretrained" in card and "`unet` | `unet_b2_h32_w32`" in card
    pulled = NPUAutoModel.from_pretrained(repo, token=TOKEN, cache_dir=tmp_path / "pull")
    try:
        sample, timestep, context = _unet_inputs(2, 32, 32)
        assert type(pulled) is NPUUNet2DConditionModel
        assert torch.equal(pulled(sample, timestep, encoder_hidden_states=context).sample,
                           unet(sample, timestep, encoder_hidden_states=context).sample)
    finally:
        pulled.release()


@pytest.mark.slow
def test_sdxl_unet_sd3_transformer_and_t5_alone_equal_eager():
    from optimum_npu import NPUSD3Transformer2DModel
    from optimum_npu.models.diffusion.tiny import build_sd3_pipeline, build_sdxl_pipeline

    generator = torch.Generator().manual_seed(2)
    unet, sd3 = build_sdxl_pipeline().unet, build_sd3_pipeline()
    sdxl_inputs = (torch.randn(1, 4, 16, 16, generator=generator), torch.tensor(3.0))
    sdxl_kwargs = {"encoder_hidden_states": torch.randn(1, 16, unet.config.cross_attention_dim, generator=generator),
                   "added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=generator),   # 80 - 6 x 8
                                         "time_ids": torch.randn(1, 6, generator=generator)}}
    transformer = sd3.transformer.config
    sd3_kwargs = {"hidden_states": torch.randn(1, transformer.in_channels, 16, 16, generator=generator),
                  "timestep": torch.tensor([3.0]), "pooled_projections": torch.randn(
                      1, transformer.pooled_projection_dim, generator=generator),
                  "encoder_hidden_states": torch.randn(1, 16 + 256, transformer.joint_attention_dim,
                                                       generator=generator)}
    ids = torch.randint(0, 50, (1, 8), generator=generator)
    cases = [(NPUUNet2DConditionModel, unet, {"text_tokens": 16}, lambda m: m(*sdxl_inputs, **sdxl_kwargs).sample),
             (NPUSD3Transformer2DModel, sd3.transformer, {"text_tokens": 16 + 256}, lambda m: m(**sd3_kwargs).sample),
             (NPUT5EncoderModel, sd3.text_encoder_3, {"max_length": 8}, lambda m: m(ids).last_hidden_state)]
    for npu_class, module, knobs, call in cases:
        with torch.no_grad():
            reference = call(module)
        image = {"resolutions": [[32, 32]], "guidance": [False], "vae_scale_factor": 2} if "text_tokens" in knobs \
            else {}
        compiled = npu_class.from_model(module, {**image, **knobs}, compile_cache=False)
        try:
            assert (call(compiled) - reference).abs().max() < 1e-4 and reference.abs().max() > 0, npu_class.__name__
        finally:
            compiled.release()


def test_component_manifest_must_agree_with_the_pipeline_manifest(sd_pipeline, tmp_path):
    """A file added to a component folder and listed in its own manifest only (the pipeline's re-signed around
    it) is refused: the pipeline's manifest vouches for every file a component folder's reader may read."""
    _, _, root = sd_pipeline
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    manifest = json.loads((copy / "unet" / "npu_manifest.json").read_text())
    manifest["files"]["config.json"]["sha256"] = "0" * 64
    (copy / "unet" / "npu_manifest.json").write_text(json.dumps(manifest))
    (copy / "npu_manifest.json").unlink()
    write_manifest(copy)
    with pytest.raises(ArtifactError, match=r"unet: \['config.json'\] listed in its manifest are not the files"):
        NPUStableDiffusionPipeline.from_pretrained(copy)
