"""The converted-model cache: two processes converting the same GGUF file at once."""

from llmpatch.model.loading import CONVERTED_MARKER, _publish_cache_folder


def _finished_folder(path, weights: bytes):
    path.mkdir()
    (path / "model.safetensors").write_bytes(weights)
    (path / CONVERTED_MARKER).write_text("{}")
    return path


def test_the_second_conversion_keeps_the_folder_the_first_one_published(tmp_path):
    target = tmp_path / "gguf-abc"
    _publish_cache_folder(_finished_folder(tmp_path / ".first.tmp", b"first"), target)
    reader = open(target / "model.safetensors", "rb")  # the first process is reading its weights
    second = _finished_folder(tmp_path / ".second.tmp", b"second")
    _publish_cache_folder(second, target)
    assert (target / "model.safetensors").read_bytes() == b"first"
    assert reader.read() == b"first"
    assert not second.exists()
    reader.close()


def test_a_half_written_folder_from_an_older_version_is_replaced(tmp_path):
    target = tmp_path / "gguf-abc"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"truncated")  # no marker: never finished
    _publish_cache_folder(_finished_folder(tmp_path / ".new.tmp", b"complete"), target)
    assert (target / "model.safetensors").read_bytes() == b"complete"
