"""``mammosynth privacy-report``: the audit as one self-contained HTML page for sign-off (issue 20.5).

A tiny checkpoint is audited for real (random Siamese network with the partial-copy sketch, planted
copies, the disguise battery, both membership attacks), then the page is checked: every section,
plots as data URIs, no external request, no training id, "not measured" for what is missing, a
clear error without ``privacy.json``, and the CLI end to end.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mammosynth.cli import main as cli_main
from mammosynth.pipelines.checkpoint import fingerprint
from mammosynth.privacy.report import (NOT_MEASURED, PrivacyAuditMissingError, load_report_inputs,
                                       render_privacy_report, training_ids_in, write_privacy_report)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "checkpoints" / "mammosynth-phantom-256"

SECTIONS = ("summary", "how", "figures", "battery", "control", "plots", "limits", "provenance", "signoff")

#: What the positive-control command (``mammosynth positive-control``) writes, in shape.
POSITIVE_CONTROL = {
    "member_images": 32, "member_studies": 8, "unseen_images": 64,
    "caught_when": {"flagged_rate_min": 0.5, "membership_auc_min": 0.75},
    "memorising": {"samples": 32, "flagged_rate": 0.9375, "reid_map_at_r": 0.412, "membership_auc": 0.981,
                   "membership_auc_ci95": [0.95, 1.0]},
    "real": {"samples": 32, "flagged_rate": 0.0, "reid_map_at_r": 0.0031, "membership_auc": 0.507,
             "membership_auc_ci95": [0.41, 0.6]},
    "checks": {"memoriser_flagged": True, "reid_far_above_real": True},
    "caught": True,
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A tiny gated checkpoint and its real audit in ``reports/privacy.json`` (with plots)."""
    from test_privacy_data import make_prepared
    from test_privacy_membership import tiny_pipeline

    from mammosynth.data.prepared import load_prepared
    from mammosynth.models.siamese import SiameseEmbedder
    from mammosynth.privacy.audit import AuditConfig, run_audit, write_report
    from mammosynth.privacy.checker import build_privacy_checker
    from mammosynth.privacy.membership import AttackConfig
    from mammosynth.privacy.sketch import SketchConfig

    root = tmp_path_factory.mktemp("report")
    data = load_prepared(make_prepared(root / "real", studies=6, test_studies=4, seed=1))
    synthetic = load_prepared(make_prepared(root / "synth", studies=2, test_studies=0, seed=2, source="synthetic",
                                            split_all="synthetic"))
    embedder = SiameseEmbedder(embedding_dim=8, input_size=(32, 32), block_inplanes=(4, 4, 8, 8),
                               layers=(1, 1, 1, 1)).eval()
    checker, build = build_privacy_checker(embedder, data, sketch=SketchConfig(size=(32, 24), dim=64))
    pipe = tiny_pipeline()
    pipe.register_modules(privacy_checker=checker)
    pipe.register_to_config(requires_privacy_checker=True)
    checkpoint = root / "ckpt"
    pipe.save_pretrained(checkpoint)
    (checkpoint / "privacy_checker" / "build_report.json").write_text(json.dumps(build, default=str))
    config = AuditConfig(planted_copies=8, battery_copies=4, mia_members=8, mia_nonmembers=8, mia_bootstrap=20,
                         attack=AttackConfig(timesteps=(100,), noise_draws=1, secmi_t=20, secmi_interval=20))
    report = run_audit(checker, data, synthetic, pipe, config)
    report["command"] = "`mammosynth privacy-audit --checkpoint ckpt --data real --synthetic synth`"
    write_report(report, checkpoint / "reports" / "privacy.json")
    ids = set(checker.config.index_image_ids) | set(checker.config.index_study_ids)
    return {"root": root, "checkpoint": checkpoint, "ids": ids, "checker": checker}


def sections_of(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def external_references(page: str) -> list[str]:
    """Every src/href/url() that is not a fragment or a data URI (each would be a request)."""
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page, flags=re.I)
    refs += re.findall(r'url\(\s*["\']?([^"\')]*)', page, flags=re.I)
    return [r for r in refs if not (r.startswith("#") or r.startswith("data:image/png;base64,"))]


def assert_self_contained(page: str) -> None:
    assert external_references(page) == []
    assert not re.search(r"https?://", page), "the page names a web address"
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page


def assert_names_no_training_id(page: str, ids: set[str]) -> None:
    assert ids, "no ids to look for"
    assert [i for i in ids if i in page] == []


