"""Data-file resolution: data dir, then user cache, then a checked download; one clear error when offline."""
import hashlib

import pytest

from tokenizer import DataFileError, MissingDataFileError, download_file, find_data_file, get_encoding
from tokenizer.datafiles import ChecksumError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty data dir, empty HOME, no network allowed."""
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir()
    home.mkdir()
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(data))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TINYGPT_OFFLINE", "1")
    return data, home


def test_missing_gpt2_offline(isolated):
    get_encoding.cache_clear()
    try:
        with pytest.raises(MissingDataFileError) as e:
            get_encoding("gpt2")
    finally:
        get_encoding.cache_clear()
    msg = str(e.value)
    assert "'gpt2/encoder.json' not found" in msg and "`tinygpt download gpt2-tokenizer`" in msg
    assert "TINYGPT_OFFLINE is set" in msg and str(isolated[0]) in msg
    assert isinstance(e.value, DataFileError) and isinstance(e.value, FileNotFoundError)


def test_data_dir_then_cache(isolated):
    data, home = isolated
    cached = home / ".cache" / "tinygpt" / "x" / "f.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("cache")
    assert find_data_file("x/f.txt") == cached
    (data / "x").mkdir()
    (data / "x" / "f.txt").write_text("data")
    assert find_data_file("x/f.txt") == data / "x" / "f.txt"


def test_download_into_cache(isolated, tmp_path, monkeypatch):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload" * 1000)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(MissingDataFileError, match="downloading was not allowed"):
        find_data_file("y/source.bin", url=source.as_uri(), sha256=sha, download=False)
    monkeypatch.delenv("TINYGPT_OFFLINE")
    path = find_data_file("y/source.bin", url=source.as_uri(), sha256=sha)  # a file:// URL: no network
    assert path == isolated[1] / ".cache" / "tinygpt" / "y" / "source.bin"
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["source.bin"]  # no temporary file left behind


def test_checksum_mismatch_leaves_nothing(tmp_path):
    source = tmp_path / "s"
    source.write_bytes(b"abc")
    dest = tmp_path / "out" / "d"
    with pytest.raises(ChecksumError, match="expected 00ff"):
        download_file(source.as_uri(), dest, sha256="00ff", progress=False)
    assert list(dest.parent.iterdir()) == []


def test_failed_download_is_clear(isolated, tmp_path, monkeypatch):
    monkeypatch.delenv("TINYGPT_OFFLINE")
    with pytest.raises(MissingDataFileError, match="downloading file:.*failed"):
        find_data_file("z", url=(tmp_path / "nothing").as_uri(), fetch_command="tinygpt download z")
