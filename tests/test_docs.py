"""The documentation checked against the code, so that it cannot drift.

Every `emocall ...` command in the docs parses with the CLI's own parser (flags and their
placement), every flag and environment variable the code knows is documented, every config key
quoted exists (with the default quoted beside it), every event name quoted is one the code publishes
and every published event is documented, every `python -m` module and file path named exists, and
every paragraph that states a measured figure names the command that measures it.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from appliance import cli, config

ROOT = Path(__file__).resolve().parents[1]
# Every one must exist: a README that went missing fails here rather than leaving its checks empty.
DOCS = [
    ROOT / "README.md",
    ROOT / "quantize" / "README.md",
    ROOT / "models" / "edgetpu" / "README.md",
    ROOT / "image-build" / "README.md",
    ROOT / "relay" / "README.md",
]
TOP_DIRS = (
    "appliance/",
    "tests/",
    "benchmarks/",
    "quantize/",
    "image-build/",
    "relay/",
    "models/",
    "docs/",
    ".ci/",
)
FILE_SUFFIXES = {"png", "txt", "wav", "json", "toml", "py", "db", "key", "log", "md", "sh"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_0-9]*$")
# A figure that someone measured: a number with a unit of time, speed, size or a ratio.
FIGURE = re.compile(
    r"(?<![\w.-])\d+(?:[.,]\d+)?\s?(?:ms|fps|%|MB|MiB|GB|GiB|kB|x(?=[\s,;.)])|s(?=[\s,;.)])|minutes)"
)
# Words that mark a figure as a result someone measured (a specification, "codes work for 2
# minutes", states a setting and needs no command).
MEASURED = re.compile(
    r"\b(?:measured|measures|here|took|takes|median|p50|p90|worst|average|mean|scored?|scores|"
    r"accuracy|recall|recognised|faster|slower|ratio|RSS|growth|peak)\b",
    re.I,
)
# A runnable command in backticks: what measures a figure.
COMMAND = re.compile(r"`(?:sudo |bash |nice |\.venv/bin/|emocall |python3? |pytest )[^`]*`")
# Config defaults quoted next to their key ("`settle_seconds` (1 s)") are settings, not measurements.
DEFAULT_NEXT_TO_KEY = re.compile(r"`[\w\[\] .]+`,?\s*\(?\d[\d.]*\s?\w*\)?")
MARKER = re.compile(r"<!-- measured by: [^>]+ -->")
# Figures that are choices (a frame rate, a timeout, training's augmentation), not measurements.
DESIGN = re.compile(r"<!-- figures: settings, not measurements -->")


def doc_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def backticked(text: str) -> Iterator[str]:
    yield from re.findall(r"`([^`\n]+)`", text)


def code_blocks(text: str) -> Iterator[str]:
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.S):
        yield from block.splitlines()


def emocall_commands(text: str) -> Iterator[str]:
    candidates = [*backticked(text), *code_blocks(text)]
    for c in candidates:
        for part in (p.strip() for p in re.split(r"&&|;|\|\|", c)):
            m = re.match(r"^(?:sudo )?(?:\.venv/bin/|/opt/emocall/venv/bin/)?emocall(\s.*)?$", part)
            if m:
                yield "emocall" + (m.group(1) or "")


def argv_for(command: str) -> list[str]:
    """Usage syntax to an argument list: [optional] parts kept, A|B takes A, PLACEHOLDERS a value."""
    argv = []
    for token in shlex.split(command.replace("[", " ").replace("]", " "))[1:]:
        if token in ("...", "…"):
            continue
        first = token.split("|", 1)[0]
        argv.append("1" if PLACEHOLDER.match(first) else first)
    return argv


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the CLI has no subcommands")


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def all_docs() -> str:
    return "\n".join(doc_text(p) for p in DOCS)


def test_every_emocall_command_in_the_docs_parses(capsys: pytest.CaptureFixture[str]) -> None:
    # "`emocall call`" alone names a command in prose; anything with an argument is an invocation.
    commands = sorted({c for p in DOCS for c in emocall_commands(doc_text(p)) if len(c.split()) > 2})
    assert len(commands) > 10
    bad = []
    for command in commands:
        try:
            cli.parser().parse_args(argv_for(command))
        except SystemExit as e:
            if e.code != 0:
                bad.append(f"{command}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not bad, "commands in the docs that the CLI refuses:\n" + "\n".join(bad)


def test_every_flag_of_every_command_is_documented() -> None:
    commands = [c for p in DOCS for c in emocall_commands(doc_text(p))]
    missing = []
    top = cli.parser()
    for name, sub in subcommands().items():
        said = " ".join(c for c in commands if c.split()[1:2] == [name] or f" {name} " in c)
        # A global flag also accepted after the command name is documented once, as a global flag.
        own = flags(sub) - flags(top)
        missing += [f"emocall {name} {flag}" for flag in sorted(own) if flag not in said]
    said_anywhere = " ".join(commands)
    for action in top._actions:
        names = [s for s in action.option_strings if s not in ("-h", "--help")]
        if names and not any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", said_anywhere) for n in names):
            missing.append(f"emocall {names[-1]}")
    assert not missing, "flags the docs never show:\n" + "\n".join(missing)


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    names = set()
    for path in [*ROOT.glob("appliance/**/*.py"), *ROOT.glob("quantize/*.py")]:
        code = path.read_text()
        names |= set(re.findall(r'"(EMOCALL_[A-Z0-9_]+)"', code))
        # A Flask app.config key that happens to share the prefix is no environment variable.
        names -= {n for c, n in re.findall(r'(\w+) = "(EMOCALL_[A-Z0-9_]+)"', code) if f"config[{c}]" in code}
    names.discard(config.ENV_PREFIX)
    # EMOCALL_<SECTION>__<FIELD> for a config key is one documented rule, not a name of its own.
    keys = {f"{config.ENV_PREFIX}{k.replace('.', '__').upper()}" for k in config_keys()}
    text = all_docs()
    assert not [n for n in sorted(names - keys) if n not in text]


def config_keys() -> dict[str, object]:
    keys: dict[str, object] = {}
    for section, info in config.Config.model_fields.items():
        model = info.default_factory() if info.default_factory else None  # type: ignore[call-arg]
        assert isinstance(model, BaseModel)
        for name in type(model).model_fields:
            keys[f"{section}.{name}"] = getattr(model, name)
    return keys


def test_config_keys_and_defaults_quoted_in_the_docs_exist() -> None:
    keys = config_keys()
    sections = {k.split(".")[0] for k in keys}
    bad = []
    for path in DOCS:
        text = doc_text(path)
        for section, name, default in re.findall(r"`\[(\w+)\] (\w+)`(?: \((-?[\d.]+)\))?", text):
            key = f"{section}.{name}"
            if section in ("pi", "dev", "train", "tests"):
                continue  # pip extras, not config sections
            if key not in keys:
                bad.append(f"{path.relative_to(ROOT)}: {key} is not a config key")
            elif default and float(default) != float(keys[key]):  # type: ignore[arg-type]
                bad.append(f"{path.relative_to(ROOT)}: {key} default is {keys[key]}, the docs say {default}")
        for token in backticked(text):
            if re.fullmatch(r"\[\w+\]", token) and token[1:-1] not in sections | {"pi", "dev", "train"}:
                bad.append(f"{path.relative_to(ROOT)}: {token} is not a config section")
    assert not bad, "\n".join(bad)


def published_events() -> set[str]:
    """Topics passed to EventBus.publish anywhere in the code (literals, or names bound to literals)."""
    topics: set[str] = set()
    for path in ROOT.glob("appliance/**/*.py"):
        tree = ast.parse(path.read_text())
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
            bound: dict[str, list[ast.AST]] = {}
            for node in ast.walk(func):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            bound.setdefault(target.id, []).append(node.value)
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "publish" and node.args:
                    sources: list[ast.AST] = [node.args[0]]
                    if isinstance(node.args[0], ast.Name):
                        sources = bound.get(node.args[0].id, [])
                    for source in sources:
                        topics |= {
                            c.value
                            for c in ast.walk(source)
                            if isinstance(c, ast.Constant)
                            and isinstance(c.value, str)
                            and re.fullmatch(r"[a-z_]+\.[a-z_]+", c.value)
                        }
    return topics


def test_every_event_is_documented_and_every_event_quoted_exists() -> None:
    events = published_events()
    assert {"call.state", "vision.emotion", "camera.lost"} <= events
    readme = doc_text(ROOT / "README.md")
    quoted = set(backticked(readme)) | {t.split(" ", 1)[0] for t in backticked(readme)}
    undocumented = sorted(e for e in events if e not in quoted)
    assert not undocumented, f"events the README never names: {undocumented}"
    prefixes = {e.split(".")[0] for e in events}
    keys = set(config_keys())
    unknown = sorted(
        t
        for t in quoted
        if re.fullmatch(r"[a-z_]+\.[a-z_]+", t)
        and t.split(".")[0] in prefixes
        and t not in events | keys
        and t.rsplit(".", 1)[1] not in FILE_SUFFIXES
    )
    assert not unknown, f"event names in the README that the code never publishes: {unknown}"


def test_every_module_and_path_named_exists() -> None:
    bad = []
    for path in DOCS:
        text = doc_text(path)
        for module in re.findall(r"python3? -m ([A-Za-z_][\w.]*)", text):
            if module in ("pip", "venv", "pytest"):
                continue
            base = ROOT / module.replace(".", "/")
            if not (base.with_suffix(".py").exists() or (base / "__main__.py").exists()):
                bad.append(f"{path.relative_to(ROOT)}: python -m {module}")
        for token in backticked(text):
            first = token.split()[0] if token.split() else ""
            first = first.removeprefix("sudo").strip() or (token.split()[1] if len(token.split()) > 1 else "")
            for candidate in {first, token}:
                named = candidate.startswith(TOP_DIRS) and not re.search(r"[<>{}$ ]", candidate)
                if named and not list(ROOT.glob(candidate.rstrip("/"))):
                    bad.append(f"{path.relative_to(ROOT)}: {candidate}")
    assert not bad, "named in the docs but missing:\n" + "\n".join(sorted(set(bad)))


def test_docs_call_the_project_python_not_a_bare_python() -> None:
    bad = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in DOCS
        for m in re.finditer(r"(?<![/\w.-])python3? -m \S+", doc_text(p))
        if "pip" not in m.group(0) and "venv" not in m.group(0)
    ]
    assert not bad, "use .venv/bin/python (a fresh Debian has no `python`):\n" + "\n".join(bad)


def blocks(text: str) -> Iterator[tuple[str, str]]:
    """(block, the paragraph that introduced it): paragraphs, tables and list items."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    intro = ""
    for chunk in re.split(r"\n\s*\n", text):
        items = re.split(r"\n(?=- )", chunk)
        for item in items:
            yield item, intro
        if not chunk.lstrip().startswith(("-", "|")):
            intro = chunk


