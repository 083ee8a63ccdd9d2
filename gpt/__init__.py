"""gpt: the GPT-2 of Raschka's *Build a Large Language Model (From Scratch)*, written once against the backend
interface so the same classes run on numpy, cupy and torch.

Book chapters → modules: ch. 2 data loading (`data`), ch. 3 attention (`attention`), ch. 4 the model (`nn`, `model`),
ch. 5 pretraining and generation (`pretrain`, `train`, `generate`, `kv_cache`), weights (`weights`).
"""
from .checkpoint import CheckpointManager, load_model, read_checkpoint, save_checkpoint
from .corpus import default_corpus, load_corpus
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
from .train import DEFAULT_MODEL_CONFIG, TrainConfig, Trainer, TrainingDiverged, TrainResult
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
    "default_corpus", "load_corpus", "from_pretrained",
]
