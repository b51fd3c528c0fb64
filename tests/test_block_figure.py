"""The picture of one MoLKV layer (minimolkv/tools/block_figure.py, docs/block.png)."""

from minimolkv.tools import block_figure


def test_the_script_writes_the_picture_the_docs_show(tmp_path, capsys):
    out = tmp_path / "block.png"
    block_figure.main(["--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"           # a PNG, not an empty file
    assert f"saved {out}" in capsys.readouterr().out


def test_the_picture_is_the_same_from_one_run_to_the_next(tmp_path):
    """docs/block.png changes only when the drawing does: no date or version in the file."""
    block_figure.draw(tmp_path / "a.png")
    block_figure.draw(tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
