"""The files of a vision-language artifact besides its graphs and weights."""

from optimum_npu.models.decoder.export import TOKENIZER_FILES

#: Processor and tokenizer files shipped with the artifact (copied when the checkpoint has them).
PROCESSOR_FILES = TOKENIZER_FILES + ("preprocessor_config.json", "processor_config.json",
                                     "video_preprocessor_config.json", "chat_template.json")
#: Submodule name -> its folder in the artifact.
SUBMODULE_DIRS = {"visual": "visual", "language_model": "language_model"}
