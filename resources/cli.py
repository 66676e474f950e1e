"""`streamable` command line: build, convert, verify and inspect SOCI indexes.

    streamable soci ztoc LAYER_FILE --media-type MT [--span-size N] [--build-tool-identifier S] -o OUT
    streamable soci convert SRC_REF DST_REF [--span-size N] [--min-layer-size N]
                            [--platform P ... | --all-platforms] [--format v2|v1] [--plain-http]
                            [--prefetch-profile FILE [--prefetch-granularity files|ranges]]
                            [--prefetch-file PATH ...] [--node-compat V]
    streamable soci verify REF [--sample N] [--file PATH ...] [--platform P] [--profile FILE] [--quick] [--json]
                           [--plain-http]
    streamable soci inspect ZTOC_FILE|REF [--entries N] [--plain-http]
    streamable soci profile REF [--timeout S] [--ready-log RE | --ready-tcp-port N] [-o FILE] [-- CMD ...]

Every registry command takes --timeout SECONDS (default 60): each registry operation (a manifest, a
request, a listing page) ends within it, retries included; blob reads and uploads get 1 s more per MiB.

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
import importlib.metadata
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from resources.defaults import SOCI_BUILD_TOOL_IDENTIFIER, SOCI_MIN_LAYER_SIZE, SOCI_SPAN_SIZE
from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.oci.refs import ImageRef
from resources.registry import RegistryClient
from resources.soci import limits
from resources.soci.convert import SociConverter
from resources.soci.node import NodeConfig
from resources.soci.node_compat import DEFAULT_NODE_COMPAT
from resources.soci.verify import locate_soci_indexes, verify_image
from resources.soci.ztoc.builder import ZtocBuilder
from resources.soci.ztoc.flatbuf import parse_ztoc
from resources.soci.ztoc.lazy import LazyLayerReader, LazyReadError
from resources.soci.ztoc.model import Ztoc
from resources.soci.ztoc.zlib_ctypes import ZlibError, inflate_library
from resources.startup.cli import add_profile_parser, split_command
from resources.startup.cost_inputs import start_cost_for_image
from resources.startup.profile import StartupProfile

PASSWORD_ENV = "STREAMABLE_REGISTRY_PASSWORD"
EXIT_OK, EXIT_VERIFY_FAILED, EXIT_ERROR = 0, 1, 2


class CliError(StreamableError):
    """An expected error: printed as one line, exit code 2."""


EXPECTED_ERRORS = (StreamableError, ValueError, OSError)
"""What main() prints as one line with exit code 2 (every error of ours, bad values, files and sockets)."""


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


def _line_writer(stream: TextIO) -> Callable[[str], None]:
    """A log function that writes each message as a line to `stream`."""

    def write(msg: str) -> None:
        stream.write(msg + "\n")

    return write


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# ---- commands --------------------------------------------------------------------------------


def _image_ref(text: str, err: TextIO) -> ImageRef:
    """Parse a reference; say so when it names no registry host and therefore means Docker Hub."""
    ref = ImageRef.parse(text)
    if ref.registry == "docker.io" and not text.startswith("docker.io/"):
        err.write(f"streamable: warning: {text!r} names no registry host: using docker.io (Docker Hub)\n")
    return ref


def _client(args: argparse.Namespace, registry: str) -> RegistryClient:
    password = os.environ.get(PASSWORD_ENV)
    if args.username and password is None:
        raise CliError(
            f"--username given but {PASSWORD_ENV} is not set (the password is read only from the environment)"
        )
    if password is not None and not args.username:
        raise CliError(f"{PASSWORD_ENV} is set but --username is not")
    return RegistryClient(
        registry,
        username=args.username or None,
        password=password if args.username else None,
        docker_config=Path(args.docker_config) if args.docker_config else None,
        plain_http=True if args.plain_http else None,
        retries=args.retries,
        timeout=min(float(args.timeout), 60.0),
        deadline=float(args.timeout),
    )


def cmd_ztoc(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    layer = Path(args.layer_file)
    info = layer.stat()
    if not stat.S_ISREG(info.st_mode):
        raise CliError(f"layer file {layer} is not a regular file: give the layer blob as a file (its size is the "
                       "layer's size, and reading stops there)")
    size = info.st_size
    progress = Progress(err)
    builder = ZtocBuilder(span_size=args.span_size, build_tool_identifier=args.build_tool_identifier)
    with layer.open("rb") as f:
        capped = _capped_chunks(f, size, layer)
        built = builder.build(capped, args.media_type, progress=progress.bytes_for(str(layer), size), layer=str(layer))
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


def _capped_chunks(f: BinaryIO, size: int, layer: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes, never more than the `size` it had when opened (a growing file is an error)."""
    left = size
    while left:
        data = f.read(min(chunk, left))
        if not data:
            raise CliError(f"layer file {layer} shrank while being read ({size - left} of {size} bytes)")
        left -= len(data)
        yield data
    if f.read(1):
        raise CliError(f"layer file {layer} grew while being read (more than its {size} bytes)")


