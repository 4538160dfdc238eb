"""A tokenizer on its own: loaded from a GGUF file or an HF directory, or written as a tensor-less GGUF.

`EngineConfig.tokenizer` (vLLM's `tokenizer=`) replaces a model's tokenizer with one of these; a
random-weight model then needs no model file at all. A tensor-less GGUF keeps every key-value pair
of the source file byte for byte (vocabulary, merges, special tokens, chat template) and drops the
tensors: the packaged model's tokenizer in 1.8 MB instead of 98, small enough to carry to a machine
that has no copy of the model (the GPU runs of bench/gpu.py).

    python -m vivace.engine.loaders.tokenizer_file OUT.gguf [--from MODEL.gguf]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys

from vivace.engine.loaders.errors import ModelNotFoundError
from vivace.engine.loaders.gguf_file import GGUF_MAGIC, KV_START, GGUFFile
from vivace.engine.loaders.tokenizer_builders import tokenizer_from_gguf_metadata, tokenizer_from_hf_dir
from vivace.engine.tokenizer import Tokenizer


def load_tokenizer(path: str | None = None) -> Tokenizer:
    """The tokenizer of a .gguf file (its metadata; tensors are not read) or of an HF-layout directory.

    None is the packaged model's.
    """
    if path is None:
        from vivace.engine.loaders.default_model import default_model_path

        path = default_model_path()
    if os.path.isdir(path):
        return tokenizer_from_hf_dir(path)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"tokenizer path {path} does not exist (expected a .gguf file or an HF directory)")
    return tokenizer_from_gguf_metadata(GGUFFile(path).metadata)


def write_tokenizer_gguf(source: str, destination: str) -> int:
    """Write `source`'s metadata, without its tensors, as a GGUF file; returns the bytes written."""
    parsed = GGUFFile(source)
    if "tokenizer.ggml.tokens" not in parsed.metadata:
        raise ValueError(f"{source} has no tokenizer (no tokenizer.ggml.tokens key)")
    with open(source, "rb") as handle:
        header = handle.read(parsed.metadata_end)
    version, _tensors, kv_count = struct.unpack_from("<IQQ", header, len(GGUF_MAGIC))
    body = GGUF_MAGIC + struct.pack("<IQQ", version, 0, kv_count) + header[KV_START:]
    with open(destination, "wb") as handle:
        handle.write(body)
    return len(body)


def main(argv: list[str] | None = None) -> int:
    from vivace.engine.loaders.default_model import default_model_path

    parser = argparse.ArgumentParser(description="Write a model's tokenizer as a tensor-less GGUF file.")
    parser.add_argument("destination", help="the .gguf file to write")
    parser.add_argument("--from", dest="source", help="the model .gguf to take it from (default: the packaged model)")
    args = parser.parse_args(argv)
    source = args.source or default_model_path()
    size = write_tokenizer_gguf(source, args.destination)
    print(f"wrote {args.destination} ({size:,} bytes) from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
