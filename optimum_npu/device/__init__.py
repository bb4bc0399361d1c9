"""The simulated NPU: specs, devices and memory, executor, kernels and the cost model."""
