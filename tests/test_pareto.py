"""Pareto front, budgeted choice, report merging and the choose/pareto commands, on hand-made entries."""

import json
import os

import pytest

from hf_methods.pareto import (
    choose,
    choose_main,
    fmt_flops,
    fmt_params,
    load_entries,
    pareto_front,
    pareto_main,
    parse_count,
    validate_entries,
    write_pareto_report,
)


def entry(method, name, params, flops, accuracy, **extra):
    return {"method": method, "name": name, "params": params, "flops": flops, "accuracy": accuracy, **extra}


@pytest.fixture
def entries():
    return [
        entry("TLEG", "depth 2", 1_000_000, 200_000_000, 0.70, stored_params=3_000_000, path="tleg/d2"),
        entry("TLEG", "depth 4", 2_000_000, 400_000_000, 0.80, stored_params=3_000_000, path="tleg/d4"),
        entry("TLEG", "depth 6", 3_000_000, 600_000_000, 0.85, stored_params=3_000_000, path="tleg/d6"),
        entry("SWS", "depth 4", 2_000_000, 350_000_000, 0.78, path="sws/d4"),
        entry("Learngene Pool", "stitch 0->2 (3,4)", 2_500_000, 300_000_000, 0.82, stored_params=9_000_000),
        entry("scratch", "depth 6", 3_000_000, 600_000_000, 0.75, seed=0),
    ]


def names(rows):
    return [(r["method"], r["name"]) for r in rows]


def test_front_on_params_and_flops(entries):
    assert names(pareto_front(entries, "params")) == [
        ("TLEG", "depth 2"),
        ("TLEG", "depth 4"),
        ("Learngene Pool", "stitch 0->2 (3,4)"),
        ("TLEG", "depth 6"),
    ]
    # by FLOPs the stitched model is cheaper than TLEG depth 4 and more accurate, so depth 4 and SWS drop out
    assert names(pareto_front(entries, "flops")) == [
        ("TLEG", "depth 2"),
        ("Learngene Pool", "stitch 0->2 (3,4)"),
        ("TLEG", "depth 6"),
    ]
    with pytest.raises(ValueError, match="cost must be one of"):
        pareto_front(entries, "latency")


def test_front_ties_and_duplicates():
    rows = [
        entry("A", "a", 10, 10, 0.5),
        entry("A", "a copy", 10, 10, 0.5),  # exact duplicate: neither dominates the other, both stay
        entry("B", "same size, worse", 10, 10, 0.4),  # same cost, lower accuracy: dominated
        entry("B", "bigger, same accuracy", 20, 20, 0.5),  # same accuracy, higher cost: dominated
        entry("C", "bigger, better", 20, 20, 0.6),
    ]
    assert [r["name"] for r in pareto_front(rows)] == ["a", "a copy", "bigger, better"]
    assert pareto_front([]) == []


def test_choose_under_budgets(entries):
    assert names([choose(entries, budget_params=2_000_000)]) == [("TLEG", "depth 4")]
    assert names([choose(entries, budget_params=2_600_000)]) == [("Learngene Pool", "stitch 0->2 (3,4)")]
    assert names([choose(entries, budget_flops=350_000_000)]) == [("Learngene Pool", "stitch 0->2 (3,4)")]
    assert names([choose(entries, budget_params=10**9, budget_flops=10**12)]) == [("TLEG", "depth 6")]
    # both: 2M params leaves TLEG depth 2/4 and SWS, 350 MFLOPs then rules out TLEG depth 4
    assert names([choose(entries, budget_params=2_000_000, budget_flops=350_000_000)]) == [("SWS", "depth 4")]
    assert names([choose(entries, budget_params=5_000_000, method="sws")]) == [("SWS", "depth 4")]
    assert names([choose(entries, budget_params=5_000_000, method="scratch")]) == [("scratch", "depth 6")]


def test_choose_tie_breaks():
    rows = [
        entry("A", "big", 20, 5, 0.9),
        entry("A", "small, more flops", 10, 9, 0.9),
        entry("B", "small, fewer flops z", 10, 8, 0.9),
        entry("B", "small, fewer flops a", 10, 8, 0.9),
    ]
    assert choose(rows, budget_params=100)["name"] == "small, fewer flops a"


def test_choose_errors(entries):
    with pytest.raises(ValueError, match="give a budget"):
        choose(entries)
    with pytest.raises(ValueError) as err:
        choose(entries, budget_params=500_000)
    message = str(err.value)
    assert "params <= 500.0K" in message and "smallest available: 1.0M params (1000000" in message
    assert "200.0 MFLOPs (200000000" in message and "TLEG depth 2" in message
    with pytest.raises(ValueError, match="flops <= 100.0 MFLOPs") as err:
        choose(entries, budget_params=10**9, budget_flops=100_000_000)
    with pytest.raises(ValueError, match="of method 'SWS'.*smallest available: 2.0M params"):
        choose(entries, budget_params=1_500_000, method="SWS")
    with pytest.raises(ValueError, match="no entry of method 'MiniLM'; available methods: Learngene Pool, SWS"):
        choose(entries, budget_params=10**9, method="MiniLM")
    with pytest.raises(ValueError, match="no entries"):
        choose([], budget_params=10)


