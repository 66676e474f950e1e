"""Build output goes to the Dagster log in headed batches, and `make demo` gets it back as one clean block."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at runtime.
import importlib.util
from pathlib import Path

import dagster as dg

from pipelines.logstream import BUILD_OUTPUT, BatchedLog, split_batch

ROOT = Path(__file__).resolve().parents[2]


def load_demo():
    """scripts/demo.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("streamable_demo", ROOT / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batches_carry_a_header_and_split_back_into_the_same_lines() -> None:
    emitted: list[str] = []
    lines = ["#1 [internal] load build definition", "", "#2 DONE 0.0s", "x: Pushed", "digest: sha256:ab", "last", "7"]
    with BatchedLog(emitted.append, max_lines=3, max_seconds=3600) as log:
        for line in lines:
            log(line)
    assert [m.split("\n", 1)[0] for m in emitted] == [f"{BUILD_OUTPUT}, lines 1-3", f"{BUILD_OUTPUT}, lines 4-6",
                                                      f"{BUILD_OUTPUT}, lines 7-7"]
    assert [line for m in emitted for line in split_batch(m) or []] == lines
    assert split_batch("building svc at 0123abcd -> 127.0.0.1:5000/team/svc:build-x") is None
    assert split_batch("canary output, lines 1-2\na\nb") is None
    assert split_batch("canary output, lines 1-2\na\nb", title="canary output") == ["a", "b"]


def test_demo_prints_the_build_step_output_without_other_log_messages(tmp_path: Path) -> None:
    build_lines = [f"#{i} step {i}" for i in range(1, 8)] + ["The push refers to repository [127.0.0.1:5000/x]"]

    @dg.asset(name="image")
    def image(context: dg.AssetExecutionContext) -> int:
        context.log.info("building x at 0123abcd")
        with BatchedLog(context.log.info, max_lines=3, max_seconds=3600) as log:
            for n, line in enumerate(build_lines):
                log(line)
                if n == 4:
                    context.log.warning("a warning in between")
        return 1

    @dg.asset(deps=[image])
    def soci_index(context: dg.AssetExecutionContext) -> None:
        context.log.info(f"{BUILD_OUTPUT}, lines 1-1\nfrom another step")

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([image, soci_index], instance=instance)
        assert result.success
        entries = list(instance.all_logs(result.run_id))
    assert load_demo().build_output(entries) == build_lines
