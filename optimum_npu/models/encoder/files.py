"""The files of an encoder artifact besides its graphs and weights."""

from optimum_npu.models.decoder.export import TOKENIZER_FILES

#: Tokenizer files shipped with the artifact when the checkpoint has them (WordPiece and SentencePiece too), and the
#: image processor or (speech) processor configuration.
ENCODER_FILES = TOKENIZER_FILES + ("vocab.txt", "sentencepiece.bpe.model", "preprocessor_config.json",
                                   "processor_config.json")
