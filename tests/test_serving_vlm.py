"""A vision-language artifact served: chat requests with base64 ``image_url`` parts go through the image processor
and the visual buckets, and answer what ``model.generate()`` answers for the processor's inputs (slow: compiles a
tiny Qwen2-VL)."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
from PIL import Image

from optimum_npu import NPUModelForImageTextToText
from optimum_npu.models.vlm.tiny import build_vlm_processor, save_vlm
from serving_fixtures import ServerThread

pytestmark = pytest.mark.slow

NPU_CONFIG = {"visual": {"max_seq_len": [64, 256]},
              "language_model": {"max_seq_len": 256, "batch_size": 2, "prefill_chunk_size": 32,
                                 "kvcache_block_size": 32}}


@pytest.fixture(scope="module")
def vlm_artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-vlm")
    exported = NPUModelForImageTextToText.from_pretrained(save_vlm(root / "checkpoint"), export=True,
                                                          npu_config=NPU_CONFIG)
    exported.save_pretrained(root / "artifact")
    exported.release()
    return root / "artifact"


def picture(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def expected(artifact, conversation: list[dict], images: list[Image.Image], max_new_tokens: int) -> list[int]:
    processor = build_vlm_processor()
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = dict(processor(text=[text], images=images or None, return_tensors="pt"))
    model = NPUModelForImageTextToText.from_pretrained(artifact)
    try:
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    finally:
        model.release()
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def test_chat_with_images_answers_like_generate(vlm_artifact):
    images = [picture(56, 56, 0), picture(140, 196, 1)]                     # 16 patches (bucket 64), 140 (256)
    text = "Compare the two pictures."
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": text}]}]
    text_only = [{"role": "user", "content": "No picture today."}]
    want = expected(vlm_artifact, conversation, images, 8)
    want_text = expected(vlm_artifact, text_only, [], 8)
    with ServerThread(vlm_artifact, served_model_name="vlm", chat_template=None) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        content = [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in images]
        reply = client.chat.completions.create(
            model="vlm", messages=[{"role": "user", "content": content + [{"type": "text", "text": text}]}],
            max_tokens=8, temperature=0, extra_body={"return_token_ids": True, "ignore_eos": True})
        plain = client.chat.completions.create(model="vlm", messages=text_only, max_tokens=8, temperature=0,
                                               extra_body={"return_token_ids": True, "ignore_eos": True})
        assert reply.choices[0].model_extra["token_ids"] == want
        assert plain.choices[0].model_extra["token_ids"] == want_text
        assert server.metric("optimum_npu:bucket_steps_total") > 0
        with pytest.raises(openai.BadRequestError, match="base64 data URL"):
            client.chat.completions.create(model="vlm", max_tokens=4, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
        with pytest.raises(openai.BadRequestError, match="not a readable image"):
            client.chat.completions.create(model="vlm", max_tokens=4, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])


def test_preempted_image_request_is_recomputed_correctly(vlm_artifact):
    """Two long image requests on a pool of one sequence: one is preempted and prefilled again with its generated
    tokens (text positions after the image's M-RoPE positions), and both still answer as ``generate()``."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [(picture(140, 196, seed), f"Describe picture {seed} at length.") for seed in (3, 4)]
    conversations = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
                     for _, text in cases]
    want = [expected(vlm_artifact, conversation, [image], 120) for conversation, (image, _) in zip(conversations, cases)]
    with ServerThread(vlm_artifact, served_model_name="vlm", chat_template=None, num_kv_blocks=8) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)

        def ask(case):
            image, text = case
            content = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": text}]
            reply = client.chat.completions.create(model="vlm", messages=[{"role": "user", "content": content}],
                                                   max_tokens=120, temperature=0,
                                                   extra_body={"return_token_ids": True, "ignore_eos": True})
            return reply.choices[0].model_extra["token_ids"]

        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(ask, cases))
        assert server.metric("vllm:num_preemptions_total") > 0
    assert got == want
