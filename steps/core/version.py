"""The code version recorded in manifests and cache keys: package version plus a hash of the stage sources.

The hash makes a local edit of stage code invalidate cached results even when the version number did not move.
A task's cache key hashes only the code its stage can run (`stage_code_version`): an edit of the training code
re-runs training and what follows it, not the archive ingest before it.
"""

import ast
import functools
import hashlib
from importlib import metadata
from pathlib import Path

PACKAGE = "stellar-pipeline"


def package_version() -> str:
    """The installed package version (the image tag in a cluster)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0.0.0"


ROOT = Path(__file__).resolve().parents[1]  # the `steps` package
PACKAGE_NAME = ROOT.name


@functools.cache
def code_version() -> str:
    """`<version>+<12 hex digits>`: the package version and a hash of every source and data file under `steps/`."""
    return _hashed(sorted(path for path in ROOT.rglob("*") if _is_source(path)))


@functools.cache
def stage_code_version(module: str) -> str:
    """`<version>+<12 hex digits>` of the sources `python -m <module>` can run (`stage_sources`); a module outside
    `steps` gets `code_version()`."""
    sources = stage_sources(module)
    return _hashed(sources) if sources else code_version()


def stage_sources(module: str) -> list[Path]:
    """The files of `steps` that `python -m <module>` can run: its own and, transitively, every module of `steps`
    they import (at any depth of the code, so lazy imports count), with the packages' `__init__.py` on the way, and
    the data files beside them (`evaluate/default_gates.yaml`); [] for a module outside `steps`."""
    seen: set[Path] = set()
    pending = _files_of(module, entry=True)
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        pending += [found for name in _imports(path) for found in _files_of(name) if found not in seen]
    data = {path for folder in {found.parent for found in seen} for path in folder.iterdir()
            if _is_source(path) and path.suffix != ".py"}
    return sorted(seen | data)


SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".csv", ".txt")  # code and the data it reads; not editor files


def _is_source(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix in SOURCE_SUFFIXES \
        and not path.name.startswith(".")


def command_code_version(command: list[str]) -> str:
    """The code version of a container command: `stage_code_version` of the module of `python -m MODULE ...`,
    `code_version()` for any other command."""
    if "-m" in command[:-1]:
        return stage_code_version(command[command.index("-m") + 1])
    return code_version()


def _hashed(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return f"{package_version()}+{digest.hexdigest()[:12]}"


def _files_of(module: str, entry: bool = False) -> list[Path]:
    """The files importing a dotted `steps` module executes: each package's `__init__.py` on the way, and the
    module's file; running it (`entry`, `python -m`) adds a package's `__main__.py`. [] for a module outside
    `steps` or none."""
    parts = module.split(".")
    if parts[0] != PACKAGE_NAME:
        return []
    files, folder = [], ROOT
    for part in parts[1:]:
        if (folder / "__init__.py").is_file():
            files.append(folder / "__init__.py")
        if (folder / f"{part}.py").is_file():
            return files + [folder / f"{part}.py"]
        folder = folder / part
        if not folder.is_dir():
            return []
    names = ("__init__.py", "__main__.py") if entry else ("__init__.py",)
    files += [folder / name for name in names if (folder / name).is_file()]
    return files


def _imports(path: Path) -> list[str]:
    """Dotted names of what a source file imports, relative imports resolved; for `from M import n`, both M and
    M.n (n may be a module)."""
    package = ".".join((PACKAGE_NAME, *path.relative_to(ROOT).parent.parts))
    names = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names
