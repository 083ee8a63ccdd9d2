"""The machinery around the book's chapters: the one training loop (`trainer`) and the objectives it optimises
(`objectives`), its settings (`config`), checkpoints, metrics, data-parallel training (`distributed`), FLOPs and
MFU (`flops`), the training corpus and tokenizer specs (`corpus`), memory-mapped token shards (`shards`), the
safetensors format (`safetensors_io`) and the fine-tuning recipes (`finetune`)."""
