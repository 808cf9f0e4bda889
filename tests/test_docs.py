"""The docs stay true to the code: docs/cli.md documents every `ykt` command and option and is in
step with `--help`; the README is short, shows the two commands and every link in the docs
resolves; every file and doc the code cites exists; no file cites the product spec, which is not
in the repository (the rules are in docs/rules.md).  No processes, no sockets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import cli_doc

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> list[tuple[int, str]]:
    """The lines of a Markdown text outside fenced code blocks, with their numbers."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


# -- docs/cli.md and --help -------------------------------------------------------------------
def test_cli_md_documents_every_command_and_option() -> None:
    _head, generated, _tail = cli_doc.split(_text(cli_doc.CLI_MD))
    sections = dict(
        (block.split("\n", 1)[0].strip(), block)
        for block in generated.split("\n### ")[1:]  # "ykt admin account add\n\n```text …"
    )
    commands = list(cli_doc.commands())
    assert len(commands) > 80  # server, pos, admin …, sim …, demo, verify-code, bench
    missing = [name for name, _ in commands if name not in sections]
    assert not missing, f"docs/cli.md has no section for {missing}: run `make docs`"
    undocumented = [
        (name, opt)
        for name, parser in commands
        for opt in cli_doc.options(parser)
        if opt not in sections[name]
    ]
    assert not undocumented, f"docs/cli.md does not document {undocumented}: run `make docs`"


def test_cli_md_is_in_step_with_help() -> None:
    """A new command, option or help text lands with its docs: `make docs` writes them."""
    _head, generated, _tail = cli_doc.split(_text(cli_doc.CLI_MD))
    assert generated == cli_doc.generated(), "docs/cli.md differs from `--help`: run `make docs`"


def test_every_top_level_command_has_its_own_section_in_cli_md() -> None:
    head, _generated, _tail = cli_doc.split(_text(cli_doc.CLI_MD))
    top = [name for name, _ in cli_doc.commands() if name.count(" ") == 1]
    missing = [name for name in top if f"`{name}`" not in head]
    assert not missing, f"the hand-written part of docs/cli.md does not explain {missing}"


# -- the README ---------------------------------------------------------------------------------
def test_readme_shows_the_two_commands() -> None:
    readme = _text(README)
    assert re.search(r"^make demo\b", readme, re.M), "README: `make demo` as a command line"
    assert re.search(r"^make test\b", readme, re.M), "README: `make test` as a command line"


def test_readme_is_short() -> None:
    lines = len(_text(README).splitlines())
    assert lines <= 250, f"README.md has {lines} lines; the reference belongs in docs/"


# -- links --------------------------------------------------------------------------------------
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: formatting dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _n, line in _prose(_text(path)):
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        k = seen.get(slug, 0)
        seen[slug] = k + 1
        out.add(slug if k == 0 else f"{slug}-{k}")
    return out


def _broken_links(path: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for n, line in _prose(_text(path)):
        for target in _LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:, file:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{n}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{where} (no such heading)")
    return broken


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = _broken_links(path)
    assert not broken, "\n".join(broken)


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# Title\n\n## The `ykt pos` agent (R19)\n", encoding="utf-8")
    doc.write_text(
        "[ok](b.md#the-ykt-pos-agent-r19) [ok](#here) [web](https://example.org/x)\n"
        "# Here\n[gone](c.md) [no anchor](b.md#nowhere)\n"
        "```\n[in code](d.md)\n```\n",
        encoding="utf-8",
    )
    broken = _broken_links(doc, root=tmp_path)
    assert broken == ["a.md:3: c.md (no such file)", "a.md:3: b.md#nowhere (no such heading)"]


# -- what the docs and the code cite ------------------------------------------------------------
_PATH = re.compile(
    r"(?<![\w./-])((?:drivers|edge|sync|sim|kiosk_ui|tests|systemd|docs)/[\w./-]*\w)"
)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_files_that_exist(path: Path) -> None:
    text = _text(path)
    named = {m.group(1) for m in _PATH.finditer(text) if text[m.end() : m.end() + 1] != "*"}
    missing = sorted(p for p in named if not (ROOT / p).exists())  # "tests/test_pos_*.py": a glob
    assert not missing, f"{path.relative_to(ROOT)} names files that do not exist: {missing}"


def _tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def _tracked_text() -> dict[Path, str]:
    texts = {}
    for path in _tracked():
        try:
            texts[path] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
    return texts


def test_every_doc_the_code_cites_exists() -> None:
    cited: dict[str, set[str]] = {}
    for path, text in _tracked_text().items():
        for doc in re.findall(r"\bdocs/([\w-]+\.md)\b", text):
            cited.setdefault(doc, set()).add(str(path.relative_to(ROOT)))
    assert "rules.md" in cited and "architecture.md" in cited
    missing = {doc: sorted(by) for doc, by in cited.items() if not (ROOT / "docs" / doc).exists()}
    assert not missing, f"cited but missing: {missing}"


def test_no_file_cites_the_spec() -> None:
    """The product spec is not in the repository: code and docs cite docs/rules.md and the
    other docs, never the spec by its file name (a whole-word search finds nothing)."""
    word = re.compile(r"\b" + "SP" + r"EC\b")
    citing = [
        f"{path.relative_to(ROOT)}:{n}"
        for path, text in _tracked_text().items()
        for n, line in enumerate(text.splitlines(), 1)
        if word.search(line)
    ]
    assert not citing, citing


def test_rules_md_states_every_rule() -> None:
    rules = _text(ROOT / "docs" / "rules.md")
    headings = re.findall(r"^## (R\d+) ", rules, re.M)
    assert headings == [f"R{n}" for n in range(1, 21)]
    for n in range(1, 21):
        section = rules.split(f"## R{n} ", 1)[1].split("\n## ", 1)[0]
        assert "Where:" in section, f"docs/rules.md R{n} does not say where it is decided"
