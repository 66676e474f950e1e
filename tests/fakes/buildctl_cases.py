"""Helpers for tests that replay the real buildctl v0.23.2 transcripts: requests and TLS files that match them."""

from __future__ import annotations

import json
from pathlib import Path

from resources.builders.base import BuildRequest
from resources.builders.tls import TlsFromFiles

TRANSCRIPTS = Path(__file__).resolve().parent / "buildctl_transcripts" / "v0.23.2"
CONTEXT = TRANSCRIPTS / "context"
"""The transcripts' build context (Dockerfile, Dockerfile.fail, Dockerfile.slow, src/)."""


def argv(case: str) -> list[str]:
    """The recorded argv of a case (argv[0] included)."""
    return json.loads((TRANSCRIPTS / f"{case}.argv").read_text())


def output(case: str) -> str:
    """stderr then stdout of a case, as the builder sees them merged."""
    return (TRANSCRIPTS / f"{case}.stderr").read_text() + (TRANSCRIPTS / f"{case}.stdout").read_text()


def metadata(case: str) -> dict:
    """The --metadata-file content buildctl wrote for a successful build."""
    return json.loads((TRANSCRIPTS / f"{case}.metadata.json").read_text())


def _opt_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def request_for(case: str, *, secret_file: Path | None = None, target: str = "app", **changes: object) -> BuildRequest:
    """The BuildRequest whose `BuildctlBuilder.build_argv` is the case's recorded build argv."""
    args = argv(case)
    opts = dict(o.split("=", 1) for o in _opt_values(args, "--opt"))
    output_attrs = dict(kv.split("=", 1) for kv in _opt_values(args, "--output")[0].split(","))
    cache = _opt_values(args, "--export-cache")
    secrets = {}
    for spec in _opt_values(args, "--secret"):
        sid = dict(kv.split("=", 1) for kv in spec.split(","))["id"]
        if secret_file is None:
            raise ValueError(f"transcript {case} mounts secret {sid!r}: pass secret_file")
        secrets[sid] = secret_file
    fields: dict[str, object] = {
        "target": target,
        "image_ref": output_attrs["name"],
        "dockerfile": opts.pop("filename"),
        "context_dir": CONTEXT,
        "target_stage": opts.pop("target", None),
        "platforms": tuple(opts.pop("platform").split(",")) if "platform" in opts else (),
        "build_args": {k[len("build-arg:"):]: v for k, v in opts.items() if k.startswith("build-arg:")},
        "labels": {k[len("label:"):]: v for k, v in opts.items() if k.startswith("label:")},
        "secrets": secrets,
        "cache_ref": dict(kv.split("=", 1) for kv in cache[0].split(","))["ref"] if cache else None,
    }
    fields.update(changes)
    return BuildRequest(**fields)  # type: ignore[arg-type]


def tls_files(root: Path, *, key_content: str = "KEY") -> TlsFromFiles:
    """Client TLS files (dummy PEM text; the stand-in only checks they exist) with the transcripts' server name."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (root / name).write_text(key_content if name == "key.pem" else name.upper())
    return TlsFromFiles(root / "ca.pem", root / "cert.pem", root / "key.pem", server_name="buildkitd")
