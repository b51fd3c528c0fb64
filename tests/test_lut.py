"""lut.py: tables on disk, memmapped, with an honest byte count."""

import numpy as np
import pytest

from minimolkv import mole
from minimolkv.gradcheck_layers import mole_params
from minimolkv.files import format_bytes
from minimolkv.lut import LookupTable, lut_footprint, open_lut, save_lut

D, F, N, V = 8, 6, 4, 50


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(3)
    params = mole_params(rng, D, F, N)
    emb = rng.standard_normal((V, D))
    lut = mole.build_lut(params, emb)["u"]                             # (V,N,D)
    path = tmp_path / "mole.npy"
    save_lut(path, lut)
    return params, emb, lut, path


def test_memmapped_and_in_memory_tables_give_identical_outputs(table):
    params, emb, lut, path = table
    on_disk = open_lut(path, shape=lut.shape, dtype=lut.dtype)
    assert isinstance(on_disk, np.memmap)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, V, size=(3, 7))
    h = rng.standard_normal((3, 7, D))
    np.testing.assert_array_equal(mole.forward_lut(params, h, ids, {"u": lut}),
                                  mole.forward_lut(params, h, ids, {"u": LookupTable(on_disk)}))


def test_bytes_read_per_token_is_n_times_d_times_itemsize(table):
    params, emb, lut, path = table
    counted = LookupTable(open_lut(path))
    ids = np.array([[1, 2, 2, 49], [0, 0, 0, 7]])
    mole.forward_lut(params, np.ones((2, 4, D)), ids, {"u": counted})
    assert counted.tokens_read == 8
    assert counted.bytes_read == 8 * N * D * 8
    assert counted.bytes_per_token == N * D * 8
    assert counted.nbytes == V * N * D * 8
    assert counted.on_disk and "on disk" in repr(counted)


def test_the_mole_paper_footprint():
    storage, per_token = lut_footprint(50304, 12, 4, 768, 2)   # 160M-4E, fp16
    assert per_token == 72 * 1024
    assert 3.4e9 < storage < 3.8e9
    assert format_bytes(per_token) == "72.0 KiB"


def test_wrong_shape_dtype_or_truncated_files_are_refused(table, tmp_path):
    params, emb, lut, path = table
    with pytest.raises(ValueError, match=r"shape \(50, 4, 8\), expected \(50, 4, 9\)"):
        open_lut(path, shape=(V, N, 9))
    with pytest.raises(ValueError, match="dtype float64, expected float32"):
        open_lut(path, dtype=np.float32)
    cut = tmp_path / "cut.npy"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        open_lut(cut)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not a table at all")
    with pytest.raises(ValueError, match="not a lookup table"):
        open_lut(junk)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_lut(tmp_path / "missing.npy")
    with pytest.raises(TypeError, match="3-D"):
        LookupTable(np.zeros((3, 4)))


def test_save_is_atomic_and_leaves_no_temp_files(table, tmp_path):
    params, emb, lut, path = table
    save_lut(path, lut * 2)                                     # overwrite in place
    np.testing.assert_array_equal(open_lut(path), lut * 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mole.npy"]