def test_the_page_has_every_section_embedded_plots_and_no_training_id(audited, tmp_path):
    out = write_privacy_report(audited["checkpoint"], tmp_path / "report.html",
                               checkpoint_fingerprint=fingerprint(audited["checkpoint"]), command="pytest")
    page = out.read_text(encoding="utf-8")
    assert sections_of(page) == list(SECTIONS)
    for heading in ("What was checked and how", "Disguise battery", "Positive control", "What the numbers do not prove",
                    "Fingerprints and provenance"):
        assert heading in page
    # the three plots of the audit, embedded (and valid PNGs)
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    import base64

    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert_self_contained(page)
    assert_names_no_training_id(page, audited["ids"])
    # the gate and its calibration, the sketch, the fingerprints, the commands
    assert "split-conformal" in page and "partial-copy detector (sketch)" in page
    assert audited["checker"].fingerprint() in page and fingerprint(audited["checkpoint"]) in page
    assert "mammosynth privacy-audit --checkpoint ckpt" in page and "<code>pytest</code>" in page
    # every figure with its CI
    audit = json.loads((audited["checkpoint"] / "reports" / "privacy.json").read_text())
    lo, hi = audit["planted_copies"]["gate_recall"]["ci95"]
    assert f"{lo:.2%} – {hi:.2%}" in page
    for name in ("loss", "secmi"):
        lo, hi = audit["membership"]["attacks"][name]["members_vs_nonmembers"]["auc"]["ci95"]
        assert f"{lo:.3f} – {hi:.3f}" in page
    # the disguise battery: held-out families (the claim) first and apart from the seen ones
    families = audit["disguise_battery"]["families"]
    claim = page.index("never saw in training — the claim")
    seen_at = page.index("Families seen in the Siamese training")
    for name, family in families.items():
        at = page.index(f"<b>{name}</b>")
        assert (claim < at < seen_at) if family["group"] == "held_out" else (at > seen_at), name
    assert f"Weakest family: <b>{audit['disguise_battery']['weakest']}</b>" in page
    # not measured here: the positive control (the audit has none yet)
    assert f"Positive control: {NOT_MEASURED}" in page


def test_what_is_missing_reads_not_measured(audited, tmp_path):
    audit = json.loads((audited["checkpoint"] / "reports" / "privacy.json").read_text())
    for key in ("disguise_battery", "planted_copies", "pixel_nn", "targets"):
        del audit[key]
    audit["membership"] = {"skipped": "disabled"}
    bare = tmp_path / "bare.json"  # no plots beside it either
    bare.write_text(json.dumps(audit))
    page = render_privacy_report(load_report_inputs(audited["checkpoint"], bare))
    assert sections_of(page) == list(SECTIONS)
    for what in ("Disguise battery", "Membership inference", "Positive control", "Targets"):
        assert f"{what}: {NOT_MEASURED}" in page, what
    assert "<img" not in page and page.count(f": {NOT_MEASURED}.</b> the plot is not beside privacy.json") == 3
    assert_self_contained(page)


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_the_positive_control_is_shown_whatever_its_keys(audited, tmp_path, layout):
    audit = json.loads((audited["checkpoint"] / "reports" / "privacy.json").read_text())
    if layout == "nested":
        audit["positive_control"] = POSITIVE_CONTROL
    else:
        audit["positive_control"] = {"flagged_rate": 0.9, "real_flagged_rate": 0.0, "reid_map_at_r": 0.4,
                                     "real_reid_map_at_r": 0.002, "membership_auc": {"value": 0.97, "ci95": [0.9, 1.0]},
                                     "real_membership_auc": {"value": 0.51, "ci95": [0.42, 0.6]}}
    path = tmp_path / "privacy.json"
    path.write_text(json.dumps(audit))
    page = render_privacy_report(load_report_inputs(audited["checkpoint"], path))
    section = page[page.index('<section id="control">'):page.index('<section id="plots">')]
    assert NOT_MEASURED not in section
    text = re.sub(r"<[^>]+>", "", section)  # the cells' text
    if layout == "nested":
        assert "<th>memorising</th><th>real</th>" in section  # side by side
        row = section[section.index("reid map at r"):]
        assert row.index("0.412") < row.index("0.0031") < row.index("</tr>")
        assert "0.981 (95 % CI 0.95 – 1)" in text and ">caught<" in section and ">yes<" in section
        assert "Caught when" in section and "Checks" in section
    else:
        assert "<th>Memorising model</th><th>Real model</th>" in section
        assert "0.97 (95 % CI 0.9 – 1)" in text and "0.51 (95 % CI 0.42 – 0.6)" in text
    assert "No positive control was measured" not in page


