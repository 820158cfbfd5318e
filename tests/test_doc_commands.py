"""Every `python python/train.py ...` command the documents show still parses into a valid configuration
(an option renamed in train.py would otherwise leave README.md or RESULTS.md telling users a command that
fails, as `--progress false` once did)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cg2a_ext.rl.cli.options import config_from_args

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "RESULTS.md", "BENCHMARKS.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
TRAIN = "python python/train.py"


def shell_blocks(text: str) -> list[list[str]]:
    """The fenced bash blocks of a markdown text, as logical lines (backslash continuations joined)."""
    blocks = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        blocks.append(block.replace("\\\n", " ").splitlines())
    return blocks


def train_commands(path: str) -> list[tuple[str, list[str]]]:
    """(the command as written, its arguments) for each train.py command of ``path``'s shell blocks, with the
    block's own shell variables (``common="..."``) expanded."""
    found = []
    for lines in shell_blocks((ROOT / path).read_text()):
        variables: dict[str, str] = {}
        for line in lines:
            assignment = re.match(r'^\s*(\w+)="([^"]*)"\s*$', line)
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)
                continue
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if not part.startswith(TRAIN) or re.search(r"[<{]", part):   # placeholders: not a real command
                    continue
                expanded = re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), part)
                found.append((part, shlex.split(expanded)[2:]))
    return found


# `--help` prints and exits: nothing to parse.
CASES = [(doc, command, args) for doc in DOCUMENTS for command, args in train_commands(doc) if "--help" not in args]


def test_the_documents_show_train_commands():
    assert len(CASES) >= 8, [c[1] for c in CASES]
    assert {doc for doc, _, _ in CASES} >= {"README.md", "RESULTS.md"}


@pytest.mark.parametrize("doc, command, args", CASES, ids=[f"{d}:{i}" for i, (d, _, _) in enumerate(CASES)])
def test_a_documented_train_command_parses(doc, command, args):
    assert not any(a.startswith("$") for a in args), f"{doc}: unexpanded variable in `{command}`"
    # A resume reads the run folder it names; its other options must still be train.py's own.
    config_from_args([a for a in args if a != "--resume"])
