"""Every message whole (issue 22, item 5): each `EveInputError` the code can raise names the problem
and the fix, with no empty parts.

The messages are collected statically: every call of `EveInputError` or a subclass of it in
`engine/` and `components/`, whether raised at once or built first. A message's static text is
rebuilt from its f-string (a local or module-level string it formats is read in place; anything else
is a hole, `HOLE`), and checked three ways: (a) it is a sentence, not a word; (b) it names a problem
(in words, or as "parameter = value"), then, after ': ', '; ' or '. ', a clause that opens with the
fix: an imperative ("use ...", "give ...", "re-export ...") or "it must ..."; (c) no part of it is
empty, nor would be if a hole were empty text: a hole that fills a part alone ("(◇)", "': ◇.'") must
be a value that is never empty, and a caught exception's text goes through `engine.errors.reason`
(in every f-string of the sources, shown messages too). A few raises are then triggered for real and
their text checked the same way.
"""

from __future__ import annotations

import ast
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import write_folder
from test_models import SPEC, ThreeChannels, _save
from torch import nn

from engine.data import load_dataset
from engine.errors import REASON_CHARS, DatasetError, EveInputError, reason
from engine.models.zoo import load_torchscript, read_card
from engine.pixelmaps.methods import attribution_map

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("engine/**/*.py"), *ROOT.glob("components/**/*.py")])
HOLE = "◇"  # a formatted value in a message's static text
MIN_MESSAGES = 140  # the walk found 158 when it was written: far fewer means it stopped seeing some

# clause-initial verbs that tell the user what to do
FIX_VERBS = (
    "add ask call change check choose convert correct create drop explain export feed fill fix give keep leave "
    "let load make name pass point put re-create re-export rebuild recompute register remove rename replace "
    "retrain run save score set state train try upload use write"
).split()
FIX_START = re.compile(rf"^(?:or |and |then )?(?:{'|'.join(map(re.escape, FIX_VERBS))}|it must)(?![\w-])", re.I)
SEPARATOR = re.compile(r": |; |\. ")
PARAMETER_VALUE = re.compile(rf"^(?:--)?[\w-]+ (?:= )?{HOLE}$")  # "steps = ◇", "--n-boot ◇": a value that does not fit
# what an empty value leaves behind: "()", "''", "x: .", "(a, )", "(, b)"
EMPTY_PARTS = {
    "empty brackets": re.compile(r"(?<![\w.])[(\[]\s*[)\]]"),  # not a call such as model.eval()
    "empty quotes": re.compile(r"(?<![\w'\"`])(?:''|\"\"|``)(?![\w'\"`])"),
    "punctuation with nothing between": re.compile(r"[:;,]\s+[.,;:)](?![\w.])|\(\s*[,;:]"),  # "(B, ...)" is whole
}
# and in the static text also what a slip of the pen leaves
SLIPS = {
    "a space before punctuation": re.compile(r"\s[,;:)]|\s\.(?=\s|$)"),
    "a doubled space": re.compile(r"\S {2,}\S"),
}
# callables whose text is never empty: a number, a shape, `reason`, and Eve's describers (SliceSpec.describe,
# zoo._describe, score._slice), each an f-string with words in it
NEVER_EMPTY_CALLS = {"reason", "len", "int", "float", "round", "tuple", "describe", "_describe", "_slice"}
# values read here to be never empty, which the expression alone does not show
REVIEWED = {
    ("engine/models/zoo.py", "axes"): "a SliceSpec's shape, (1, S, S) or (1, S, S, S), joined",
    ("engine/diffusion/pipeline.py", "self.codec.size"): "a codec's image side, an int",
}


# ---------------------------------------------------------------- the walk


@dataclass(frozen=True)
class Message:
    where: str  # "engine/x.py:123", the line of the call
    text: str  # the static text, HOLE for each formatted value
    holes: tuple[ast.expr, ...]  # the formatted values, in order
    caught: frozenset[str]  # names bound to a caught exception where the message is built
    env: dict[str, ast.expr] = field(repr=False)  # names assigned once in its scope or module: their values
    guarded: frozenset[str]  # names it is raised under `if NAME:` of, so never empty there

    @property
    def path(self) -> str:
        return self.where.split(":")[0]


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """EveInputError and every class defined in the sources that derives from it, at any depth."""
    names = {"EveInputError"}
    while True:
        more = {
            node.name
            for tree in trees.values()
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and any(_name(base) in names for base in node.bases)
        }
        if more <= names:
            return names
        names |= more


