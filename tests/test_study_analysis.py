"""End to end: create → simulated readers of known skill → analyse, report, export, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mammosynth.study.analysis import analyse, responses_table
from mammosynth.study.create import create_study
from mammosynth.study.demo import make_demo_datasets, write_demo_readers
from mammosynth.study.simulate import expected_auc, simulate_study

SKILLS = {"reader01": 3.0, "reader02": 3.0, "reader03": 0.0, "reader04": 0.0}


@pytest.fixture(scope="module")
def answered(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    real, synth = make_demo_datasets(root, 70, 70, height=16, width=16, seed=2)
    readers = write_demo_readers(root / "readers.csv", 4)
    study = create_study(root / "s", name="sim", real=real, synthetic=synth, readers_csv=readers,
                         n_cases=60, repeats=6, seed=2)
    simulate_study(study, SKILLS, seed=4)
    return study


def test_statistics_recover_known_reader_skill(answered):
    result = analyse(answered)
    per = result["per_reader"]
    assert set(per) == set(SKILLS) and all(r["n"] == 60 for r in per.values())
    for reader_id, d in SKILLS.items():
        roc = per[reader_id]["roc"]
        # Within 3 standard errors. Near AUC = 1 the DeLong SE collapses towards 0, so it is
        # floored by the binomial SE of the expected AUC with the smaller class size.
        auc = expected_auc(d)
        floor = np.sqrt(auc * (1 - auc) / min(roc["n_pos"], roc["n_neg"]))
        assert abs(roc["auc"] - auc) < 3 * max(roc["se"], floor), (reader_id, roc)
    assert per["reader01"]["p_vs_chance"] < 1e-4 and per["reader03"]["p_vs_chance"] > 0.001
    assert per["reader01"]["ci_low"] > 0.5
    m = result["mrmc"]
    assert m["available"] and m["n_readers"] == 4 and m["n_cases"] == 60
    assert m["auc"] == pytest.approx(np.mean([per[r]["roc"]["auc"] for r in SKILLS]))
    assert m["ci_low"] < m["auc"] < m["ci_high"]
    assert -1 <= result["agreement"]["fleiss_kappa"] <= 1
    assert len(result["agreement"]["pairwise_cohen_kappa"]) == 6
    assert all(v["n_pairs"] == 6 for v in result["intra_reader"].values())
    assert result["pooled"]["n"] == 240


def test_analysis_uses_first_readings_and_right_truth(answered):
    table = responses_table(answered)
    key = answered.key()["cases"]
    assert len(table) == 4 * 66
    assert (table["y_true"] == [int(key[c]["truth"] == "synthetic") for c in table["case_id"]]).all()
    first = table[table["repeat_of"].isna()]
    acc = (first.query("reader_id == 'reader02'")["y_true"] == first.query("reader_id == 'reader02'")["y_pred"]).mean()
    assert analyse(answered)["per_reader"]["reader02"]["accuracy"] == pytest.approx(acc)


def test_report_and_exports(answered, tmp_path):
    from mammosynth.study.export import export_csv, export_imrmc
    from mammosynth.study.report import write_report

    result = write_report(answered, tmp_path / "rep")
    for name in ("report.json", "report.md", "roc.png", "accuracy.png", "confidence.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["mrmc"]["auc"] == pytest.approx(result["mrmc"]["auc"])
    assert "Reader-averaged AUC" in (tmp_path / "rep" / "report.md").read_text()
    rows = export_csv(answered, tmp_path / "a.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 66 and rows[0].startswith("reader_id,case_id")
    text = export_imrmc(answered, tmp_path / "a.imrmc").read_text().splitlines()
    start = text.index("BEGIN DATA:")
    header = dict(line.split(":") for line in text[:start] if line[:3] in ("N0:", "N1:", "NR:", "NM:"))
    assert header == {"N0": "30", "N1": "30", "NR": "4", "NM": "1"}
    data = text[start + 1:]
    assert sum(line.startswith("-1,") for line in data) == 60 and len(data) == 60 + 4 * 60


def test_cli_create_status_analyse_export(tmp_path, capsys):
    from mammosynth.commands import study as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    real, synth = make_demo_datasets(tmp_path, 20, 20, height=16, width=16)
    readers = write_demo_readers(tmp_path / "r.csv", 2)
    out = tmp_path / "pilot"

    def run(*argv):
        args = parser.parse_args(["study", *argv])
        return args.handler(args)

    assert run("create", "--name", "pilot", "--real", str(real), "--synthetic", str(synth), "--cases", "10",
               "--readers", str(readers), "--out", str(out)) == 0
    assert "10 cases" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="not empty"):
        run("create", "--name", "pilot", "--real", str(real), "--synthetic", str(synth), "--cases", "10",
            "--readers", str(readers), "--out", str(out))
    with pytest.raises(ValueError, match="source 'synthetic'"):
        run("create", "--name", "x", "--real", str(real), "--synthetic", str(real), "--real-split", "all",
            "--cases", "10", "--readers", str(readers), "--out", str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
    assert run("status", str(out)) == 0 and "0 / 10" in capsys.readouterr().out
    assert run("analyse", str(out)) == 0 and (out / "report" / "report.json").exists()
    assert run("export", str(out), "--format", "imrmc") == 0 and (out / "export" / "answers.imrmc").exists()
