"""vegalm.io: atomic writes publish whole files with the usual permissions, or nothing."""

import os
import stat

import pytest

from vegalm.io import atomic_path, write_json, write_text


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    write_text(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"x": 1})
    for name in ("a.txt", "b.json"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o666 & ~umask, f"{name}: mode {oct(mode)}, expected {oct(0o666 & ~umask)}"


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_dirs_follow_the_umask(tmp_path):
    import os
    import stat

    from vegalm.io import atomic_dir

    with atomic_dir(tmp_path / "best") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        os.chmod(tmp / "model.safetensors", 0o600)  # as some writers leave weights
        (tmp / "sub").mkdir()
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "best").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "best" / "sub").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "best" / "model.safetensors").stat().st_mode) == 0o666 & ~mask
