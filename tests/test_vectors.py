"""The reference vectors (docs/vectors/, minimolkv/tools/vectors.py): regenerated and
compared bit for bit, so any change to any number of any block or model shows up here."""

import os

import numpy as np
import pytest

from minimolkv.tools import vectors

COMMITTED = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "vectors")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors")
    vectors.write(out)
    return out


def test_the_committed_set_is_small():
    total = sum(os.path.getsize(os.path.join(COMMITTED, f)) for f in os.listdir(COMMITTED))
    assert total < 1_000_000, f"docs/vectors holds {total:,} bytes"


def test_every_array_is_regenerated_bit_for_bit(fresh):
    names = sorted(os.listdir(COMMITTED))
    assert sorted(os.listdir(fresh)) == names
    for name in names:
        if not name.endswith(".npz"):
            continue
        with np.load(os.path.join(COMMITTED, name)) as old, np.load(os.path.join(fresh, name)) as new:
            assert list(old.keys()) == list(new.keys()), name
            for key in old:
                a, b = old[key], new[key]
                assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{name}: {key}"
                assert a.tobytes() == b.tobytes(), \
                    f"{name}: {key} differs, max |diff| {np.max(np.abs(a - b.astype(a.dtype)))}"


def test_the_readme_is_regenerated(fresh):
    with open(os.path.join(COMMITTED, "README.md"), encoding="utf-8") as f:
        old = f.read()
    with open(os.path.join(fresh, "README.md"), encoding="utf-8") as f:
        assert f.read() == old


@pytest.mark.parametrize("name", sorted(set(vectors.BLOCK_CASES) | set(vectors.MODEL_CASES)))
def test_tables_and_decoding_give_the_forward(name):
    """What a port checks too: the lookup tables and the decoding steps reproduce the forward."""
    with np.load(os.path.join(COMMITTED, name + ".npz")) as case:
        y = case["output.logits" if name.startswith("model-") else "output.y"]
        lut = case["output.logits_lut" if name.startswith("model-") else "output.y_lut"]
        steps = case["decode.logits" if name.startswith("model-") else "decode.y"]
        assert y.dtype == np.float64 and np.abs(y).max() > 0.1
        np.testing.assert_allclose(lut, y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(steps, y, rtol=1e-10, atol=1e-12)
        assert all(np.isfinite(case[k]).all() for k in case if k.startswith("grad."))
        assert any(np.abs(case[k]).max() > 1e-3 for k in case if k.startswith("grad."))


def test_the_command_refuses_a_file_as_out(tmp_path, capsys):
    from minimolkv.__main__ import main
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit) as refused:
        main(["vectors", "--out", str(tmp_path / "a-file")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--out" in err and "is a file" in err and "Traceback" not in err


def test_file_names_are_what_write_writes_and_a_folder_of_them_is_not_overwritten(fresh, tmp_path, capsys):
    from minimolkv.__main__ import main
    assert sorted(vectors.file_names()) == sorted(os.listdir(fresh))
    (tmp_path / "README.md").write_text("the user's own notes")
    with pytest.raises(SystemExit) as stop:
        main(["vectors", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "README.md" in capsys.readouterr().err
    assert (tmp_path / "README.md").read_text() == "the user's own notes"