def _name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _assigned(body: list[ast.stmt] | ast.AST) -> dict[str, ast.expr]:
    """Names assigned exactly once in `body` (a scope's statements), to their values."""
    nodes = body if isinstance(body, list) else [body]
    assigned: dict[str, list[ast.expr | None]] = {}
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) and isinstance(node.target, ast.Name):
            assigned.setdefault(node.target.id, []).extend([None, None])
    return {k: v[0] for k, v in assigned.items() if len(v) == 1 and v[0] is not None}


def _stringy(value: ast.expr) -> bool:
    return isinstance(value, ast.JoinedStr) or isinstance(value, ast.Constant) and isinstance(value.value, str)


def _static(node: ast.expr, env: dict[str, ast.expr], holes: list[ast.expr]) -> str:
    """The static text of a string expression; each value not known here is HOLE (and kept in `holes`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in env and _stringy(env[node.id]):
        return _static(env[node.id], env, holes)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            plain = isinstance(value, ast.FormattedValue) and value.conversion == -1 and value.format_spec is None
            if isinstance(value, ast.Constant):
                parts.append(value.value)
            elif plain and isinstance(value.value, ast.Name) and _stringy(env.get(value.value.id)):
                parts.append(_static(value.value, env, holes))
            else:
                holes.append(value)
                parts.append(HOLE)
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _static(node.left, env, holes) + _static(node.right, env, holes)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant):
        holes.append(node.right)
        return re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfgieEx]", HOLE, node.left.value)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
    ):
        holes.extend([*node.args, *(k.value for k in node.keywords)])
        return re.sub(r"\{[^{}]*\}", HOLE, node.func.value.value)
    holes.append(node)
    return HOLE


def _caught(node: ast.AST, parents: dict[ast.AST, ast.AST], classes: set[str]) -> frozenset[str]:
    """Names bound by the `except ... as NAME` handlers around `node`, except handlers of Eve's own
    errors (whose text is a message this test walks)."""
    names = set()
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.ExceptHandler) and node.name:
            types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            if not all(_name(t) in classes for t in types):
                names.add(node.name)
    return frozenset(names)


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> frozenset[str]:
    """Names tested true by the `if`s around `node` (`if problem:`, `if unknown and ...:`)."""
    names = set()
    while node in parents:
        node, child = parents[node], node
        if isinstance(node, ast.If) and child in node.body:
            tests = (
                node.test.values
                if isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And)
                else [node.test]
            )
            names |= {t.id for t in tests if isinstance(t, ast.Name)}
    return frozenset(names)


def _scope_env(node: ast.AST, parents: dict[ast.AST, ast.AST], module_env: dict[str, ast.expr]):
    scope = node
    while scope in parents and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        scope = parents[scope]
    local = _assigned(scope.body) if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) else {}
    return {**module_env, **local}


def _parse() -> tuple[dict[Path, ast.Module], set[str]]:
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in SOURCES}
    return trees, _error_classes(trees)


def collect() -> list[Message]:
    """Every call of an EveInputError class in the sources, with its message's static text."""
    trees, classes = _parse()
    messages = []
    for path, tree in trees.items():
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        module_env = _assigned([s for s in tree.body if isinstance(s, ast.Assign)])
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in classes:
                env = _scope_env(node, parents, module_env)
                holes: list[ast.expr] = []
                text = _static(node.args[0], env, holes) if node.args else ""
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                caught = _caught(node, parents, classes)
                messages.append(Message(where, text, tuple(holes), caught, env, _guarded(node, parents)))
    return messages


def caught_interpolations() -> list[tuple[str, str, ast.expr]]:
    """(where, path, value) for every f-string value in the sources that mentions a caught exception
    (outside handlers of Eve's own errors), in a message raised or shown."""
    trees, classes = _parse()
    found = []
    for path, tree in trees.items():
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.FormattedValue):
                caught = _caught(node, parents, classes)
                if any(isinstance(n, ast.Name) and n.id in caught for n in ast.walk(node.value)):
                    rel = str(path.relative_to(ROOT))
                    found.append((f"{rel}:{node.lineno}", rel, node.value))
    return found


MESSAGES = collect()
CAUGHT = caught_interpolations()


# ---------------------------------------------------------------- the rules, on a message's text


