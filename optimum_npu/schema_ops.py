"""The exact operator allow-list of the artifact format: what a graph file may call.

Every operator overload the compiler emits for the supported families (collected from the
graphs of every model the test suite compiles: Llama, Mistral, Qwen2/3, Gemma, Gemma 2/3,
Phi, Phi-3, GPT-2, OPT, Qwen2/2.5/3-VL, Mixtral, Qwen2/3-MoE, BERT, RoBERTa, XLM-R, DistilBERT, ViT, ResNet, CLIP, Wav2Vec2, tensor
parallelism, quantization), each with the names of its schema arguments, which are the only keyword
names a node of that operator may use. Graphs
are checked against it by exact string match (``schema.check_op_name``); the device resolves
operators through a table built from this list, never by ``getattr`` on a string read from a file.

Reviewed exclusions: nothing here reads or writes files or processes, touches storages or raw
pointers, changes the random state or converts a tensor to a host scalar (``from_file``,
``set_``, ``*storage*``, ``_local_scalar_dense``, ``rand*``, ``normal_``, ``bernoulli``...).
``aten.copy_`` writes only into a tensor of the graph itself (no storage or file behind it).

A new family adds its operators here in the same change, with a test (``tests/test_security_graphs.py``
checks each entry against torch's schema and against the exclusions). Bump ``OP_LIST_VERSION``
when an operator is removed or changes meaning.
"""

from __future__ import annotations

OP_LIST_VERSION = 1

#: operator overload -> names of its schema arguments (the allowed keyword names)
ALLOWED_OPS: dict[str, tuple[str, ...]] = {
    "aten._assert_tensor_metadata.default": ('a', 'size', 'stride', 'dtype', 'device', 'layout'),
    "aten.add.Tensor": ('self', 'other', 'alpha'),
    "aten.alias.default": ('self',),
    "aten.arange.default": ('end', 'dtype', 'layout', 'device', 'pin_memory'),
    "aten.cat.default": ('tensors', 'dim'),
    "aten.clamp.default": ('self', 'min', 'max'),
    "aten.contiguous.default": ('self', 'memory_format'),
    "aten.copy_.default": ('self', 'src', 'non_blocking'),
    "aten.cos.default": ('self',),
    "aten.cumsum.default": ('self', 'dim', 'dtype'),
    "aten.div.Tensor": ('self', 'other'),
    "aten.embedding.default": ('weight', 'indices', 'padding_idx', 'scale_grad_by_freq', 'sparse'),
    "aten.expand.default": ('self', 'size', 'implicit'),
    "aten.gelu.default": ('self', 'approximate'),
    "aten.index.Tensor": ('self', 'indices'),
    "aten.layer_norm.default": ('input', 'normalized_shape', 'weight', 'bias', 'eps', 'cudnn_enable'),
    "aten.linear.default": ('input', 'weight', 'bias'),
    "aten.matmul.default": ('self', 'other'),
    "aten.mean.dim": ('self', 'dim', 'keepdim', 'dtype'),
    "aten.mul.Tensor": ('self', 'other'),
    "aten.ne.Scalar": ('self', 'other'),
    "aten.neg.default": ('self',),
    "aten.permute.default": ('self', 'dims'),
    "aten.pow.Tensor_Scalar": ('self', 'exponent'),
    "aten.relu.default": ('self',),
    "aten.reshape.default": ('self', 'shape'),
    "aten.rsqrt.default": ('self',),
    "aten.select.int": ('self', 'dim', 'index'),
    "aten.sigmoid.default": ('self',),
    "aten.silu.default": ('self',),
    "aten.sin.default": ('self',),
    "aten.slice.Tensor": ('self', 'dim', 'start', 'end', 'step'),
    "aten.softmax.int": ('self', 'dim', 'dtype'),
    "aten.split.Tensor": ('self', 'split_size', 'dim'),
    "aten.split_with_sizes.default": ('self', 'split_sizes', 'dim'),
    "aten.squeeze.dim": ('self', 'dim'),
    "aten.stack.default": ('tensors', 'dim'),
    "aten.sum.dim_IntList": ('self', 'dim', 'keepdim', 'dtype'),
    "aten.tanh.default": ('self',),
    "aten.to.device": ('self', 'device', 'dtype', 'non_blocking', 'copy', 'memory_format'),
    "aten.to.dtype": ('self', 'dtype', 'non_blocking', 'copy', 'memory_format'),
    "aten.transpose.int": ('self', 'dim0', 'dim1'),
    "aten.type_as.default": ('self', 'other'),
    "aten.unbind.int": ('self', 'dim'),
    "aten.unsqueeze.default": ('self', 'dim'),
    "aten.view.default": ('self', 'size'),
    "aten.where.self": ('condition', 'self', 'other'),
    "getitem": (),
    "npu.all_gather.default": ('x', 'dim', 'group_size'),
    "npu.all_reduce.default": ('x', 'group_size'),
    "npu.all_to_all.default": ('x', 'group_size'),
    "npu.moe.default": ('hidden', 'router_logits', 'gate_up', 'down', 'top_k', 'normalize', 'weights_in_input_dtype', 'gate_up_bias', 'down_bias', 'softmax_after_topk', 'interleaved', 'swiglu_alpha', 'swiglu_limit', 'gate_up_scale', 'down_scale'),
    "npu.moe_dispatch.default": ('hidden', 'router_logits', 'top_k', 'normalize', 'weights_in_input_dtype', 'group_size', 'softmax_after_topk'),
    "npu.moe_experts.default": ('tokens', 'expert_weights', 'gate_up', 'down', 'top_k', 'num_experts', 'gate_up_bias', 'down_bias', 'interleaved', 'swiglu_alpha', 'swiglu_limit', 'gate_up_scale', 'down_scale'),
    "npu.paged_attention.default": ('query', 'key', 'value', 'k_cache', 'v_cache', 'block_table', 'positions', 'scale', 'partition_len', 'softcap', 'k_scale', 'v_scale', 'position_bias', 'sinks'),
    "npu.quantized_linear.default": ('input', 'weight', 'scale', 'bias'),
    "npu.segment_attention.default": ('query', 'key', 'value', 'segments', 'scale'),
    "npu.sliding_window_attention.default": ('query', 'key', 'value', 'k_ring', 'v_ring', 'slots', 'positions', 'window', 'scale', 'softcap', 'k_scale', 'v_scale', 'sinks'),
    # ---- seq2seq family (T5, BART, Whisper): cross-attention and the ops of their encoders/decoders ----
    "npu.cross_attention.default": ('query', 'k_cache', 'v_cache', 'mask_cache', 'slots', 'scale', 'key', 'value', 'mask'),
    "aten.abs.default": ('self',),
    "aten.add_.Tensor": ('self', 'other', 'alpha'),
    "aten.arange.start": ('start', 'end', 'dtype', 'layout', 'device', 'pin_memory'),
    "aten.full_like.default": ('self', 'fill_value', 'dtype', 'layout', 'device', 'pin_memory', 'memory_format'),
    "aten.gt.Scalar": ('self', 'other'),
    "aten.log.default": ('self',),
    "aten.lt.Scalar": ('self', 'other'),
    "aten.min.other": ('self', 'other'),
    "aten.sub.Tensor": ('self', 'other', 'alpha'),
    "aten.to.dtype_layout": ('self', 'dtype', 'layout', 'device', 'pin_memory', 'non_blocking', 'copy', 'memory_format'),
    "aten.zeros_like.default": ('self', 'dtype', 'layout', 'device', 'pin_memory', 'memory_format'),
    "aten.conv1d.default": ('input', 'weight', 'bias', 'stride', 'padding', 'dilation', 'groups'),
    # ---- vision and speech encoders (models/encoder: ViT, ResNet, CLIP towers, Wav2Vec2): convolutions, inference
    # batch norm, pooling, CLIP's end-of-text pooling (argmax, eq), Wav2Vec2's weight-normed positional conv ----
    "aten._weight_norm.default": ('v', 'g', 'dim'),
    "aten.adaptive_avg_pool2d.default": ('self', 'output_size'),
    "aten.argmax.default": ('self', 'dim', 'keepdim'),
    "aten.batch_norm.default": ('input', 'weight', 'bias', 'running_mean', 'running_var', 'training', 'momentum', 'eps', 'cudnn_enabled'),
    "aten.conv2d.default": ('input', 'weight', 'bias', 'stride', 'padding', 'dilation', 'groups'),
    "aten.eq.Scalar": ('self', 'other'),
    "aten.flatten.using_ints": ('self', 'start_dim', 'end_dim'),
    "aten.max_pool2d.default": ('self', 'kernel_size', 'stride', 'padding', 'dilation', 'ceil_mode'),
    "aten.upsample_bicubic2d.vec": ('input', 'output_size', 'align_corners', 'scale_factors'),
}

