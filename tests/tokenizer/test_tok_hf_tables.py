"""tokenizer/hf_tables.py is what the installed `tokenizers` (and `regex`) give, code point by code point."""
import sys
import unicodedata
from pathlib import Path

import pytest

from tokenizer import hf_tables

pytest.importorskip("tokenizers")


@pytest.mark.slow
def test_tables_match_the_tokenizers_library():
    if unicodedata.unidata_version != hf_tables.UNIDATA_VERSION:
        pytest.skip(f"hf_tables.py was generated against unicodedata {hf_tables.UNIDATA_VERSION}")
    sys.path.insert(0, str(Path(__file__).parent))
    import hf_tables_gen

    derived = hf_tables_gen.derive()
    assert set(derived) == {n for n in vars(hf_tables) if n.isupper()} - {"UNIDATA_VERSION"}
    for name, table in derived.items():
        assert getattr(hf_tables, name) == table, name
