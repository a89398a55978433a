"""Pick the part of requirements.lock an image needs, hash-pinned as it is there, so pip installs it with
`--require-hashes --no-deps`: no resolver runs, nothing can backtrack, every image gets exactly the locked versions.

    python images/lock_subset.py select --without tensorflow > base.txt          # everything the stages need
    python images/lock_subset.py select --only-for tensorflow > tf.txt           # what TensorFlow adds on top
    python images/lock_subset.py select --no-project --with helm-python-sdk > helm.txt  # one package's closure
    python images/lock_subset.py check --allow-missing tensorflow                # in the image: is it complete?

`select` starts from the project's runtime dependencies in pyproject.toml (not the `test` extra; none with
`--no-project`), drops the `--without` roots, adds the `--with` ones, and takes everything the lock says they need (its `# via` comments are
the dependency graph uv resolved). `--only-for X` gives the packages that only X brings. `check` asks the
installed distributions themselves (their Requires-Dist, markers evaluated) whether anything they need is
missing, allowing only what the image leaves out on purpose. Standard library only, plus `packaging` for `check`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "stellar-pipeline"
_BLOCK = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==\S+(?:.*\n(?:[ \t]+.*\n?)*)", re.M)
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?(?P<parent>[A-Za-z0-9][A-Za-z0-9._-]*)(?: \(pyproject\.toml\))?\s*$", re.M)
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(name -> its block of the lock file, with hashes; name -> the packages that need it)."""
    blocks, parents = {}, {}
    for match in _BLOCK.finditer(text):
        name = canonical(match.group("name"))
        blocks[name] = match.group(0).rstrip("\n") + "\n"
        parents[name] = {canonical(m.group("parent")) for m in _VIA.finditer(match.group(0))}
    return blocks, parents


def runtime_roots(pyproject: Path) -> set[str]:
    """The project's own runtime dependencies (no extras)."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {canonical(_REQUIREMENT_NAME.match(requirement).group(1)) for requirement in dependencies}


def closure(roots: set[str], parents: dict[str, set[str]]) -> set[str]:
    """The roots and everything they need, transitively, according to the lock."""
    children: dict[str, set[str]] = {}
    for child, needed_by in parents.items():
        for parent in needed_by:
            children.setdefault(parent, set()).add(child)
    selected, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name not in selected:
            selected.add(name)
            stack.extend(children.get(name, ()))
    return selected


def select(lock: Path, pyproject: Path | None, without: set[str], with_: set[str], only_for: set[str]) -> list[str]:
    """The lock's blocks for the requested subset, in the lock's order (no project roots when pyproject is None)."""
    blocks, parents = parse_lock(lock.read_text())
    unknown = (without | with_ | only_for) - set(blocks)
    if unknown:
        raise SystemExit(f"lock_subset: not in {lock}: {', '.join(sorted(unknown))}")
    roots = runtime_roots(pyproject) if pyproject is not None else set()
    names = closure((roots - without) | with_, parents)
    if only_for:
        names = closure(roots | with_, parents) - closure((roots - only_for) | with_, parents)
    missing = names - set(blocks)
    if missing:
        raise SystemExit(f"lock_subset: {lock} does not pin {', '.join(sorted(missing))} (run `make lock`)")
    return [blocks[name] for name in blocks if name in names]


def missing_requirements(allow_missing: set[str]) -> list[str]:
    """What installed distributions require (markers evaluated for this interpreter; requirements behind an extra
    are not followed) that is missing or at another version; `allow_missing` names dependencies of the project
    itself that may be absent on purpose."""
    from importlib import metadata

    from packaging.requirements import Requirement

    installed = {canonical(dist.metadata["Name"]): dist for dist in metadata.distributions()}
    problems = []
    for name, dist in sorted(installed.items()):
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            needed = canonical(requirement.name)
            if needed in allow_missing and name == canonical(PROJECT):
                continue
            if needed not in installed:
                problems.append(f"{name} requires {text}, which is not installed")
            elif not requirement.specifier.contains(installed[needed].version, prereleases=True):
                problems.append(f"{name} requires {text}, but {installed[needed].version} is installed")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pick = sub.add_parser("select", help="print the lock entries an image needs")
    pick.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    pick.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    pick.add_argument("--no-project", action="store_true", help="start from the --with packages alone")
    pick.add_argument("--without", action="append", default=[], help="a runtime dependency to leave out")
    pick.add_argument("--with", dest="with_", action="append", default=[], help="a locked package to add")
    pick.add_argument("--only-for", action="append", default=[],
                      help="print only what this runtime dependency brings beyond the rest")
    check = sub.add_parser("check", help="exit 1 if an installed distribution lacks something it requires")
    check.add_argument("--allow-missing", action="append", default=[],
                       help=f"a dependency of {PROJECT} that this image leaves out on purpose")
    args = parser.parse_args(argv)
    if args.command == "select":
        pyproject = None if args.no_project else args.pyproject
        sys.stdout.write("".join(select(args.lock, pyproject, {canonical(n) for n in args.without},
                                        {canonical(n) for n in args.with_}, {canonical(n) for n in args.only_for})))
        return 0
    problems = missing_requirements({canonical(n) for n in args.allow_missing})
    for problem in problems:
        print(f"lock_subset check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