def test_training_ids_are_withheld_even_when_the_audit_names_them(audited, tmp_path):
    audit = json.loads((audited["checkpoint"] / "reports" / "privacy.json").read_text())
    some = sorted(audited["ids"])[:3]
    for entry, training_id in zip(audit["reid"]["most_similar_synthetic"], some):  # privacy-audit --name-training-ids
        entry["training_id"] = training_id
    audit["positive_control"] = {"note": f"memorised {some[0]} and {some[1]}", "flagged_rate": 1.0}
    audit["command"] = f"`mammosynth privacy-audit --note {some[2]}`"
    path = tmp_path / "privacy.json"
    path.write_text(json.dumps(audit))
    page = render_privacy_report(load_report_inputs(audited["checkpoint"], path))
    assert_names_no_training_id(page, audited["ids"])
    assert training_ids_in(page, audited["ids"]) == []
    assert "[training id withheld]" in page


def test_a_checkpoint_without_privacy_json_is_a_clear_error(audited, tmp_path, capsys):
    bare = tmp_path / "ckpt"
    shutil.copytree(audited["checkpoint"], bare, ignore=shutil.ignore_patterns("reports"))
    with pytest.raises(PrivacyAuditMissingError) as error:
        write_privacy_report(bare, tmp_path / "report.html")
    message = str(error.value)
    assert str(bare / "reports" / "privacy.json") in message and "mammosynth privacy-audit" in message
    assert not (tmp_path / "report.html").exists()
    assert cli_main(["privacy-report", "--checkpoint", str(bare), "--out", str(tmp_path / "report.html")]) == 2
    assert "privacy.json does not exist" in capsys.readouterr().err


def test_cli_end_to_end(audited, tmp_path, capsys):
    out = tmp_path / "filed" / "privacy-report.html"
    assert cli_main(["privacy-report", "--checkpoint", str(audited["checkpoint"]), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert sections_of(page) == list(SECTIONS)
    assert f"privacy-report --checkpoint {audited['checkpoint']}" in page  # the command that made it
    assert fingerprint(audited["checkpoint"]) in page and audited["checker"].fingerprint() in page
    assert_self_contained(page)
    assert_names_no_training_id(page, audited["ids"])
    assert not list(audited["checkpoint"].rglob("*.html"))  # nothing written into the checkpoint


def test_the_app_makes_the_report_for_admins_only(audited, tmp_path):
    from mammosynth.ui.auth import AccessDenied
    from mammosynth.ui.results import make_privacy_report
    from mammosynth.ui.services import AppConfig, create_services

    from mammosynth.study.readers import hash_password

    readers = tmp_path / "readers.csv"
    secret = hash_password("pw")
    readers.write_text(f"id,display_name,role,password_hash\nadmin,Admin,admin,{secret}\nreader1,Reader,reader,{secret}\n")
    services = create_services(AppConfig(checkpoint=audited["checkpoint"], auth=readers, work_dir=tmp_path / "work",
                                         temp_dir=tmp_path / "tmp"))
    with pytest.raises(AccessDenied):
        make_privacy_report(services, "reader1")
    page = make_privacy_report(services, "admin").read_text(encoding="utf-8")
    assert sections_of(page) == list(SECTIONS) and "Results tab (Privacy: Make the privacy report), by admin" in page
    assert_names_no_training_id(page, audited["ids"])


@pytest.mark.skipif(not (BUNDLED / "reports" / "privacy.json").is_file(), reason="no bundled checkpoint audit")
def test_the_bundled_checkpoints_report(tmp_path):
    out = write_privacy_report(BUNDLED, tmp_path / "report.html", checkpoint_fingerprint=fingerprint(BUNDLED))
    page = out.read_text(encoding="utf-8")
    assert sections_of(page) == list(SECTIONS)
    assert page.count('src="data:image/png;base64,') == 3
    assert "These are phantom data, not patients." in page
    assert_self_contained(page)
    config = json.loads((BUNDLED / "privacy_checker" / "config.json").read_text())
    assert_names_no_training_id(page, set(config["index_image_ids"]) | set(config["index_study_ids"]))
