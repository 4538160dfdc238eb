"""Our GGUF header parser against gguf-py's GGUFReader, on tiny files and the packaged model."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from vivace.engine.loaders.errors import CorruptModelError, UnsupportedModelError
from vivace.engine.loaders.gguf_file import GGUFFile


def _assert_same_as_reader(path: str) -> None:
    ours = GGUFFile(path)
    reader = gguf.GGUFReader(path)
    expected = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert ours.metadata == expected
    assert [t.name for t in ours.tensors] == [t.name for t in reader.tensors]
    for info, tensor in zip(ours.tensors, reader.tensors, strict=True):
        assert info.tensor_type == tensor.tensor_type
        assert info.shape == tuple(reversed(tensor.shape.tolist()))
        assert (info.offset, info.n_bytes) == (tensor.data_offset, tensor.n_bytes)
        assert np.array_equal(ours.tensor_bytes(info).reshape(-1), tensor.data.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_1], ids=lambda t: t.name)
def test_tiny_files_match_gguf_reader(tiny_gguf, qtype: Q) -> None:
    _assert_same_as_reader(str(tiny_gguf(matrix_type=qtype)))


@pytest.mark.slow
def test_packaged_model_matches_gguf_reader(smollm_path: str) -> None:
    _assert_same_as_reader(smollm_path)


def test_metadata_value_types(tiny_gguf) -> None:
    def extra(writer: gguf.GGUFWriter) -> None:
        writer.add_bool("test.flag", True)
        writer.add_int8("test.i8", -5)
        writer.add_uint64("test.u64", 2**40)
        writer.add_float64("test.f64", 0.1)
        writer.add_array("test.floats", [0.5, 1.5])
        writer.add_array("test.strings", ["a", "é", ""])

    meta = GGUFFile(str(tiny_gguf(extra_kv=extra))).metadata
    assert meta["test.flag"] is True and meta["test.i8"] == -5 and meta["test.u64"] == 2**40
    assert meta["test.f64"] == 0.1 and meta["test.floats"] == [0.5, 1.5] and meta["test.strings"] == ["a", "é", ""]


def test_header_cut_inside_metadata(tiny_gguf, tmp_path) -> None:
    data = tiny_gguf().read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:200])
    with pytest.raises(CorruptModelError, match="truncated"):
        GGUFFile(str(path))


def test_every_cut_inside_the_header_is_truncated(tiny_gguf, tmp_path) -> None:
    """Cuts through string arrays (the vocabulary) and every other field are reported, never misread."""
    data = tiny_gguf().read_bytes()
    header_end = GGUFFile(str(tiny_gguf(name="whole.gguf"))).tensors[0].offset
    assert header_end > 1000  # the metadata holds a vocabulary
    path = tmp_path / "cut.gguf"
    for cut in range(24, min(header_end, 6000), 97):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptModelError, match="truncated"):
            GGUFFile(str(path))


def test_unsupported_version(tmp_path) -> None:
    path = tmp_path / "v9.gguf"
    path.write_bytes(b"GGUF" + (9).to_bytes(4, "little") + bytes(16))
    with pytest.raises(UnsupportedModelError, match="version 9"):
        GGUFFile(str(path))
