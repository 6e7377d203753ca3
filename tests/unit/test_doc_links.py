"""No link in README.md or docs/**/*.md leaves the repository: the docs stand alone.

What is checked, in README.md and every markdown file under docs/ (docs/results/ included):

- every markdown link and image (`[text](target)`, `![alt](target)`, `[ref]: target`, and
  `href=`/`src=` in inline HTML) that is not a URL resolves, from the file that holds it, to a file
  or directory inside the repository; a `#fragment` must name a heading of the target (GitHub's
  anchors: lower case, punctuation dropped, spaces to hyphens);
- every bare relative path to a markdown file (`decisions.md`, `docs/scaling.md`, `../README.md`),
  in prose or in code, resolves from the file's directory or from the repository root (paths the
  programs create at run time, under `.local/`, are not repository files and are not matched);
- no `../` climbs out of the repository root, and nothing names the workspace the repository was
  built in (`../shared`, `/work/shared`, `shared/DESIGN.md`): the design is docs/design.md.

The rule for URLs: **none that leave the machine.** The only http(s) URLs allowed are the local
stack's own addresses (`127.0.0.1`, `localhost`, as in the curl `make run` prints), which are
examples of what a reader's own gateway answers, not references. Outside references (the
CloudEvents spec, an upstream issue such as faust-streaming #606, RFC 9110) are named in plain text,
never linked: a URL rots and moves the truth out of the repository; a name stays true and can be
searched. Other schemes in link targets (`mailto:`, `ftp:`) are refused too; connection strings in
code (`postgresql://…`) are not links and are not checked.

Paths to repository files in general (services/…, tests/…) are checked by test_doc_references.py.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
FORBIDDEN = ("../shared", "/work/shared", "shared/DESIGN.md")

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
MD_LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(\n])*?\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HTML_ATTR = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
URL = re.compile(r"\b(https?)://([^\s/)>\]\"'`]+)[^\s)>\]\"'`]*", re.I)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
BARE_MD = re.compile(r"(?<![\w/.~-])((?:\.{1,2}/)*(?:[\w-]+/)*[\w.-]*\w\.md)(?![\w/])")
UP_PATH = re.compile(r"(?<![\w/.~-])((?:\.\./)+[\w./-]*)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _inside(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    text = FENCE.sub("", path.read_text())
    for heading in HEADING.findall(text):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def link_targets(text: str) -> list[str]:
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return [*MD_LINK.findall(prose), *REF_DEF.findall(prose), *HTML_ATTR.findall(prose)]


def problems(doc: Path, text: str | None = None) -> list[str]:
    """Every broken or leaving link of one markdown file (text: its content, for planted tests)."""
    text = doc.read_text() if text is None else text
    where = _rel(doc) if _inside(doc) else str(doc)
    found: list[str] = []

    for bad in FORBIDDEN:
        if bad in text:
            found.append(f"{where}: names {bad!r}, outside the repository")

    for scheme, host in URL.findall(text):
        hostname = host.rsplit("@", 1)[-1]
        hostname = hostname if hostname.startswith("[") else hostname.split(":", 1)[0]
        if hostname.lower() not in LOCAL_HOSTS:
            found.append(f"{where}: {scheme}://{host} leaves the repository (name it in plain text)")

    for target in link_targets(text):
        if not target or target.startswith("#"):
            frag = target[1:]
            if frag and frag not in anchors(doc):
                found.append(f"{where}: link #{frag}: no such heading")
            continue
        if SCHEME.match(target):
            if not target.lower().startswith(("http://", "https://")):
                found.append(f"{where}: link {target}: only relative links are allowed")
            continue  # http(s) URLs are judged above, wherever they appear
        path_part, _, frag = target.partition("#")
        resolved = (doc.parent / path_part).resolve()
        if not _inside(resolved):
            found.append(f"{where}: link {target} leaves the repository")
        elif not resolved.exists():
            found.append(f"{where}: link {target}: no such file")
        elif frag and resolved.suffix == ".md" and frag not in anchors(resolved):
            found.append(f"{where}: link {target}: no heading #{frag} in {_rel(resolved)}")

    for path in UP_PATH.findall(text):
        if not _inside(doc.parent / path):
            found.append(f"{where}: {path} climbs out of the repository")

    for path in BARE_MD.findall(MD_LINK.sub(" ", text)):  # a link's own text was judged as a link
        candidates = [doc.parent / path, ROOT / path]
        if not any(_inside(c) and c.exists() for c in candidates):
            found.append(f"{where}: {path}: no such file (from {_rel(doc.parent) or '.'} or the root)")
    return found


def test_the_docs_are_found() -> None:
    names = {_rel(d) for d in doc_files()}
    assert {"README.md", "docs/design.md", "docs/cli.md"} <= names


def test_no_link_leaves_the_repository() -> None:
    found = [p for doc in doc_files() for p in problems(doc)]
    assert not found, "links that leave the repository or lead nowhere:\n" + "\n".join(found)


def test_the_checker_catches_each_kind_of_bad_link() -> None:
    doc = ROOT / "docs" / "planted.md"
    planted = {
        "[contract](../shared/DESIGN.md)": "outside the repository",
        "[up](../../etc/passwd)": "leaves the repository",
        "see ../../outside.txt": "climbs out",
        "[gone](no-such-doc.md)": "no such file",
        "bare: results/no-such.md": "no such file",
        "[spec](https://cloudevents.io/)": "leaves the repository",
        "plain https://example.com/x in prose": "leaves the repository",
        "[mail](mailto:ops@example.com)": "only relative links",
        "[anchor](worker.md#no-such-heading)": "no heading",
    }
    for text, expected in planted.items():
        found = problems(doc, text + "\n")
        assert any(expected in p for p in found), (text, found)


def test_the_checker_accepts_what_the_docs_may_say() -> None:
    doc = ROOT / "docs" / "planted.md"
    fine = (
        "[worker](worker.md#the-billable-stream) [readme](../README.md) ![s](img/status-1280.png)\n"
        "curl -sS http://127.0.0.1:8080/api/sync; `http://localhost:9090/graph`\n"
        "written to `.local/bench/quick.md`; see decisions.md and docs/scaling.md\n"
        "```\n[not a link](nowhere.txt)\n```\n"
        "postgresql://user@127.0.0.1:15432/db, faust-streaming issue #606\n"
    )
    assert problems(doc, fine) == []
