"""The fenced code blocks of a Markdown document, for the tests that run the docs as written.

A block that cannot run says so in an HTML comment on the line before its fence,
`<!-- docs-test: skip (why) -->`; every other block of a runnable language must run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.support.stack import ROOT

SKIP = re.compile(r"<!-- docs-test: skip \((.+)\) -->")
# Shell blocks are fenced ```sh, so that one name finds them all.
OTHER_SHELLS = re.compile(r"```(bash|shell|console|zsh)\b")


@dataclass
class Block:
    where: str  # doc:line of the opening fence
    language: str
    text: str
    skip: str | None


def blocks(doc: str, languages: tuple[str, ...] = ("sh",)) -> list[Block]:
    """The blocks fenced in one of `languages`, in document order (indented fences too)."""
    lines = (ROOT / doc).read_text().splitlines()
    found: list[Block] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        assert not OTHER_SHELLS.match(stripped), f"{doc}:{i + 1}: fence it as ```sh"
        if re.match(r"<!--\s*docs-test", stripped):
            assert SKIP.fullmatch(stripped), f"{doc}:{i + 1}: write <!-- docs-test: skip (why) -->"
        fence = re.fullmatch(r"```(\w+)", stripped)
        if not fence or fence[1] not in languages:
            continue
        indent = line[: len(line) - len(line.lstrip())]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = [text.removeprefix(indent) for text in lines[i + 1 : end]]
        marker = SKIP.fullmatch(lines[i - 1].strip())
        found.append(Block(f"{doc}:{i + 1}", fence[1], "\n".join(body), marker[1] if marker else None))
    return found
