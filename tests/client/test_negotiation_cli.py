"""The negotiation commands that need no node (``reconcile``), in-process."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from client.cli import main

LIST_A = ("family_name,given_names,date_of_birth\n"
          "Шевченко,Тарас,1990-03-09\nКоваленко,Олена,1985-01-02\nПетров,Іван,1970-05-05\n")
LIST_B = ("family_name,given_names,date_of_birth\n"
          "Shevchenko,Taras,1990-03-09\nOlena,Kovalenko,1985-01-02\nSydorenko,Mykola,1960\n")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reconcile_json_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(LIST_A)
    b.write_text(LIST_B)
    out_file = tmp_path / "result.json"
    code, out, _ = _run(capsys, "reconcile", str(a), str(b), "--json", "--out", str(out_file))
    assert code == 0
    result = json.loads(out)
    assert json.loads(out_file.read_text()) == result
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert [(m["a"], m["b"]) for m in result["matched"]] == [(1, 1), (2, 2)]
    assert "given and family names swapped" in result["matched"][1]["reasons"]
    assert result["unmatched_a"][0]["a"] == 3 and result["unmatched_b"][0]["b"] == 3
    assert result["counts"] == {"a": 3, "b": 3, "matched": 2, "ambiguous": 0,
                                "unmatched_a": 1, "unmatched_b": 1}


def test_reconcile_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(LIST_A)
    b.write_text(LIST_B)
    code, out, _ = _run(capsys, "reconcile", str(a), str(b))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Matched (2):"
    assert lines[1].startswith("  A1 Шевченко Тарас (1990-03-09)  =  B1 Shevchenko Taras")
    assert lines[-1] == f"Only in {b} (1): B3"


def test_reconcile_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, bad = tmp_path / "a.csv", tmp_path / "bad.csv"
    a.write_text(LIST_A)
    bad.write_text("family_name,date_of_birth\nA,1990-13-01\n,1990\n")
    for argv, reason in (
            ((str(a), str(tmp_path / "missing.csv")), "cannot read list"),
            ((str(a), str(bad)), "line 2: date_of_birth '1990-13-01' is not a date")):
        code, _, err = _run(capsys, "reconcile", *argv)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, err
        assert lines[0].startswith("backchannel: error: ") and reason in lines[0], err
    code, _, err = _run(capsys, "reconcile", str(a), str(bad))
    assert "and 1 more" in err
