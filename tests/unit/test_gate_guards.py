"""Which gate guards which priority is said by the gate definitions (`guards = "P2"`), nowhere
else: the migration rules read it from the TOML without importing the gates package, a user gates
file may move a guard, and a bad or doubled guard is one error naming the file and the gate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.errors import TradeopsError
from backend.migration.gate_status import blocking_gate, gate_guards
from gates import model

SHIPPED = {1: "phase1", 2: "task02", 3: "task03", 4: "task04", 5: "task05"}


def gate(gid: str, extra: str = "") -> str:
    return f'[[gate]]\nid = "{gid}"\ntitle = "t"\n{extra}\n'


def test_the_shipped_gates_guard_each_priority_once() -> None:
    assert gate_guards() == SHIPPED
    gates = model.load()
    assert {int(g.guards[1:]): g.id for g in gates.values() if g.guards} == SHIPPED
    assert gates["task06"].guards is None  # after the last priority


def test_the_rules_read_the_guards_without_the_gates_package() -> None:
    code = (
        "import sys\nfrom backend.migration.gate_status import gate_guards\nguards = gate_guards()\n"
        "print(len(guards), sorted(n for n in sys.modules if n == 'gates' or n.startswith('gates.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5 []"


def test_a_user_file_moves_a_guard(tmp_path: Path) -> None:
    f = tmp_path / "gates.toml"
    f.write_text(gate("task02") + gate("p2-soak", 'guards = "P2"'))  # task02 replaced, guarding nothing
    assert gate_guards(f) == {**SHIPPED, 2: "p2-soak"}
    assert model.load(f)["p2-soak"].guards == "P2"
    assert blocking_gate(2, {"task02": "proceed"}, f) == "p2-soak"
    assert blocking_gate(2, {"p2-soak": "proceed"}, f) is None
    assert gate_guards(tmp_path / "missing.toml") == SHIPPED  # no user file: the shipped gates


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('guards = "P9"', "gate mine: guards must name a priority (P1, P2, P3, P4, P5), not 'P9'"),
        ('guards = "2"', "gate mine: guards must name a priority (P1, P2, P3, P4, P5), not '2'"),
        ("guards = 2", "gate mine: guards must name a priority (P1, P2, P3, P4, P5), not 2"),
        (
            'guards = "P3"',
            "gate mine: P3 is already guarded by gate task03 (a priority is guarded by at most one gate)",
        ),
    ],
)
def test_a_bad_guard_names_the_file_and_the_gate(tmp_path: Path, extra: str, message: str) -> None:
    f = tmp_path / "gates.toml"
    f.write_text(gate("mine", extra))
    for read in (gate_guards, model.load):
        with pytest.raises(TradeopsError) as err:
            read(f)
        assert str(err.value) == f"{f}: {message}"


def test_one_file_may_not_guard_a_priority_twice_and_unknown_fields_stay_forbidden() -> None:
    with pytest.raises(TradeopsError, match=r"^mine.toml: gate b: P1 is already guarded by gate a "):
        model.parse(gate("a", 'guards = "P1"') + gate("b", 'guards = "P1"'), "mine.toml")
    with pytest.raises(TradeopsError, match=r"^mine.toml: Object contains unknown field `guard`"):
        model.parse(gate("a", 'guard = "P1"'), "mine.toml")