def static_words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][\w'-]*", text.replace(HOLE, " "))


def fix_problems(text: str) -> list[str]:
    """What keeps `text` from being a problem, then a clause (after ': ', '; ' or '. ') that opens
    with its fix, or with a fix after a comma ("for a diffusion model, use ..."); empty when nothing."""
    if FIX_START.match(text):
        return [f"it opens with the fix ({text.split()[0]!r}), naming no problem first"]
    bounds = [0, *(m.end() for m in SEPARATOR.finditer(text)), len(text)]
    for start, end in zip(bounds[1:-1], bounds[2:], strict=True):
        if any(FIX_START.match(piece) for piece in text[start:end].split(", ")):
            problem = text[:start].rstrip(":;. ")
            if len(static_words(problem)) < 2 and not PARAMETER_VALUE.match(problem):
                return [f"the problem before the fix, {problem!r}, is not named in words"]
            return []
    return ["no clause after ': ', '; ' or '. ' opens with a fix (an imperative, or 'it must')"]


def empty_parts(text: str) -> list[str]:
    return [f"{what} at {m.group(0)!r}" for what, rx in EMPTY_PARTS.items() for m in rx.finditer(text)]


def never_empty(value: ast.expr, env: dict[str, ast.expr]) -> bool:
    """Whether a formatted value's text is never empty, as far as its expression (and, for a name
    assigned once, its value) shows."""
    if isinstance(value, ast.FormattedValue):
        if value.conversion in (ord("r"), ord("a")) or value.format_spec is not None:
            return True  # a repr, or a number formatted to a spec
        value = value.value
    if isinstance(value, ast.Name) and value.id in env:
        return never_empty(env[value.id], {k: v for k, v in env.items() if k != value.id})
    if isinstance(value, ast.Constant):
        return str(value.value) != ""
    if isinstance(value, ast.JoinedStr):
        return any(isinstance(v, ast.Constant) and v.value for v in value.values) or any(
            never_empty(v, env) for v in value.values
        )
    if isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or):
        return never_empty(value.values[-1], env)
    if isinstance(value, ast.IfExp):
        return never_empty(value.body, env) and never_empty(value.orelse, env)
    if isinstance(value, ast.Call) and _name(value.func) == "join" and value.args:
        registry = value.args[0]
        return isinstance(registry, ast.Name) and registry.id.isupper()  # a module's registry: never empty
    if isinstance(value, ast.BinOp) and not isinstance(value.op, ast.Add):
        return True  # arithmetic: a number
    if isinstance(value, ast.Attribute) and value.attr == "__name__":
        return True
    return isinstance(value, ast.Call) and _name(value.func) in NEVER_EMPTY_CALLS


def is_reason(value: ast.expr) -> bool:
    """Whether a value that mentions a caught exception shows it only through `reason` or by its type."""
    if isinstance(value, ast.Call) and _name(value.func) == "reason":
        return True
    if isinstance(value, ast.Attribute) and value.attr == "__name__":
        return True
    if isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or):
        return is_reason(value.values[-1])  # e.g. exc.strerror or reason(exc)
    return False


# ---------------------------------------------------------------- the walk itself


def test_the_walk_finds_every_message():
    call = re.compile(rf"(?<!class )\b(?:{'|'.join(_parse()[1])})\(")
    calls = sum(len(call.findall(path.read_text())) for path in SOURCES)
    assert len(MESSAGES) >= MIN_MESSAGES, f"only {len(MESSAGES)} messages found: the walk misses some"
    assert len(MESSAGES) == calls, f"{len(MESSAGES)} messages parsed, {calls} calls in the text"


def test_every_message_is_text_where_it_is_built():
    """A message is a string written at the call (or a string variable of its scope), not a value
    passed through from elsewhere, so that this test can read it."""
    opaque = [m.where for m in MESSAGES if m.text.replace(HOLE, "").strip() == ""]
    assert not opaque, f"messages whose text this test cannot read: {opaque}"


# ---------------------------------------------------------------- (a), (b), (c) per message


@pytest.mark.parametrize("message", MESSAGES, ids=[m.where for m in MESSAGES])
def test_message_is_a_sentence(message):
    words = static_words(message.text)
    assert len(words) >= 4 and len(message.text.replace(HOLE, "")) >= 20, (
        f"{message.where}: {message.text!r} is too short to name a problem and its fix"
    )
    assert message.text.rstrip().endswith("."), f"{message.where}: {message.text!r} does not end as a sentence"


@pytest.mark.parametrize("message", MESSAGES, ids=[m.where for m in MESSAGES])
def test_message_names_the_problem_and_the_fix(message):
    problems = fix_problems(message.text)
    assert not problems, f"{message.where}: {message.text!r}: {'; '.join(problems)}"


def _expression(hole: ast.expr) -> str:
    return ast.unparse(hole.value if isinstance(hole, ast.FormattedValue) else hole)


