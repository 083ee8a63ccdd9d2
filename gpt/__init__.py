"""gpt: the GPT-2 of Raschka's *Build a Large Language Model (From Scratch)*, written once against the backend
interface so the same classes run on numpy, cupy and torch.

The book's chapters are the flat files of this package:
- ch. 2, working with text data: `data` (GPTDatasetV1, create_dataloader_v1; tokenizers live in `tokenizer/`)
- ch. 3, attention: `attention` (SelfAttention_v1 ... MultiHeadAttention)
- ch. 4, the model: `nn` (Module, Linear, LayerNorm, ...), `model` (GPTModel, TransformerBlock, FeedForward, GELU)
- ch. 5, pretraining: `pretrain` (calc_loss_batch, train_model_simple, ...), `generate` (+ `kv_cache`), `weights`
  (OpenAI's GPT-2 weights through Hugging Face files)
- ch. 6, classification: `classify`;  ch. 7, instructions: `instruct`
- appendix D, the training loop's bells and whistles: `schedule` (warmup + cosine), and the full loop in `training`
- appendix E, LoRA: `lora`
Past the book, where its bonus material goes, also flat:
- ch. 5 bonus, Llama 3 and Qwen3 as configurations of the same model: `families`, `rope`, `chat_format`;
  `pretrained` (`from_pretrained`: any supported Hugging Face directory); `sweep` (hyperparameter search)
- ch. 6 bonus, the encoder side: `bert` (BERT), `mlm` (the masked-LM objective's data)
- ch. 7 bonus, preference tuning: `dpo`
The machinery around them is in sub-packages: `training/` (the one Trainer and its objectives, checkpoints,
distributed data parallelism, FLOPs, the corpus, token shards, fine-tuning recipes), `cli/` (the `tinygpt`
command, one module per command group), `serve/` (the OpenAI-compatible server) and `inspect/` (looking inside a
model).
"""
from .attention import (CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttention_v1,
                        SelfAttention_v2)
from .data import (DataLoader, GPTDatasetV1, TokenFileDataset, create_dataloader_v1, read_token_file,
                   write_token_file)
from .generate import generate, generate_stream, generate_text_simple, text_to_token_ids, token_ids_to_text
from .kv_cache import KVCache
from .model import (GELU, GPT_CONFIG_124M, GPT_CONFIG_355M, GPT_CONFIG_774M, GPT_CONFIG_1558M, GPT_CONFIGS,
                    FeedForward, GPTConfig, GPTModel, TransformerBlock)
from .nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Sequential, to_numpy_any
from .pretrain import (calc_loss_batch, calc_loss_loader, evaluate_model, generate_and_print_sample, plot_losses,
                       train_model_simple)
from .pretrained import from_pretrained
from .schedule import WarmupCosine, lr_at
from .training.checkpoint import CheckpointManager, load_model, read_checkpoint, save_checkpoint
from .training.config import DEFAULT_MODEL_CONFIG, TrainConfig
from .training.corpus import default_corpus, load_corpus
from .training.objectives import Classification, InstructionTuning, LanguageModeling, Objective
from .training.trainer import Trainer, TrainingDiverged, TrainResult
from .weights import (HF_NAME_MAP, CheckpointError, SafetensorsError, book_state_dict_to_hf, download_gpt2,
                      export_hf_gpt2, hf_state_dict_to_book, load_hf_gpt2, read_safetensors, write_safetensors)

__all__ = [
    "SelfAttention_v1", "SelfAttention_v2", "CausalAttention", "MultiHeadAttentionWrapper", "MultiHeadAttention",
    "GPTDatasetV1", "DataLoader", "create_dataloader_v1", "TokenFileDataset", "write_token_file", "read_token_file",
    "generate", "generate_stream", "generate_text_simple", "text_to_token_ids", "token_ids_to_text", "KVCache",
    "GPT_CONFIG_124M", "GPT_CONFIG_355M", "GPT_CONFIG_774M", "GPT_CONFIG_1558M", "GPT_CONFIGS", "GPTConfig", "GELU",
    "FeedForward", "TransformerBlock", "GPTModel", "Module", "ModuleList", "Sequential", "Linear", "Embedding",
    "LayerNorm", "Dropout", "to_numpy_any", "HF_NAME_MAP", "load_hf_gpt2", "export_hf_gpt2", "hf_state_dict_to_book",
    "book_state_dict_to_hf", "download_gpt2", "read_safetensors", "write_safetensors", "CheckpointError",
    "SafetensorsError", "calc_loss_batch", "calc_loss_loader", "evaluate_model", "train_model_simple",
    "generate_and_print_sample", "plot_losses", "WarmupCosine", "lr_at", "TrainConfig", "Trainer", "TrainResult",
    "TrainingDiverged", "DEFAULT_MODEL_CONFIG", "CheckpointManager", "save_checkpoint", "read_checkpoint", "load_model",
    "default_corpus", "load_corpus", "Objective", "LanguageModeling", "Classification", "InstructionTuning",
    "from_pretrained",
]
