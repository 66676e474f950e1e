"""Credentials from Docker config.json: auths, identity tokens and real credential-helper processes."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from resources.registry.docker_config import (
    Credentials,
    DockerConfigError,
    decode_basic_token,
    default_config_path,
    load_credentials,
    normalize_registry_key,
)

SECRET = "pa:ss-w0rd-" + os.urandom(4).hex()


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"127.0.0.1:5055": {"auth": b64(f"alice:{SECRET}")}}})
    assert load_credentials("127.0.0.1:5055", path) == Credentials(username="alice", password=SECRET)


def test_username_password_fields_and_url_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {
        "https://registry.example.com/v1/": {"username": "bob", "password": SECRET},
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
    }})
    assert load_credentials("registry.example.com", path) == Credentials(username="bob", password=SECRET)
    assert load_credentials("docker.io", path) == Credentials(username="hubuser", password="hubpass")
    assert load_credentials("other.example.com", path) is None


def test_identity_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"r.example.com": {"auth": b64("x:y"), "identitytoken": "refresh-123"}}})
    creds = load_credentials("r.example.com", path)
    assert creds is not None and creds.identity_token == "refresh-123" and creds.password is None


def test_decode_basic_token() -> None:
    assert decode_basic_token(b64(f"AWS:{SECRET}")) == ("AWS", SECRET)  # ECR authorizationToken shape
    assert decode_basic_token("not base64!") is None
    assert decode_basic_token(b64("nocolon")) is None


def test_repr_hides_secrets() -> None:
    creds = Credentials(username="alice", password=SECRET)
    assert SECRET not in repr(creds) and "alice" in repr(creds)
    assert "refresh-123" not in repr(Credentials(identity_token="refresh-123"))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"auth": "%%%not-base64%%%"}, "not valid base64"),
        ({"auth": b64("no-colon-" + SECRET.replace(":", ""))}, "with a non-empty username"),
        ({"auth": b64(":" + SECRET)}, "with a non-empty username"),
        ("a string", "must be an object"),
    ],
)
def test_bad_entries_name_file_and_registry_not_secret(tmp_path: Path, entry: object, message: str) -> None:
    path = write_config(tmp_path, {"auths": {"r.example.com": entry}})
    with pytest.raises(DockerConfigError) as exc:
        load_credentials("r.example.com", path)
    text = str(exc.value)
    assert message in text and str(path) in text and "r.example.com" in text
    assert SECRET not in text and SECRET.replace(":", "") not in text


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"auths": {"r.example.com": {"password": "' + SECRET + '"}} trailing junk')
    with pytest.raises(DockerConfigError, match="cannot read docker config") as exc:
        load_credentials("r.example.com", bad)
    # the JSON error (whose .doc is the whole file, secret included) is not attached
    assert exc.value.__context__ is None and exc.value.__cause__ is None
    with pytest.raises(DockerConfigError, match="does not exist"):
        load_credentials("r.example.com", tmp_path / "absent.json")


def test_default_path_follows_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert default_config_path() == tmp_path / "config.json"
    assert load_credentials("r.example.com") is None  # no file: anonymous, no error
    write_config(tmp_path, {"auths": {"r.example.com": {"username": "u", "password": "p"}}})
    assert load_credentials("r.example.com") == Credentials(username="u", password="p")


def test_normalize_registry_key() -> None:
    assert normalize_registry_key("https://R.Example.com:5000/v2/") == "r.example.com:5000"
    assert normalize_registry_key("registry-1.docker.io") == "docker.io"


def make_helper(bin_dir: Path, name: str, script: str) -> None:
    """A real docker-credential-<name> executable (a Python script) on PATH."""
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text(f"#!{sys.executable}\n{script}")
    helper.chmod(0o755)


HELPER = """
import json, sys
assert sys.argv[1] == "get"
server = sys.stdin.read().strip()
store = {"ecr.example.com": ("AWS", "ecr-token-xyz"), "tok.example.com": ("<token>", "identity-abc")}
if server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = store[server]
print(json.dumps({"ServerURL": server, "Username": user, "Secret": secret}))
"""


def test_cred_helpers_run_the_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_helper(tmp_path / "bin", "fake", HELPER)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    path = write_config(tmp_path, {
        "credHelpers": {"ecr.example.com": "fake", "tok.example.com": "fake", "gone.example.com": "fake"},
        "auths": {"gone.example.com": {"username": "file", "password": "fallback"}},
    })
    assert load_credentials("ecr.example.com", path) == Credentials(username="AWS", password="ecr-token-xyz")
    assert load_credentials("tok.example.com", path) == Credentials(identity_token="identity-abc")
    # the helper has no entry: fall back to the auths section
    assert load_credentials("gone.example.com", path) == Credentials(username="file", password="fallback")


def test_creds_store_missing_binary_falls_back_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, {"credsStore": "definitely-not-installed",
                                   "auths": {"r.example.com": {"username": "u", "password": "p"}}})
    with caplog.at_level(logging.WARNING):
        assert load_credentials("r.example.com", path) == Credentials(username="u", password="p")
    assert "docker-credential-definitely-not-installed is not on PATH" in caplog.text


def test_failing_helper_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_helper(tmp_path / "bin", "broken", f"import sys\nprint('boom {SECRET}', file=sys.stderr)\nsys.exit(3)\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    path = write_config(tmp_path, {"credsStore": "broken"})
    with pytest.raises(DockerConfigError) as exc:
        load_credentials("r.example.com", path)
    assert "docker-credential-broken failed for r.example.com (exit 3)" in str(exc.value)
    assert SECRET not in str(exc.value)
