"""Vision-language models: the visual encoder in patch buckets and the language model (issue 5)."""
