"""The Dockerfiles, checked by reading them (no docker engine needed).

Every COPY source must exist in the build context and survive .dockerignore; every config and
``lit-seqrl`` command they run must exist; installs come in a buildable order.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lit_seqrl.cli import EXTRA_COMMANDS, main
from tests.helpers import REPO

DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out, pending, start = [], "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by docker
        start = start or number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending, start = "", 0
    assert not pending, f"{path.name}: dangling line continuation"
    return out


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def copy_sources(inst: Instruction) -> list[str]:
    words = exec_form(inst.args)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return []  # from another stage, not the build context
    paths = [w for w in words if not w.startswith("--")]
    assert len(paths) >= 2, f"line {inst.line}: COPY needs a source and a destination"
    return paths[:-1]


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # Docker's matching: '*' and '?' stay within one path component, '**' spans any number.
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops ``rel`` (a path in the context) or a directory above it."""
    parts = Path(rel).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:  # the last matching pattern wins; '!' re-includes
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.match(c) for c in candidates):
            result = not negate
    return result


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request) -> tuple[Path, list[Instruction]]:
    return request.param, parse(request.param)


def test_both_dockerfiles_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]
    assert (REPO / ".dockerignore").is_file()


def test_every_copy_source_is_in_the_build_context(dockerfile):
    path, instructions = dockerfile
    patterns = dockerignore_patterns()
    copies = [inst for inst in instructions if inst.keyword in ("COPY", "ADD")]
    assert copies, f"{path.name} copies nothing"
    for inst in copies:
        assert inst.keyword == "COPY", f"{path.name}:{inst.line}: use COPY, not ADD"
        for src in copy_sources(inst):
            matches = list(REPO.glob(src))
            assert matches, f"{path.name}:{inst.line}: COPY source {src!r} does not exist"
            for match in matches:
                rel = match.relative_to(REPO).as_posix()
                assert not ignored(rel, patterns), (
                    f"{path.name}:{inst.line}: {src!r} is excluded by .dockerignore"
                )


def test_the_package_is_installed_after_its_sources_are_copied(dockerfile):
    path, instructions = dockerfile
    copied: set[str] = set()
    installed = False
    for inst in instructions:
        if inst.keyword == "COPY":
            copied.update(src.rstrip("/") for src in copy_sources(inst))
        if inst.keyword == "RUN" and re.search(r"pip install [^&]*\"?\.(\[\w+\])?\"?(\s|$)", inst.args):
            missing = {"pyproject.toml", "README.md", "lit_seqrl"} - copied
            assert not missing, f"{path.name}:{inst.line}: `pip install .` before copying {sorted(missing)}"
            assert "torch" in "".join(i.args for i in instructions[: instructions.index(inst)]), (
                f"{path.name}: install torch from the right index before the package"
            )
            installed = True
    assert installed, f"{path.name} never installs the package"


def test_referenced_configs_and_commands_exist(dockerfile):
    path, instructions = dockerfile
    commands = set(LIGHTNING_COMMANDS) | set(EXTRA_COMMANDS)
    runs = [inst for inst in instructions if inst.keyword in ("RUN", "CMD", "ENTRYPOINT")]
    text = " ".join(" ".join(exec_form(i.args)) if i.keyword != "RUN" else i.args for i in runs)
    for config in re.findall(r"configs/[\w./-]+\.ya?ml", text):
        assert (REPO / config).is_file(), f"{path.name} references missing {config}"
    for command in re.findall(r"lit-seqrl\s+([\w-]+)", text):
        assert command in commands, f"{path.name} runs unknown `lit-seqrl {command}`"
    (cmd,) = [inst for inst in instructions if inst.keyword == "CMD"]
    assert exec_form(cmd.args) == ["lit-seqrl", "fit", "--config", "configs/dt_pendulum.yaml"]


def test_default_command_parses(monkeypatch, capsys):
    # The images run it from a directory holding configs/, as the repository root does.
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["lit-seqrl"])  # LightningCLI warns when both are given
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "configs/dt_pendulum.yaml", "--print_config"])
    assert info.value.code in (0, None)
    assert "class_path: lit_seqrl.agents.DecisionAgent" in capsys.readouterr().out


def test_cpu_image_uses_the_cpu_torch_index():
    text = (REPO / "docker" / "Dockerfile.cpu").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text


def test_cuda_image_builds_the_kernels_against_its_torch():
    instructions = parse(REPO / "docker" / "Dockerfile.cuda")
    (base,) = [i for i in instructions if i.keyword == "FROM"]
    assert base.args.startswith("nvidia/cuda:") and "-devel-" in base.args  # nvcc is needed
    args = {i.args.split("=")[0] for i in instructions if i.keyword == "ARG"}
    assert "TORCH_CUDA_ARCH_LIST" in args
    for package in ("causal-conv1d", "mamba-ssm"):
        (inst,) = [i for i in instructions if i.keyword == "RUN" and package in i.args]
        install = next(part for part in inst.args.split("&&") if package in part)
        assert "--no-build-isolation" in install, f"{package} must build against the installed torch"
    # mamba-ssm compiles selective_scan_cuda only when MAMBA_KEEP_CUDA_BUILD=TRUE is set at build time.
    mamba_run = next(k for k, i in enumerate(instructions) if i.keyword == "RUN" and "mamba-ssm" in i.args)
    assert any(
        i.keyword == "ENV" and re.search(r"\bMAMBA_KEEP_CUDA_BUILD=TRUE\b", i.args)
        for i in instructions[:mamba_run]
    )
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "cuda" in extras and '".[cuda]"' in (REPO / "docker" / "Dockerfile.cuda").read_text()


def test_dockerignore_matcher():
    patterns = ["**/__pycache__", "build", "*.egg-info", "!keep.egg-info"]
    assert ignored("lit_seqrl/__pycache__/x.pyc", patterns)
    assert ignored("build/lib/x.py", patterns) and not ignored("lit_seqrl/build.py", patterns)
    assert ignored("a.egg-info", patterns) and not ignored("keep.egg-info", patterns)
    assert not ignored("lit_seqrl/cli.py", dockerignore_patterns())
