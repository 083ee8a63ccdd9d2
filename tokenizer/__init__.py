"""tinygpt's tokenizers: the book's simple ones, byte-level BPE (trainable), and GPT-2's encoding.

Pure Python + `regex`; knows nothing of tensors. Layout, one idea per file:
  simple.py      SimpleTokenizerV1/V2 and build_vocab (Raschka, ch. 2)
  basic.py       ByteLevelBPE: byte-level BPE on the whole text
  bpe.py         BPETokenizer: + regex split, special tokens, save/load
  gpt2.py        GPT2Encoding: + OpenAI's encoder.json/vocab.bpe; get_encoding("gpt2")
  training.py    the fast BPE trainer;  patterns.py  split regexes;  fileformat.py  the saved format
  hf_bpe.py      HFByteLevelBPE: a Hugging Face byte-level BPE tokenizer.json (GPT-2, Llama 3, Qwen2/3)
  hf_export.py   save_hf_tokenizer: our BPE tokenizers written as tokenizer.json;  added.py  added tokens
  pretrained.py  from_pretrained(path): tokenizer.json or vocab.txt (WordPiece, wordpiece.py)
  datafiles.py   finding/downloading data files;  cli.py  `tokenizer train|encode|decode`
"""
from .basic import ByteLevelBPE
from .bpe import BPETokenizer
from .datafiles import DataFileError, MissingDataFileError, download_file, find_data_file
from .gpt2 import GPT2Encoding, bytes_to_unicode, get_encoding
from .hf_bpe import HFByteLevelBPE
from .hf_export import save_hf_tokenizer
from .patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from .pretrained import from_pretrained
from .simple import SimpleTokenizerV1, SimpleTokenizerV2, UnknownTokenError, build_vocab

__all__ = [
    "BPETokenizer",
    "ByteLevelBPE",
    "DataFileError",
    "GPT2Encoding",
    "HFByteLevelBPE",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "MissingDataFileError",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "UnknownTokenError",
    "build_vocab",
    "bytes_to_unicode",
    "download_file",
    "find_data_file",
    "from_pretrained",
    "get_encoding",
    "save_hf_tokenizer",
]