def sections(text: str) -> Iterator[str]:
    """The text between one heading and the next."""
    yield from re.split(r"\n(?=#{1,6} )", text)


def test_every_figure_names_the_command_that_measures_it() -> None:
    """In the block that states it, in the paragraph that introduces its list or table, or in a
    ``<!-- measured by: COMMAND -->`` marker that covers its whole section (a model card's tables)."""
    bad = []
    for path in DOCS:
        for section in sections(doc_text(path)):
            if MARKER.search(section):
                continue
            for block, intro in blocks(section):
                if block.lstrip().startswith("#"):
                    continue
                scanned = DEFAULT_NEXT_TO_KEY.sub("", block)
                figures = FIGURE.findall(scanned)
                if not figures or not MEASURED.search(scanned):
                    continue
                said = COMMAND.search(block) or DESIGN.search(block)
                listed = block.lstrip().startswith(("-", "|"))
                if not (said or (listed and COMMAND.search(intro))):
                    bad.append(f"{path.relative_to(ROOT)}: {figures[:3]} in: {block.strip()[:120]!r}")
    assert not bad, "figures without the command that measures them:\n" + "\n".join(bad)


def test_test_counts_are_not_written_down() -> None:
    """Counts of tests drift with every commit; the docs name the command that runs them instead."""
    bad = [
        f"{p.relative_to(ROOT)}: {m}" for p in DOCS for m in re.findall(r"\(\d+ tests[^)]*\)", doc_text(p))
    ]
    assert not bad, "\n".join(bad)
