"""The feed of each modality (``EncoderTask.modality``): text, image, audio (``feeds.py``, ``audio_feed.py``)."""

from optimum_npu.models.encoder.audio_feed import AudioFeed
from optimum_npu.models.encoder.feeds import ImageFeed, TextFeed

FEEDS = {"text": TextFeed, "image": ImageFeed, "audio": AudioFeed}
