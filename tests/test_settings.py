"""Settings: environment parsing, limits, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.models import BinaryEncoding, QueryEncoding
from app.settings import Settings


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMRAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MMRAG_CLIP__PRETRAINED", "none")
    monkeypatch.setenv("MMRAG_QUANTIZATION__ENCODING", "1bit")
    monkeypatch.setenv("MMRAG_QUANTIZATION__OVERSAMPLING", "6")
    monkeypatch.setenv("MMRAG_LLM__API_KEY", "sk-secret")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.data_dir == tmp_path
    assert s.clip.pretrained == "none"
    assert s.clip.model == "ViT-B-32"
    assert s.quantization.encoding is BinaryEncoding.ONE_BIT
    assert s.quantization.query_encoding is QueryEncoding.SCALAR4
    assert s.quantization.tuning().oversampling == 6.0
    assert s.quantization.tuning_explicit == {"oversampling"}
    assert s.llm.api_key is not None
    assert s.llm.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(s)


def test_index_settings_count_as_explicit_only_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).quantization.index_settings_explicit is False  # type: ignore[call-arg]
    monkeypatch.setenv("MMRAG_QUANTIZATION__OVERSAMPLING", "8")  # query time: still not explicit
    assert Settings(_env_file=None).quantization.index_settings_explicit is False  # type: ignore[call-arg]
    monkeypatch.setenv("MMRAG_QUANTIZATION__ENCODING", "2bit")
    assert Settings(_env_file=None).quantization.index_settings_explicit is True  # type: ignore[call-arg]


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MMRAG_COLLECTION=photos\nMMRAG_HTTP__PORT=9001\n")
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert (s.collection, s.http.port) == ("photos", 9001)


@pytest.mark.parametrize(
    "values",
    [
        {"collection": "../escape"},
        {"quantization": {"oversampling": 0.5}},
        {"ingestion": {"chunk_size": 200, "chunk_overlap": 200}},
        {"llm": {"provider": "mystery"}},
        {"http": {"port": 0}},
    ],
)
def test_bad_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]