def test_parse_count_and_formats():
    assert parse_count("5e6") == 5_000_000
    assert parse_count("5M") == 5_000_000
    assert parse_count("250K") == 250_000
    assert parse_count("250k") == 250_000
    assert parse_count("1.5G") == 1_500_000_000
    assert parse_count("1.5B") == 1_500_000_000
    assert parse_count(" 5_000_000 ") == 5_000_000
    assert parse_count("0.1M") == 100_000
    assert parse_count(42) == 42
    for bad in ("", "five", "5X", "-5M", "0", "M"):
        with pytest.raises(ValueError):
            parse_count(bad)
    assert fmt_params(1_234_567) == "1.2M" and fmt_params(45_300) == "45.3K" and fmt_params(812) == "812"
    assert fmt_flops(1_234_567_890) == "1.2 GFLOPs" and fmt_flops(3_400_000) == "3.4 MFLOPs"


def test_validate_entries_errors(entries):
    assert validate_entries(entries) is entries
    cases = [
        ({"method": "TLEG", "name": "x", "params": 1, "flops": 1}, "entry 1 \\(TLEG x\\): missing field 'accuracy'"),
        (entry("TLEG", "", 1, 1, 0.5), "entry 1: field 'name' must be a non-empty string"),
        (entry("TLEG", "x", 1.5, 1, 0.5), "entry 1 \\(TLEG x\\): field 'params' must be a positive integer, got 1.5"),
        (entry("TLEG", "x", 1, 0, 0.5), "field 'flops' must be a positive integer, got 0"),
        (entry("TLEG", "x", True, 1, 0.5), "field 'params' must be a positive integer"),
        (entry("TLEG", "x", 1, 1, float("nan")), "field 'accuracy' must be a finite number"),
        (entry("TLEG", "x", 1, 1, "0.5"), "field 'accuracy' must be a finite number"),
        (entry("TLEG", "x", 1, 1, 0.5, stored_params=-3), "field 'stored_params' must be a positive integer"),
        (entry("TLEG", "x", 1, 1, 0.5, path=3), "field 'path' must be a non-empty string"),
        ("not a dict", "entry 1: must be a dict"),
    ]
    for bad, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            validate_entries([entries[0], bad])
    with pytest.raises(ValueError, match="must be a list"):
        validate_entries({"entries": []})
    with pytest.raises(ValueError, match="^r.json: entry 0"):
        validate_entries([{}], source="r.json")


def write_sources(tmp_path, entries):
    """A Pareto-style {"entries"} file and a recipe report.json with "choices", in different folders."""
    (tmp_path / "a").mkdir()
    (tmp_path / "run").mkdir()
    pool_file = tmp_path / "a" / "pool.json"
    pool_file.write_text(json.dumps({"title": "pool", "entries": entries[3:]}))
    report = tmp_path / "run" / "report.json"
    report.write_text(json.dumps({"method": "TLEG", "dataset": "toy", "choices": entries[:3]}))
    return pool_file, report


def test_load_entries_merges_and_resolves_paths(tmp_path, entries):
    pool_file, report = write_sources(tmp_path, entries)
    merged = load_entries([pool_file, report, str(report)])  # the same report twice is kept once
    assert sorted(names(merged)) == sorted(names(entries))
    by_name = {(e["method"], e["name"]): e for e in merged}
    assert by_name["TLEG", "depth 4"]["path"] == str(tmp_path / "run" / "tleg" / "d4")
    assert by_name["SWS", "depth 4"]["path"] == str(tmp_path / "a" / "sws" / "d4")
    assert "path" not in by_name["Learngene Pool", "stitch 0->2 (3,4)"]
    assert by_name["scratch", "depth 6"]["seed"] == 0  # extra keys survive
    assert entries[1]["path"] == "tleg/d4"  # the caller's dicts are not modified

    (tmp_path / "bad.json").write_text(json.dumps({"descendants": []}))
    with pytest.raises(ValueError, match="bad.json: expected a JSON object with an 'entries' or a 'choices' list"):
        load_entries([tmp_path / "bad.json"])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_entries(tmp_path / "broken.json")
    (tmp_path / "badrow.json").write_text(json.dumps({"entries": [entry("A", "x", 1, 1, 0.5), {"name": "y"}]}))
    with pytest.raises(ValueError, match="badrow.json: entry 1: missing field 'method'"):
        load_entries([tmp_path / "badrow.json"])