#: The only string literals a graph argument may hold (``aten.gelu``'s ``approximate``).
ALLOWED_STRINGS = frozenset({"none", "tanh"})

# ---- diffusion family (Diffusers pipelines: UNet, SD3 transformer, VAE, CLIP/T5 text encoders) ----
ALLOWED_OPS.update({
    "aten.chunk.default": ('self', 'chunks', 'dim'),
    "aten.concat.default": ('tensors', 'dim'),
    "aten.exp.default": ('self',),
    "aten.group_norm.default": ('input', 'num_groups', 'weight', 'bias', 'eps', 'cudnn_enabled'),
    "aten.le.Tensor": ('self', 'other'),
    "aten.pad.default": ('self', 'pad', 'mode', 'value'),
    "aten.upsample_nearest2d.vec": ('input', 'output_size', 'scale_factors'),
    "npu.dense_attention.default": ('query', 'key', 'value', 'mask', 'scale'),
    # SD3: the transformer's unpatchify (one einsum, a permutation) and T5's relative position buckets
    "aten.einsum.default": ('equation', 'tensors', 'path'),
    "aten.ge.Scalar": ('self', 'other'),
    "aten.where.ScalarOther": ('condition', 'self', 'other'),
})
#: ``aten.pad``'s mode (the VAE encoder pads its downsampling convolution with zeros), SD3's einsum equation.
ALLOWED_STRINGS = ALLOWED_STRINGS | {"constant", "nhwpqc->nchpwq"}   # + the SD3 transformer's unpatchify equation