@pytest.mark.parametrize(
    "message",
    [pytest.param(m, id=m.where) for m in MESSAGES],
)
def test_message_has_no_empty_parts(message):
    slips = empty_parts(message.text) + [
        f"{w} at {m.group(0)!r}" for w, rx in SLIPS.items() for m in rx.finditer(message.text)
    ]
    assert not slips, f"{message.where}: {message.text!r}: {slips}"
    for i, hole in enumerate(message.holes):
        # the text with this one value empty (the others filled): what a reader would see
        pieces = message.text.split(HOLE)
        fills = ["" if j == i else "x" for j in range(len(pieces) - 1)] + [""]
        emptied = "".join(piece + fill for piece, fill in zip(pieces, fills, strict=True))
        expression = _expression(hole)
        known = expression in message.guarded or (message.path, expression) in REVIEWED
        if empty_parts(emptied) and not known and not never_empty(hole, message.env):
            pytest.fail(
                f"{message.where}: {message.text!r}: if {expression} were empty the message would read "
                f"{emptied!r} ({'; '.join(empty_parts(emptied))}); give it a fallback (`or ...`) or reword"
            )


@pytest.mark.parametrize(
    ("where", "value"),
    [pytest.param(where, value, id=where) for where, path, value in CAUGHT],
)
def test_a_caught_exception_is_shown_through_reason(where, value):
    """An exception's own text can be empty (RuntimeError()) or span lines (nibabel, TorchScript):
    `reason` gives one line, never empty. Its type's name is fine as it is."""
    assert is_reason(value), f"{where}: {{{ast.unparse(value)}}} formats a caught exception raw: use reason()"


# ---------------------------------------------------------------- engine.errors.reason


@pytest.mark.parametrize("exc", [RuntimeError(), ValueError(""), OSError(), KeyError(), Exception(" \n\t ")], ids=repr)
def test_reason_is_never_empty(exc):
    assert reason(exc) == reason(exc, typed=True) == type(exc).__name__
    assert not empty_parts(f"It failed ({reason(exc)}): fix it.")


def test_reason_is_one_bounded_line():
    assert reason(ValueError("bad\n  header\tsize")) == "bad header size"
    assert reason(KeyError("x"), typed=True) == "KeyError: 'x'"
    assert len(reason(ValueError("x" * 1000))) == REASON_CHARS
    torchscript = RuntimeError(
        "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript, serialized "
        'code (most recent call last):\n  File "code/m.py", line 3\n    ~~~ <--- HERE\nRuntimeError: 3 channels\n'
    )
    assert reason(torchscript) == "RuntimeError: 3 channels"
    assert reason(torchscript, typed=True) == "RuntimeError: 3 channels"


# ---------------------------------------------------------------- a few raised for real


def assert_whole(message: str) -> None:
    assert not empty_parts(message), f"{message!r}: {empty_parts(message)}"
    assert not fix_problems(message), f"{message!r}: {fix_problems(message)}"


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    volumes = {f"s{i}.nii.gz": rng.random((12, 14, 10)).astype(np.float32) for i in range(3)}
    return write_folder(tmp_path / "cohort", volumes, [{"file": f"s{i}.nii.gz", "age": 60 + i} for i in range(3)])


def test_a_corrupt_volume_in_a_folder(tmp_path):
    folder = _folder(tmp_path)
    (folder / "s1.nii.gz").write_bytes(gzip.compress(b"garbage" * 100))
    with pytest.raises(DatasetError, match=r"Row 3: s1.nii.gz is not a readable NIfTI file \(\S") as raised:
        load_dataset(folder)
    assert_whole(str(raised.value))


def test_a_missing_model_file(tmp_path):
    with pytest.raises(EveInputError, match="does not exist: check the path") as raised:
        load_torchscript(tmp_path / "missing.pt", SPEC)
    assert_whole(str(raised.value))


def test_an_unreadable_model_card(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(EveInputError, match=r"not readable JSON \(\S") as raised:
        read_card(tmp_path / "broken.json")
    assert_whole(str(raised.value))


def test_a_torchscript_failure_names_the_original_error(tmp_path):
    with pytest.raises(EveInputError) as raised:
        load_torchscript(_save(ThreeChannels(), tmp_path), SPEC)
    assert "channels" in str(raised.value) and "TorchScript interpreter" not in str(raised.value)
    assert_whole(str(raised.value))


class Silent(nn.Module):
    """A model that fails with an exception that carries no text."""

    def forward(self, x):
        raise RuntimeError()


def test_an_exception_without_text_leaves_no_empty_brackets():
    with pytest.raises(EveInputError, match=r"\(RuntimeError\): give images") as raised:
        attribution_map(Silent().eval(), torch.rand(2, 1, 16, 16), "Saliency")
    assert_whole(str(raised.value))