def test_write_pareto_report(tmp_path, entries):
    pool_file, report = write_sources(tmp_path, entries)
    out = tmp_path / "out"
    md, js, png = write_pareto_report(load_entries([pool_file, report]), out, "Pick a model")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["pareto.json", "pareto.md", "pareto.png"]  # no temp files left
    text = md.read_text()
    assert text.startswith("# Pick a model")
    for e in entries:
        assert f"| {e['method']} | {e['name']} |" in text
    assert "| TLEG | depth 4 | 2.0M | 400.0 MFLOPs | 0.800 | 3.0M | params |" in text
    assert "| Learngene Pool | stitch 0->2 (3,4) | 2.5M | 300.0 MFLOPs | 0.820 | 9.0M | params + FLOPs |" in text
    assert "| scratch | depth 6 | 3.0M | 600.0 MFLOPs | 0.750 | — | — |" in text
    assert (
        text.index("| Learngene Pool |")
        < text.index("| SWS |")
        < text.index("| TLEG | depth 2")
        < text.index("| TLEG | depth 4")
        < text.index("| scratch |")
    )
    assert "**TLEG** depth 6 (accuracy 0.850" in text and "**scratch** depth 6" in text
    assert "![accuracy vs parameters and FLOPs](pareto.png)" in text

    data = json.loads(js.read_text())
    assert data["title"] == "Pick a model" and len(data["entries"]) == len(entries)
    # paths are stored relative to the report's folder and resolve back to the same absolute place
    stored = {(e["method"], e["name"]): e for e in data["entries"]}
    assert stored["TLEG", "depth 4"]["path"] == os.path.join("..", "run", "tleg", "d4")
    reloaded = {(e["method"], e["name"]): e for e in load_entries([js])}
    assert reloaded["TLEG", "depth 4"]["path"] == str(tmp_path / "run" / "tleg" / "d4")

    with pytest.raises(ValueError, match="no entries"):
        write_pareto_report([], tmp_path / "empty", "x")


def test_choose_main(tmp_path, entries, capsys):
    pool_file, report = write_sources(tmp_path, entries)
    choose_main([str(pool_file), str(report), "--budget-params", "2M"])
    line = capsys.readouterr().out.strip()
    assert line == (
        f"TLEG depth 4: 2.0M params (2000000), 400.0 MFLOPs (400000000), accuracy 0.8000, "
        f"path {tmp_path / 'run' / 'tleg' / 'd4'}"
    )

    choose_main([str(pool_file), str(report), "--budget-params", "2e6", "--budget-flops", "350M", "--json"])
    chosen = json.loads(capsys.readouterr().out)
    assert (chosen["method"], chosen["name"], chosen["path"]) == ("SWS", "depth 4", str(tmp_path / "a" / "sws" / "d4"))

    choose_main([str(pool_file), str(report), "--budget-flops", "1.5G", "--method", "scratch"])
    assert capsys.readouterr().out.startswith("scratch depth 6: 3.0M params")

    with pytest.raises(SystemExit) as exit_:
        choose_main([str(pool_file), str(report), "--budget-params", "250K"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "hf-methods choose: error: no model fits params <= 250.0K" in err and "smallest available: 1.0M" in err

    for argv, expected in [
        ([str(report)], "give --budget-params and/or --budget-flops"),
        ([str(tmp_path / "missing.json"), "--budget-params", "5M"], "missing.json"),
        ([str(report), "--budget-params", "lots"], "not a count: 'lots'"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            choose_main(argv)
        assert exit_.value.code == 2
        assert expected in capsys.readouterr().err


def test_pareto_main(tmp_path, entries, capsys):
    pool_file, report = write_sources(tmp_path, entries)
    out = tmp_path / "report"
    pareto_main([str(pool_file), str(report), "--output-dir", str(out), "--title", "All families"])
    line = capsys.readouterr().out.strip()
    assert line == (
        f"wrote {out / 'pareto.md'} (6 models, 4 methods, 4 on the params front; most accurate: TLEG depth 6 0.8500)"
    )
    assert (out / "pareto.md").read_text().startswith("# All families")
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # the written report is itself a valid input to choose
    choose_main([str(out / "pareto.json"), "--budget-params", "2.5M"])
    assert capsys.readouterr().out.startswith("Learngene Pool stitch 0->2 (3,4): 2.5M params")

    with pytest.raises(SystemExit) as exit_:
        pareto_main([str(tmp_path / "nope.json"), "--output-dir", str(out)])
    assert exit_.value.code == 2
    assert "hf-methods pareto: error:" in capsys.readouterr().err
