"""How benchmarks/vs_llama_server.py builds llama-server: the commands, never a real build."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_server_bench() -> ModuleType:
    """``benchmarks/server_bench.py`` as a module (benchmarks are programs, not a package)."""
    path = ROOT / "benchmarks/server_bench.py"
    spec = importlib.util.spec_from_file_location("taleforge_server_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_server_bench()


def test_cmake_args_are_the_makefiles_one_definition(bench: ModuleType, tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        "LLAMA_CPP_VERSION := 0.3.36\n"
        "LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF  -DGGML_AVX2=ON\n"
        '\tCMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" pip install x\n'
    )
    assert bench.makefile_cmake_args(makefile) == ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON"]
    real = bench.makefile_cmake_args()  # the repository's Makefile still has the line
    assert real and all(arg.startswith("-D") for arg in real)
    makefile.write_text("CMAKE_ARGS := -DX=1\n")
    with pytest.raises(SystemExit, match="LLAMA_CMAKE_ARGS"):
        bench.makefile_cmake_args(makefile)


def test_a_fresh_cache_downloads_extracts_configures_and_builds(
    bench: ModuleType, tmp_path: Path
) -> None:
    plan = bench.build_plan("0.3.36", tmp_path, ["-DGGML_AVX2=ON"], cores=3)
    source = tmp_path / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    assert plan.binary == source / "build" / "bin" / "llama-server"
    (download_dir, download), (extract_dir, extract), (cmake_dir, configure), (_, make) = plan.steps
    assert download_dir == tmp_path and download[1:] == (
        "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "llama-cpp-python==0.3.36", "-d", str(tmp_path),
    )  # fmt: skip
    assert (extract_dir, extract) == (tmp_path, ("tar", "-xzf", "llama_cpp_python-0.3.36.tar.gz"))
    assert cmake_dir == source
    assert configure == (
        "cmake", "-S", ".", "-B", "build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_AVX2=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF",
    )  # fmt: skip
    assert make == ("cmake", "--build", "build", "--target", "llama-server", "-j", "3")


def test_what_is_there_is_not_done_again(bench: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "llama_cpp_python-0.3.36.tar.gz").touch()
    source = tmp_path / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    source.mkdir(parents=True)
    plan = bench.build_plan("0.3.36", tmp_path, [], cores=2)
    assert [command[:2] for _, command in plan.steps] == [("cmake", "-S"), ("cmake", "--build")]
    plan.binary.parent.mkdir(parents=True)
    plan.binary.touch()
    assert bench.build_plan("0.3.36", tmp_path, [], cores=2).steps == ()
