from server.settings import Settings


def test_comment_and_blank_lines_of_the_key_file_are_not_keys(tmp_path, monkeypatch):
    key_file = tmp_path / "keys"
    key_file.write_text("# rotated 2026-11-01, owner: platform team\n\nkey-one\n  # indented comment\nkey-two  \n")
    monkeypatch.delenv("SEE_API_KEYS", raising=False)
    settings = Settings(api_key_file=key_file, api_keys=["env-key"])
    assert settings.all_api_keys() == ["env-key", "key-one", "key-two"]