def cmd_convert(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    src, dst = _image_ref(args.src, err), _image_ref(args.dst, err)
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
            log_fn=_line_writer(err) if args.verbose else (lambda _msg: None),
            prefetch_profile=StartupProfile.from_json(Path(args.prefetch_profile).read_bytes())
            if args.prefetch_profile
            else None,
            prefetch_granularity=args.prefetch_granularity,
            prefetch_files=args.prefetch_file or (),
            node_compat=args.node_compat,
            max_parallel_layers=args.parallel,
        )
        result = converter.convert(src, dst)
    out.write(result.to_json() + "\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    ref = _image_ref(args.ref, err)
    profile = StartupProfile.from_json(Path(args.profile).read_bytes()) if args.profile else None
    with _client(args, ref.registry) as client:
        report = verify_image(
            client, ref, sample=args.sample, required_files=args.file or (), platform=args.platform, seed=args.seed,
            quick=args.quick, node=NodeConfig(soci_v1=args.soci_v1),
            startup_files=[f.path for f in profile.files] if profile else (),
        )
        cost = start_cost_for_image(client, ref, profile) if profile is not None and report.passed else None
    as_json = args.json or not (hasattr(out, "isatty") and out.isatty())
    if as_json:
        doc = json.loads(report.to_json())
        if cost is not None:
            doc["startup"] = {"to_start": cost.lazy.summary, "modes": cost.table()}
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write((cost.summary + "\n" if cost is not None else "") + report.summary())
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
        ref = _image_ref(args.target, err)
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


def _bounded(name: str, bound: limits.Bound) -> Callable[[str], int]:
    """An argparse type: an integer within `bound`, else an error naming the flag and the allowed range."""
    def parse(text: str) -> int:
        try:
            return bound.check(name, int(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) if "out of range" in str(exc) else f"{name} must be an integer, "
                                             f"got {text!r}") from None
    return parse


def _registry_options(p: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    p.add_argument("--plain-http", action="store_true",
                   help="talk HTTP instead of HTTPS (loopback registries such as 127.0.0.1:5055 use HTTP anyway)")
    p.add_argument("--username", metavar="NAME", help=f"registry user; the password is read from ${PASSWORD_ENV} "
                   "(default: the registry's entry in the Docker config, else anonymous)")
    p.add_argument("--docker-config", metavar="PATH",
                   help="Docker config.json to read credentials from (default: $DOCKER_CONFIG/config.json, "
                        "else ~/.docker/config.json)")
    p.add_argument("--retries", type=_bounded("--retries", limits.RETRIES), default=5, metavar="N",
                   help="retries on connection errors, 429 and 5xx (default: %(default)s)")
    if timeout:
        p.add_argument("--timeout", type=_bounded("--timeout", limits.TIMEOUT_SECONDS), default=60, metavar="SECONDS",
                       help="deadline of each registry operation, retries included; blob reads and uploads get "
                            "1 s more per MiB (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log decisions and retries on stderr")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and example epilogs."""


def _version() -> str:
    """The installed package's version (package metadata) and the inflate library zTOC builds use."""
    try:
        version = importlib.metadata.version("streamable")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed: pip install -e .)"
    try:
        inflate = inflate_library().describe()
    except ZlibError as exc:
        inflate = str(exc)
    return f"{version} (inflate: {inflate})"


def _examples(*lines: str) -> str:
    return "example:\n" + "".join(f"  {line}\n" for line in lines)


EXAMPLES = {
    "top": _examples("streamable soci verify 127.0.0.1:5055/streamable/demo-app:latest",
                     "streamable soci inspect 127.0.0.1:5055/streamable/demo-app:latest"),
    "ztoc": _examples("streamable soci ztoc layer.tar.gz --media-type application/vnd.oci.image.layer.v1.tar+gzip "
                      "-o layer.ztoc"),
    "convert": _examples("streamable soci convert 127.0.0.1:5055/team/app:1.0 127.0.0.1:5055/team/app:1.0-soci "
                         "--all-platforms"),
    "verify": _examples("streamable soci verify 127.0.0.1:5055/team/app:1.0-soci --file app/bin/serve --sample 4"),
    "inspect": _examples("streamable soci inspect 127.0.0.1:5055/team/app:1.0-soci --entries 5",
                         "streamable soci inspect layer.ztoc"),
}
REF_HELP = ("image reference REGISTRY/REPOSITORY[:TAG|@DIGEST], e.g. 127.0.0.1:5055/team/app:1.0 "
            "(a reference without a registry host means Docker Hub)")


TOP_NOTES = (f"Credentials: --username NAME with the password in ${PASSWORD_ENV}, else the Docker config, else "
             "anonymous.\nExit codes: 0 success; 1 `verify` ran and the image would not lazy-load; 2 an error.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamable", description="Build, verify and inspect SOCI indexes.",
        epilog=EXAMPLES["top"] + "\n" + TOP_NOTES, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    top = parser.add_subparsers(dest="group", metavar="GROUP", help="command group (one so far: soci)")
    soci_parser = top.add_parser("soci", help="SOCI (Seekable OCI) indexes: ztoc, convert, verify, inspect",
                                 description="SOCI (Seekable OCI) indexes.", epilog=EXAMPLES["top"],
                                 formatter_class=_HelpFormatter)
    soci = soci_parser.add_subparsers(
        dest="command", metavar="COMMAND", help="what to do; COMMAND --help for its options"
    )
    commands: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = soci.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                              epilog=EXAMPLES[name], formatter_class=_HelpFormatter)
        commands[name] = sub
        return sub

    p = command("ztoc", "write the zTOC of a local layer blob")
    p.add_argument("layer_file", metavar="LAYER_FILE", help="a layer blob as stored in a registry (tar+gzip)")
    p.add_argument("--media-type", required=True, metavar="MT",
                   help="layer mediaType, e.g. application/vnd.oci.image.layer.v1.tar+gzip (required)")
    p.add_argument(
        "--span-size",
        type=_bounded("--span-size", limits.SPAN_SIZE),
        default=SOCI_SPAN_SIZE,
        metavar="BYTES",
        help="uncompressed bytes between two checkpoints; a lazy read fetches whole spans "
        "(default: %(default)s = 4 MiB, as soci-snapshotter)",
    )
    p.add_argument("--build-tool-identifier", default=SOCI_BUILD_TOOL_IDENTIFIER, metavar="NAME",
                   help="written into the zTOC header (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write the zTOC to (required)")
    p.set_defaults(func=cmd_ztoc)

    p = command("convert", "index an image in a registry and push the SOCI-enabled image")
    p.add_argument("src", metavar="SRC_REF", help="the image to index; " + REF_HELP)
    p.add_argument("dst", metavar="DST_REF", help="where to push the SOCI-enabled image (same registry as SRC_REF)")
    p.add_argument(
        "--span-size",
        type=_bounded("--span-size", limits.SPAN_SIZE),
        default=SOCI_SPAN_SIZE,
        metavar="BYTES",
        help="uncompressed bytes between two checkpoints (default: %(default)s = 4 MiB)",
    )
    p.add_argument(
        "--min-layer-size",
        type=_bounded("--min-layer-size", limits.MIN_LAYER_SIZE),
        default=SOCI_MIN_LAYER_SIZE,
        metavar="BYTES",
        help="layers smaller than this get no zTOC and are pulled whole (default: %(default)s = 10 MiB)",
    )
    p.add_argument("--build-tool-identifier", default=SOCI_BUILD_TOOL_IDENTIFIER, metavar="NAME",
                   help="written into every zTOC header (default: %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                       help="index this platform of a multi-platform image; repeat for several "
                            "(default: this machine's, linux/<arch>)")
    group.add_argument("--all-platforms", action="store_true", help="index every platform of the image")
    p.add_argument("--format", choices=("v2", "v1"), default="v2",
                   help="v2: an image index that points nodes at the SOCI index (soci-snapshotter >= 0.10 reads only "
                        "this by default); v1: a referrer of the image (default: %(default)s)")
    p.add_argument(
        "--prefetch-profile",
        metavar="FILE",
        default=None,
        help="startup profile JSON (`streamable soci profile`): "
        "write prefetch artifacts for the files it read (default: none)",
    )
    p.add_argument(
        "--prefetch-granularity", choices=("files", "ranges"), default="files",
        help="with --prefetch-profile: prefetch whole files, as soci convert --prefetch-file would, "
        "or only the spans of the byte ranges read (default: %(default)s)",
    )
    p.add_argument(
        "--prefetch-file", action="append", metavar="PATH",
        help="a path to prefetch, as soci convert --prefetch-file (repeatable; default: none)",
    )
    p.add_argument(
        "--node-compat", default=str(DEFAULT_NODE_COMPAT), metavar="V",
        help="oldest soci-snapshotter release the index must load on, v0.12..v0.15; v0.12 writes no prefetch "
        "artifacts, v0.13+ writes them, v0.14+ keeps zTOCs whose spans cross gzip member boundaries "
        "(default: %(default)s)",
    )
    p.add_argument("--parallel", type=_bounded("--parallel", limits.PARALLEL_LAYERS), default=None, metavar="N",
                   help="layers indexed at once; 1 = one after another (default: min(4, CPU cores))")
    _registry_options(p)
    p.set_defaults(func=cmd_convert)

    p = command("verify", "check that an image would lazy-load (exit 1 when not)")
    p.add_argument("ref", metavar="REF", help="the SOCI-enabled image; " + REF_HELP)
    p.add_argument("--sample", type=_bounded("--sample", limits.SAMPLE), default=8, metavar="N",
                   help="files to lazily read per platform, the largest always among them (default: %(default)s)")
    p.add_argument("--file", action="append", metavar="PATH",
                   help="a path that must be present and is always read, e.g. app/bin/serve (repeatable)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="verify only this platform (default: every platform that has a SOCI index)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the random file sample; the same seed reads the same files (default: %(default)s)")
    p.add_argument(
        "--profile",
        metavar="FILE",
        help="startup profile JSON (`streamable soci profile`): read its files first and print what a cold start "
        "fetches, 'to start: X MB of Y MB (Z%%)' (default: none)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="sample spans and files instead of proving every indexed layer in full (default: complete proof)",
    )
    p.add_argument("--json", action="store_true",
                   help="print the full JSON report (the default when stdout is not a terminal)")
    p.add_argument("--soci-v1", action="store_true",
                   help="nodes enable SOCI v1 (pull_modes.soci_v1); off by default since soci-snapshotter v0.10")
    _registry_options(p)
    p.set_defaults(func=cmd_verify)

    p = command("inspect", "summarize a zTOC file, or the SOCI indexes of an image")
    p.add_argument("target", metavar="ZTOC_FILE|REF", help="a zTOC file on disk, else an image reference")
    p.add_argument("--entries", type=_bounded("--entries", limits.ENTRIES), default=20, metavar="N",
                   help="how many TOC entries to list per zTOC (default: %(default)s)")
    _registry_options(p)
    p.set_defaults(func=cmd_inspect)

    add_profile_parser(soci, lambda p: _registry_options(p, timeout=False), _client)  # profile: its own --timeout
    parser.set_defaults(_help_for={None: parser, "soci": soci_parser, **commands})
    return parser


def _missing_command(args: argparse.Namespace, err: TextIO) -> int | None:
    """`streamable` or `streamable soci` without a command: the help of that level on stderr, exit 2."""
    if getattr(args, "func", None) is not None:
        return None
    key = None if args.group is None else "soci"
    err.write(args._help_for[key].format_help())
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to sys.exit)."""
    out = out or sys.stdout
    err = err or sys.stderr
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(options)
    missing = _missing_command(args, err)
    if missing is not None:
        return missing
    if command and not hasattr(args, "command_argv"):
        raise SystemExit(
            f"streamable: `-- CMD ...` is only for `soci profile`, not `{args.group} {getattr(args, 'command', '')}`"
        )
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
