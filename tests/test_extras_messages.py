"""A missing optional package says which extra installs it, and names the right one.

Read from the source, not run: every string of ours that gives an install hint
(``pip install ...``) is checked against pyproject's ``[project.optional-dependencies]``,
and every ``except ImportError`` around an import of an extra's package must say
``pip install 'art2mus[EXTRA]'`` with an extra that holds that package.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Where user-facing messages live (the packages, and the benchmarks people run).
SOURCES = ("ground", "engine", "capture", "audio_out", "installation", "training", "benchmarks")
#: Distributions imported (or written) under another name.
OTHER_NAMES = {"python-rtmidi": ("rtmidi",), "python-osc": ("pythonosc",),
               "pillow": ("PIL", "Pillow"), "ray": ("Ray",)}
_EXTRA_HINT = re.compile(r"pip install '?art2mus\[([^\]]*)\]")
_BARE_HINT = re.compile(r"pip install (?!-)'?\"?([A-Za-z0-9_.\-]+)")


def _distribution(requirement: str) -> str:
    """``"ray[serve]>=2.30"`` -> ``"ray"``."""
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def extras() -> dict[str, set[str]]:
    """Each declared extra and the distributions it installs (``art2mus[...]`` expanded)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    out: dict[str, set[str]] = {}

    def packages(extra: str) -> set[str]:
        found: set[str] = set()
        for requirement in declared[extra]:
            nested = re.fullmatch(r"art2mus\[(.*)\]", requirement)
            if nested:
                for inner in nested.group(1).split(","):
                    found |= packages(inner.strip())
            else:
                found.add(_distribution(requirement))
        return found

    for extra in declared:
        out[extra] = packages(extra)
    return out


def core() -> set[str]:
    """The distributions every install has."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_distribution(r) for r in project["dependencies"]}


def _names(distribution: str) -> tuple[str, ...]:
    return (distribution, *OTHER_NAMES.get(distribution, ()))


def _mentions(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a word (``rtmidi`` is not in ``python-rtmidi``;
    a quoted ``'onnx'`` is a setting's value, not the package)."""
    return re.search(rf"(?<![\w\-']){re.escape(name)}(?![\w\-'])", text) is not None


