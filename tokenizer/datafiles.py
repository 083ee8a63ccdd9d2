"""Finding data files (tokenizer tables, weights, corpora): data dir, then user cache, then a checked download.

The order is DESIGN.md §3's: `$TINYGPT_DATA_DIR/<relpath>`, then `~/.cache/tinygpt/<relpath>`, then a download
from the file's public URL into that cache, with its sha256 checked (`TINYGPT_OFFLINE=1` forbids downloads).
Failing all three raises one `MissingDataFileError` that names the file and the command that fetches it.
Shared by `tokenizer` (GPT-2's encoder.json/vocab.bpe) and `gpt` (weights, the-verdict.txt).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

DATA_DIR_ENV = "TINYGPT_DATA_DIR"
OFFLINE_ENV = "TINYGPT_OFFLINE"


class DataFileError(FileNotFoundError):
    """A data file could not be found, downloaded or verified."""


class MissingDataFileError(DataFileError):
    """A data file is in none of the places searched and could not be downloaded."""


class ChecksumError(DataFileError):
    """A downloaded file's sha256 is not the expected one."""


def cache_dir() -> Path:
    """The user cache for downloaded data files: ~/.cache/tinygpt."""
    return Path.home() / ".cache" / "tinygpt"


def offline() -> bool:
    """True when TINYGPT_OFFLINE is set to a true value (1, true, yes): never download."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def find_data_file(
    relpath: str,
    url: str | None = None,
    sha256: str | None = None,
    download: bool = True,
    fetch_command: str | None = None,
) -> Path:
    """Path of data file `relpath`: in TINYGPT_DATA_DIR, in the user cache, or downloaded from `url` into the cache.

    `fetch_command` (e.g. "tinygpt download gpt2-tokenizer") is named in the error when the file is missing.
    """
    searched: list[Path] = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        searched.append(Path(env).expanduser() / relpath)
    cached = cache_dir() / relpath
    searched.append(cached)
    for path in searched:
        if path.is_file():
            return path

    why = None
    if url is None:
        why = "it has no download URL"
    elif not download:
        why = "downloading was not allowed"
    elif offline():
        why = f"{OFFLINE_ENV} is set"
    else:
        try:
            return download_file(url, cached, sha256)
        except (urllib.error.URLError, OSError) as e:
            if isinstance(e, DataFileError):
                raise
            why = f"downloading {url} failed ({getattr(e, 'reason', e)})"
    places = ", ".join(str(p) for p in searched)
    if fetch_command:
        how = f"run `{fetch_command}` with network access, or "
    elif url:
        how = f"download {url}, or "
    else:
        how = ""
    raise MissingDataFileError(
        f"data file {relpath!r} not found (looked in {places}; {why}): {how}set {DATA_DIR_ENV} to a folder"
        f" holding {relpath}"
    )


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest` with a progress bar, check its sha256, and move it into place atomically.

    The bytes go to a temporary file beside `dest` first, so an interrupted download never leaves a partial file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as tmp, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, dest.name) if progress else None
            while block := response.read(1 << 20):
                tmp.write(block)
                digest.update(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise ChecksumError(
                f"{url} downloaded with sha256 {digest.hexdigest()}, expected {sha256}: the file is corrupt or"
                " changed; delete the cache and retry, or place a good copy in TINYGPT_DATA_DIR"
            )
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return dest


def _progress_bar(total: int | None, name: str):
    from tqdm import tqdm  # imported here: only downloads need it

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}")
