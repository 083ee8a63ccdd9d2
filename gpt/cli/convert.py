"""Moving models and data in and out: `tinygpt convert` (tinygpt checkpoint <-> Hugging Face GPT-2 directory) and
`tinygpt download` (GPT-2 weights and tokenizer, the book's data sets) into the cache the other commands read."""
from __future__ import annotations

import argparse
import urllib.error
from pathlib import Path

from gpt.cli.common import PROG, add_common_args, make_backend, say, warn

THE_VERDICT_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/"
                   "the-verdict.txt")
GPT2_DOWNLOADS = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}


def add_convert_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="tinygpt checkpoint <-> Hugging Face GPT-2 directory",
                       description="--checkpoint DIR --to-hf OUT, or --from-hf DIR --out OUT")
    p.add_argument("--checkpoint", metavar="DIR", help="a tinygpt checkpoint or `train --out` directory")
    p.add_argument("--to-hf", metavar="OUT", help="write a Hugging Face GPT-2 directory here")
    p.add_argument("--from-hf", metavar="DIR", help="a Hugging Face GPT-2 directory (config.json + weights)")
    p.add_argument("--out", metavar="OUT", help="write a tinygpt checkpoint here")
    add_common_args(p, seed=False)
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from gpt.training.checkpoint import is_checkpoint_dir, load_model, save_checkpoint
    from gpt.weights import export_hf_gpt2, load_hf_gpt2

    B = make_backend(args)
    if args.checkpoint and args.to_hf and not (args.from_hf or args.out):
        model, _, info = load_model(args.checkpoint, B)
        kind = (info.get("tokenizer") or {}).get("kind")
        export_hf_gpt2(model, args.to_hf)
        say(f"wrote {Path(args.to_hf) / 'config.json'} and {Path(args.to_hf) / 'model.safetensors'}")
        if kind not in (None, "gpt2"):
            warn(f"note: this model uses the {kind} tokenizer, not GPT-2's; Hugging Face tools will assume GPT-2's")
        return 0
    if args.from_hf and args.out and not (args.checkpoint or args.to_hf):
        if is_checkpoint_dir(args.out):
            raise ValueError(f"{args.out} already holds a checkpoint; choose another --out")
        model = load_hf_gpt2(args.from_hf, backend=B)
        state = {"step": 0, "model_config": model.cfg.to_dict(), "tokenizer": {"kind": "gpt2"},
                 "source": str(args.from_hf)}
        save_checkpoint(args.out, model, None, state)
        say(f"wrote tinygpt checkpoint {args.out} ({model.num_parameters():,} parameters)")
        return 0
    raise ValueError("give either --checkpoint DIR --to-hf OUT, or --from-hf DIR --out OUT")


# ---- download --------------------------------------------------------------------------------------------------------

def add_download_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="GPT-2 weights, GPT-2 tokenizer files, the-verdict.txt, the SMS spam or "
                                        "instruction data")
    p.add_argument("what", choices=(*GPT2_DOWNLOADS, "gpt2-tokenizer", "the-verdict", "sms-spam", "instruction-data"))
    p.add_argument("--dest", metavar="DIR", help="folder to write into (default: the tinygpt cache, "
                                                 "~/.cache/tinygpt, where the other commands look)")
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    from tokenizer.datafiles import OFFLINE_ENV, cache_dir, download_file, offline

    if offline():
        raise ValueError(f"downloads are disabled because {OFFLINE_ENV} is set; unset it, or copy the files into "
                         f"the folder named by TINYGPT_DATA_DIR")
    try:
        if args.what in GPT2_DOWNLOADS:
            from gpt.weights import download_gpt2

            size = GPT2_DOWNLOADS[args.what]
            folder = download_gpt2(size, Path(args.dest) / f"gpt2-{size}" if args.dest else None)
            say(f"GPT-2 {size} is in {folder}; try: {PROG} generate --checkpoint {folder} --prompt \"Hello\"")
        elif args.what == "gpt2-tokenizer":
            from tokenizer.gpt2 import GPT2_FILES

            dest = Path(args.dest) if args.dest else cache_dir()
            for rel, (url, sha) in GPT2_FILES.items():
                if not (dest / rel).is_file():
                    download_file(url, dest / rel, sha)
            say(f"GPT-2 tokenizer files are in {dest / 'gpt2'}")
        elif args.what == "sms-spam":
            import tempfile

            from gpt.classify import SMS_SPAM_URL, extract_sms_spam

            dest = (Path(args.dest) if args.dest else cache_dir()) / "sms-spam" / "SMSSpamCollection"
            with tempfile.TemporaryDirectory() as tmp:
                extract_sms_spam(download_file(SMS_SPAM_URL, Path(tmp) / "sms_spam_collection.zip"), dest)
            say(f"wrote {dest}; try: {PROG} finetune classify --init DIR --data {dest} --out runs/spam")
        else:
            from gpt.instruct import INSTRUCTION_DATA_URL

            name, url = {"the-verdict": ("the-verdict.txt", THE_VERDICT_URL),
                         "instruction-data": ("instruction-data.json", INSTRUCTION_DATA_URL)}[args.what]
            dest = (Path(args.dest) if args.dest else cache_dir()) / name
            download_file(url, dest)
            say(f"wrote {dest}")
    except urllib.error.URLError as e:
        raise ValueError(f"download failed ({getattr(e, 'reason', e)}); check the network connection") from None
    return 0
