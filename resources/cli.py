"""`streamable` command line: build, convert, verify and inspect SOCI indexes.

    streamable soci ztoc LAYER_FILE --media-type MT [--span-size N] [--build-tool-identifier S] -o OUT
    streamable soci convert SRC_REF DST_REF [--span-size N] [--min-layer-size N]
                            [--platform P ... | --all-platforms] [--format v2|v1] [--plain-http]
                            [--prefetch-profile FILE [--prefetch-granularity files|ranges]]
                            [--prefetch-file PATH ...] [--node-compat V]
    streamable soci verify REF [--sample N] [--file PATH ...] [--platform P] [--plain-http]
    streamable soci inspect ZTOC_FILE|REF [--entries N] [--plain-http]
    streamable soci profile REF [--timeout S] [--ready-log RE | --ready-tcp-port N] [-o FILE] [-- CMD ...]

Registry credentials: `--username NAME` with the password in the environment variable
STREAMABLE_REGISTRY_PASSWORD (never on the command line, where `ps` would show it), else the
registry's entry in the Docker config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`,
or `--docker-config PATH`), else anonymous.

Exit codes: 0 success; 1 `verify` ran and the image would not lazy-load; 2 an error (one line on
stderr, no traceback).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from resources.defaults import SOCI_BUILD_TOOL_IDENTIFIER, SOCI_MIN_LAYER_SIZE, SOCI_SPAN_SIZE
from resources.registry.docker_config import DockerConfigError
from resources.oci.refs import ImageRef
from resources.errors import StreamableError
from resources.registry import RegistryClient, RegistryError
from resources.oci import media_types as mt
from resources.soci.convert import SociConverter, SociConvertError
from resources.soci.index import SociIndexError
from resources.soci.node_compat import DEFAULT_NODE_COMPAT
from resources.oci.platforms import PlatformError
from resources.soci.verify import locate_soci_indexes, verify_image
from resources.soci.ztoc.builder import ZtocBuilder, ZtocBuildError
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.lazy import LazyLayerReader, LazyReadError
from resources.soci.ztoc.model import Ztoc, ZtocFormatError
from resources.startup.profile import StartupProfile
from resources.startup.cli import add_profile_parser, split_command

PASSWORD_ENV = "STREAMABLE_REGISTRY_PASSWORD"
EXIT_OK, EXIT_VERIFY_FAILED, EXIT_ERROR = 0, 1, 2


class CliError(Exception):
    """An expected error: printed as one line, exit code 2."""


EXPECTED_ERRORS = (
    CliError,
    StreamableError,
    SociConvertError,
    SociIndexError,
    RegistryError,
    DockerConfigError,
    PlatformError,
    ZtocBuildError,
    ZtocFormatError,
    LazyReadError,
    ValueError,
    OSError,
)


# ---- progress ----------------------------------------------------------------------------------


class Progress:
    """Bytes processed per layer on a terminal (stderr), silent otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._last: tuple[str, int] | None = None

    def layer(self, digest: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        step = done * 50 // total if total else 0
        if self._last == (digest, step) and done != total:
            return
        self._last = (digest, step)
        short = digest.split(":", 1)[-1][:12]
        pct = f"{100 * done // total:3d}%" if total else ""
        self.stream.write(f"\rlayer {short}: {_mib(done)} / {_mib(total)} {pct}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def bytes_for(self, label: str, total: int) -> Callable[[int], None]:
        return lambda done: self.layer(label, done, total)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# ---- commands --------------------------------------------------------------------------------


def _client(args: argparse.Namespace, registry: str) -> RegistryClient:
    password = os.environ.get(PASSWORD_ENV)
    if args.username and password is None:
        raise CliError(f"--username given but {PASSWORD_ENV} is not set (the password is read only from the environment)")
    if password is not None and not args.username:
        raise CliError(f"{PASSWORD_ENV} is set but --username is not")
    return RegistryClient(
        registry,
        username=args.username or None,
        password=password if args.username else None,
        docker_config=Path(args.docker_config) if args.docker_config else None,
        plain_http=True if args.plain_http else None,
        retries=args.retries,
    )


def cmd_ztoc(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    layer = Path(args.layer_file)
    size = layer.stat().st_size
    progress = Progress(err)
    builder = ZtocBuilder(span_size=args.span_size, build_tool_identifier=args.build_tool_identifier)
    with layer.open("rb") as f:
        built = builder.build(f, args.media_type, progress=progress.bytes_for(str(layer), size), layer=str(layer))
    Path(args.output).write_bytes(built.data)
    summary = {
        "layer": str(layer),
        "layer_digest": built.layer_digest,
        "media_type": args.media_type,
        "layer_size": built.compressed_size,
        "ztoc": args.output,
        "ztoc_digest": built.digest,
        "ztoc_size": built.size,
        "span_size": built.span_size,
        "spans": built.ztoc.compression.max_span_id + 1,
        "files": len(built.ztoc.entries),
        "disable_xattrs": built.disable_xattrs,
    }
    out.write(json.dumps(summary, indent=2) + "\n")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    src, dst = ImageRef.parse(args.src), ImageRef.parse(args.dst)
    progress = Progress(err)
    with _client(args, src.registry) as client:
        converter = SociConverter(
            client,
            span_size=args.span_size,
            min_layer_size=args.min_layer_size,
            build_tool_identifier=args.build_tool_identifier,
            format=args.format,
            platforms=args.platform or None,
            all_platforms=args.all_platforms,
            progress=progress.layer,
            log_fn=(lambda msg: err.write(msg + "\n")) if args.verbose else (lambda _msg: None),
            prefetch_profile=StartupProfile.from_json(Path(args.prefetch_profile).read_bytes()) if args.prefetch_profile else None,
            prefetch_granularity=args.prefetch_granularity,
            prefetch_files=args.prefetch_file or (),
            node_compat=args.node_compat,
        )
        result = converter.convert(src, dst)
    out.write(result.to_json() + "\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    ref = ImageRef.parse(args.ref)
    with _client(args, ref.registry) as client:
        report = verify_image(
            client, ref, sample=args.sample, required_files=args.file or (), platform=args.platform, seed=args.seed
        )
    out.write(report.to_json() + "\n")
    if not report.passed:
        err.write(f"streamable: {ref} would not lazy-load: {report.failure}\n")
        return EXIT_VERIFY_FAILED
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    target = Path(args.target)
    if target.exists():
        data = target.read_bytes()
        out.write(describe_ztoc(parse_ztoc(data), f"zTOC file {target}", len(data), args.entries))
        return EXIT_OK
    try:
        ref = ImageRef.parse(args.target)
    except ValueError:
        raise CliError(f"{args.target!r} is neither an existing zTOC file nor an image reference") from None
    with _client(args, ref.registry) as client:
        found = locate_soci_indexes(client, ref)
        if not found:
            raise CliError(f"no SOCI index found for {ref}")
        for item in found:
            out.write(
                f"platform {item.platform}: image manifest {item.manifest_digest}\n"
                f"  SOCI index {item.soci_index_digest} ({item.version})\n"
            )
            for d in item.ztocs:
                layer = (d.annotations or {}).get(mt.ANNOTATION_LAYER_DIGEST, "?")
                data = client.get_blob(ref.repository, d.digest)
                text = describe_ztoc(parse_ztoc(data), f"zTOC {d.digest} for layer {layer}", len(data), args.entries)
                out.write("".join("  " + line + "\n" for line in text.splitlines()))
    return EXIT_OK


def describe_ztoc(ztoc: Ztoc, title: str, size: int, max_entries: int) -> str:
    """A readable summary of a zTOC: header, span layout, entry counts, and the first entries."""
    try:
        span_size: int | str = LazyLayerReader(ztoc, lambda _s, _e: b"").span_size
    except (LazyReadError, ValueError) as exc:
        span_size = f"unreadable ({exc})"
    kinds = collections.Counter(e.type for e in ztoc.entries)
    regular = [e for e in ztoc.entries if e.type == "reg"]
    lines = [
        f"{title} ({size} bytes)",
        f"version {ztoc.version}, build tool {ztoc.build_tool_identifier!r}",
        f"layer blob {ztoc.compressed_archive_size} bytes, uncompressed tar {ztoc.uncompressed_archive_size} bytes",
        f"compression {ztoc.compression.algorithm.name.lower()}, span size {span_size}, "
        f"spans {ztoc.compression.max_span_id + 1}, span digests {len(ztoc.compression.span_digests)}",
        f"entries {len(ztoc.entries)}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        f"regular file bytes {sum(e.uncompressed_size for e in regular)}",
    ]
    if ztoc.entries and max_entries:
        lines.append(f"{'type':<8} {'mode':>7} {'size':>12} {'offset':>12}  name")
        for e in ztoc.entries[:max_entries]:
            name = e.name + (f" -> {e.linkname}" if e.linkname else "")
            lines.append(f"{e.type:<8} {e.mode:>7o} {e.uncompressed_size:>12} {e.uncompressed_offset:>12}  {name}")
        if len(ztoc.entries) > max_entries:
            lines.append(f"... {len(ztoc.entries) - max_entries} more entries")
    return "\n".join(lines) + "\n"


# ---- argument parsing ------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _registry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true", help="talk HTTP instead of HTTPS (loopback registries use HTTP anyway)")
    p.add_argument("--username", help=f"registry user; the password is read from ${PASSWORD_ENV}")
    p.add_argument("--docker-config", help="Docker config.json to read credentials from")
    p.add_argument("--retries", type=_non_negative, default=5, help="retries on connection errors, 429 and 5xx")
    p.add_argument("-v", "--verbose", action="store_true", help="log decisions and retries on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamable", description="Build, verify and inspect SOCI indexes.")
    top = parser.add_subparsers(dest="group", required=True)
    soci = top.add_parser("soci", help="SOCI (Seekable OCI) indexes").add_subparsers(dest="command", required=True)

    p = soci.add_parser("ztoc", help="write the zTOC of a local layer blob")
    p.add_argument("layer_file")
    p.add_argument("--media-type", required=True, help="layer mediaType, e.g. application/vnd.oci.image.layer.v1.tar+gzip")
    p.add_argument("--span-size", type=_positive, default=SOCI_SPAN_SIZE)
    p.add_argument("--build-tool-identifier", default=SOCI_BUILD_TOOL_IDENTIFIER)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_ztoc)

    p = soci.add_parser("convert", help="index an image in a registry and push the SOCI-enabled image")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--span-size", type=_positive, default=SOCI_SPAN_SIZE)
    p.add_argument("--min-layer-size", type=_non_negative, default=SOCI_MIN_LAYER_SIZE)
    p.add_argument("--build-tool-identifier", default=SOCI_BUILD_TOOL_IDENTIFIER)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--platform", action="append", help="os/arch[/variant]; repeat for several")
    group.add_argument("--all-platforms", action="store_true")
    p.add_argument("--format", choices=("v2", "v1"), default="v2")
    p.add_argument(
        "--prefetch-profile", metavar="FILE", default=None,
        help="startup profile JSON (`streamable soci profile`): write prefetch artifacts for the files it read (default: none)",
    )
    p.add_argument(
        "--prefetch-granularity", choices=("files", "ranges"), default="files",
        help="with --prefetch-profile: prefetch whole files, as soci convert --prefetch-file would (default), "
        "or only the spans of the byte ranges read",
    )
    p.add_argument(
        "--prefetch-file", action="append", metavar="PATH",
        help="a path to prefetch, as soci convert --prefetch-file (repeatable; default: none)",
    )
    p.add_argument(
        "--node-compat", default=str(DEFAULT_NODE_COMPAT), metavar="V",
        help="oldest soci-snapshotter release the index must load on, v0.12..v0.15 (default v0.12: no prefetch "
        "artifacts; v0.13+ writes them; v0.14+ keeps zTOCs whose spans cross gzip member boundaries)",
    )
    _registry_options(p)
    p.set_defaults(func=cmd_convert)

    p = soci.add_parser("verify", help="check that an image would lazy-load (exit 1 when not)")
    p.add_argument("ref")
    p.add_argument("--sample", type=_non_negative, default=8, help="files to lazily read per platform (at least the largest)")
    p.add_argument("--file", action="append", help="a path that must be present and is always read (repeatable)")
    p.add_argument("--platform", help="verify only this platform")
    p.add_argument("--seed", type=int, default=0)
    _registry_options(p)
    p.set_defaults(func=cmd_verify)

    p = soci.add_parser("inspect", help="summarize a zTOC file, or the SOCI indexes of an image")
    p.add_argument("target", metavar="ZTOC_FILE|REF")
    p.add_argument("--entries", type=_non_negative, default=20, help="how many TOC entries to list")
    _registry_options(p)
    p.set_defaults(func=cmd_inspect)

    add_profile_parser(soci, _registry_options, _client)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to sys.exit)."""
    out = out or sys.stdout
    err = err or sys.stderr
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(options)
    if command and not hasattr(args, "command_argv"):
        raise SystemExit(f"streamable: `-- CMD ...` is only for `soci profile`, not `{args.group} {getattr(args, 'command', '')}`")
    args.command_argv = command
    verbose = bool(getattr(args, "verbose", False))
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("streamable: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    # Retries and reuse decisions are noise in scripts: shown with -v, or on a terminal.
    root.setLevel(logging.INFO if verbose else logging.WARNING if err.isatty() else logging.ERROR)
    try:
        return int(args.func(args, out, err))
    except EXPECTED_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        err.write(f"streamable: error: {message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("streamable: interrupted\n")
        return 130
    finally:
        root.removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