def _text(node: ast.AST) -> str | None:
    """A string constant's text; an f-string's with ``{}`` for each placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}"
                       for part in node.values)
    return None


def _source_files() -> Iterator[Path]:
    for folder in SOURCES:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _strings(tree: ast.AST) -> Iterator[ast.AST]:
    """String nodes, an f-string as one (not its parts as well)."""
    inner = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
             for part in node.values}
    for node in ast.walk(tree):
        if id(node) not in inner and _text(node) is not None:
            yield node


def install_hints() -> list[tuple[str, str]]:
    """(where, text) of every string in our source that says ``pip install``."""
    found = []
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _strings(tree):
            text = _text(node) or ""
            if "pip install" in text:
                found.append((f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}", text))
    return found


def problems_of_hint(text: str, declared: dict[str, set[str]], core_packages: set[str]
                     ) -> list[str]:
    """What is wrong with one install hint (empty when nothing)."""
    problems = []
    named = {extra.strip() for group in _EXTRA_HINT.findall(text) for extra in group.split(",")}
    for extra in sorted(named - set(declared)):
        problems.append(f"names art2mus[{extra}], which pyproject does not declare")
    for bare in _BARE_HINT.findall(text):
        owners = {extra for extra, packages in declared.items() if bare.lower() in packages}
        if bare != "art2mus" and bare.lower() not in core_packages and owners:
            problems.append(f"says pip install {bare}; its extra is {sorted(owners)}")
    mentioned = {d for packages in declared.values() for d in packages
                 if any(_mentions(text, name) for name in _names(d))}
    for distribution in sorted(mentioned - core_packages):
        owners = {extra for extra, packages in declared.items() if distribution in packages}
        if not owners & named:
            problems.append(f"mentions {distribution} without naming an extra that installs "
                            f"it ({' or '.join(sorted(owners))})")
    if "{}" not in text:  # where a placeholder names the packages, the text alone cannot tell
        for extra in sorted(named & set(declared)):
            if not any(any(_mentions(text, n) for n in _names(d)) for d in declared[extra]):
                problems.append(f"names art2mus[{extra}] but none of its packages "
                                f"({', '.join(sorted(declared[extra]))})")
    return problems


def test_every_install_hint_names_a_declared_extra_that_installs_what_it_mentions() -> None:
    declared, core_packages = extras(), core()
    hints = install_hints()
    assert len(hints) >= 10  # the scan sees the messages (a broken walk finds none)
    bad = [f"{where}: {problem}: {text!r}" for where, text in hints
           for problem in problems_of_hint(text, declared, core_packages)]
    assert not bad, "\n".join(bad)


def test_the_check_refuses_a_bare_install_a_wrong_extra_and_an_undeclared_one() -> None:
    declared = {"midi": {"python-rtmidi"}, "osc": {"python-osc"},
                "diffusion": {"onnxruntime", "torch"}, "encoders": {"onnxruntime", "pillow"}}
    core_packages = {"numpy"}
    assert problems_of_hint("MIDI needs python-rtmidi (pip install 'art2mus[midi]')",
                            declared, core_packages) == []
    assert problems_of_hint("needs onnxruntime (pip install 'art2mus[encoders]')",
                            declared, core_packages) == []
    assert problems_of_hint("needs python-osc (pip install python-osc)", declared,
                            core_packages) == [
        "says pip install python-osc; its extra is ['osc']",
        "mentions python-osc without naming an extra that installs it (osc)"]
    assert problems_of_hint("needs rtmidi (pip install 'art2mus[osc]')", declared,
                            core_packages) == [
        "mentions python-rtmidi without naming an extra that installs it (midi)",
        "names art2mus[osc] but none of its packages (python-osc)"]
    assert problems_of_hint("needs Pillow (pip install 'art2mus[pil]')", declared,
                            core_packages)[0] == \
        "names art2mus[pil], which pyproject does not declare"
    assert problems_of_hint("needs numpy (pip install numpy)", declared, core_packages) == []


def _imported(statements: list[ast.stmt]) -> set[str]:
    """Top-level module names a try block imports (statements, import_module, __import__)."""
    names = set()
    for node in ast.walk(ast.Module(body=statements, type_ignores=[])):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else \
                function.id if isinstance(function, ast.Name) else ""
            if called in ("import_module", "__import__"):
                names.add(node.args[0].value.split(".")[0])
    return names


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(kind, ast.Name) and kind.id in ("ImportError", "ModuleNotFoundError")
               for kind in kinds)


def test_every_caught_import_of_an_extras_package_says_which_extra_installs_it() -> None:
    declared = extras()
    module_to_extras: dict[str, set[str]] = {}
    for extra, packages in declared.items():
        for distribution in packages:
            for name in _names(distribution):
                module_to_extras.setdefault(name, set()).add(extra)
    checked, bad = 0, []
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            optional = {m for m in _imported(node.body) if m in module_to_extras}
            for handler in node.handlers:
                if not optional or not _catches_import_error(handler):
                    continue
                texts = [_text(s) or "" for s in _strings(ast.Module(body=handler.body,
                                                                     type_ignores=[]))]
                if not texts:
                    continue  # a probe (e.g. "is there CUDA?"), not a message
                checked += 1
                named = {e.strip() for text in texts for group in _EXTRA_HINT.findall(text)
                         for e in group.split(",")}
                for module in sorted(optional):
                    if not module_to_extras[module] & named:
                        bad.append(f"{path.relative_to(ROOT)}:{handler.lineno}: a missing "
                                   f"{module} does not say pip install 'art2mus["
                                   f"{'|'.join(sorted(module_to_extras[module]))}]'")
    assert checked >= 5
    assert not bad, "\n".join(bad)
