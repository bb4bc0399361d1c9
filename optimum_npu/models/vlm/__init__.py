"""Vision-language models: the visual encoder compiled in patch buckets, and the language model."""
