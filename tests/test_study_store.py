"""The reader API and the response store: answers, resume, bad input, tampering,
migrations, concurrency (threads and processes) and a writer killed with SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from mammosynth.study.create import create_study
from mammosynth.study.demo import make_demo_datasets, write_demo_readers
from mammosynth.study.errors import (
    AlreadyAnsweredError,
    AnswerOutOfRangeError,
    CaseNotAssignedError,
    OutOfOrderError,
    StudyError,
    StudyTamperedError,
    UnknownReaderError,
)
from mammosynth.study.store import MIGRATIONS, ResponseStore, migrate
from mammosynth.study.study import Study, StudySettings

N_READERS, N_CASES = 20, 50


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    real, synth = make_demo_datasets(root, 40, 40, height=16, width=16, seed=1)
    readers = write_demo_readers(root / "readers.csv", N_READERS, password="pw")
    made = create_study(root / "template", name="t", real=real, synthetic=synth, readers_csv=readers,
                        n_cases=N_CASES, repeats=0, seed=5, settings=StudySettings("1-5", ask_birads=True))
    # closed now, not whenever it is collected: its WAL files would vanish in the middle of a copy
    made.close()
    assert not list((root / "template").glob("*-wal"))
    return root / "template"


@pytest.fixture()
def study(template, tmp_path):
    shutil.copytree(template, tmp_path / "s")
    return Study.open(tmp_path / "s")


def _count_rows(study) -> int:
    with sqlite3.connect(study.root / "responses.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def test_answer_flow_resume_and_idempotence(study):
    assert study.verify_password("reader01", "pw") and not study.verify_password("reader01", "nope")
    assert not study.verify_password("ghost", "pw")
    view = study.next_case("reader01")
    assert (view.position, view.total, view.label) == (1, N_CASES, f"1 / {N_CASES}")
    assert view.image_path.is_file() and view.case_id == study.reading_list("reader01")[0]
    receipt = study.answer("reader01", view.case_id, "synthetic", 4, birads=2, seconds_on_case=9.5)
    assert (receipt.position, receipt.duplicate) == (1, False)
    again = study.answer("reader01", view.case_id, "synthetic", 4, birads=2, seconds_on_case=20)
    assert again.duplicate and again.answered_at == receipt.answered_at and _count_rows(study) == 1
    with pytest.raises(AlreadyAnsweredError, match="final"):
        study.answer("reader01", view.case_id, "real", 4, birads=2, seconds_on_case=1)
    nxt = study.next_case("reader01")
    assert nxt.position == 2 and nxt.case_id == study.reading_list("reader01")[1]
    reopened = Study.open(study.root)  # a restart resumes at the same case
    assert reopened.next_case("reader01") == nxt
    assert reopened.progress("reader01").answered == 1 and not reopened.progress("reader01").done
    assert reopened.next_case("reader02").position == 1


def test_bad_input_is_refused_and_nothing_written(study):
    view = study.next_case("reader01")
    other = study.reading_list("reader01")[5]
    cases = [
        (UnknownReaderError, dict(reader_id="ghost")),
        (UnknownReaderError, dict(reader_id="admin")),
        (CaseNotAssignedError, dict(case_id="deadbeef0000")),
        (OutOfOrderError, dict(case_id=other)),
        (AnswerOutOfRangeError, dict(answer="fake")),
        (AnswerOutOfRangeError, dict(confidence=6)),
        (AnswerOutOfRangeError, dict(confidence=0)),
        (AnswerOutOfRangeError, dict(confidence=2.5)),
        (AnswerOutOfRangeError, dict(confidence=True)),
        (AnswerOutOfRangeError, dict(confidence=float("nan"))),
        (AnswerOutOfRangeError, dict(birads=7)),
        (AnswerOutOfRangeError, dict(seconds_on_case=-1)),
        (AnswerOutOfRangeError, dict(seconds_on_case=float("inf"))),
    ]
    for error, change in cases:
        kwargs = dict(reader_id="reader01", case_id=view.case_id, answer="real", confidence=3, birads=None,
                      seconds_on_case=3.0) | change
        with pytest.raises(error):
            study.answer(**kwargs)
        assert _count_rows(study) == 0, change
    assert isinstance(UnknownReaderError("x"), ValueError)


def test_tampered_folder_is_refused(template, tmp_path):
    def fresh(name):
        return Path(shutil.copytree(template, tmp_path / name))

    root = fresh("missing")
    next((root / "cases").iterdir()).unlink()
    with pytest.raises(StudyTamperedError, match="missing"):
        Study.open(root)
    root = fresh("changed")
    victim = next((root / "cases").iterdir())
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(StudyTamperedError, match="changed"):
        Study.open(root)
    root = fresh("key")
    key = json.loads((root / "key/truth.json").read_text())
    first = next(iter(key["cases"]))
    key["cases"][first]["truth"] = "real" if key["cases"][first]["truth"] == "synthetic" else "synthetic"
    (root / "key/truth.json").write_text(json.dumps(key))
    with pytest.raises(StudyTamperedError, match="key mismatch"):
        Study.open(root)
    root = fresh("extra")
    (root / "cases" / "0123456789ab.png").write_bytes(b"x")
    with pytest.raises(StudyTamperedError, match="not study cases"):
        Study.open(root)
    root = fresh("db")
    (root / "responses.sqlite").unlink()
    with pytest.raises(StudyTamperedError, match="answers are gone"):
        Study.open(root)


def test_schema_migration_from_version_1_and_newer_refused(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)
    conn.execute("INSERT INTO study_info VALUES ('study_uid', 'u1')")
    conn.execute("INSERT INTO answers VALUES ('r', 'c', 1, 'real', 3, NULL, 2.0, '2024-01-01T00:00:00')")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    store = ResponseStore(path, "u1")
    (answer,) = store.answers()
    assert (answer.case_id, answer.session) == ("c", None)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    with pytest.raises(StudyTamperedError, match="another|not of"):
        ResponseStore(path, "u2")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StudyError, match="newer than this code"):
        ResponseStore(path, "u1")


def _answer_all(study: Study, reader_id: str, n: int) -> list[str]:
    acked = []
    for _ in range(n):
        view = study.next_case(reader_id)
        receipt = study.answer(reader_id, view.case_id, "real", 3, None, 1.0)
        assert receipt.position == view.position
        acked.append(view.case_id)
    return acked


def _check_exactly_once(study: Study, acked: dict[str, list[str]]) -> None:
    stored = study.store.answers()
    assert len(stored) == sum(len(v) for v in acked.values())
    for reader_id, cases in acked.items():
        mine = [a for a in stored if a.reader_id == reader_id]
        assert [a.case_id for a in mine] == cases == study.reading_list(reader_id)[: len(cases)]
        assert [a.position for a in mine] == list(range(1, len(cases) + 1))


def test_twenty_readers_concurrently_in_threads(study):
    acked: dict[str, list[str]] = {}
    errors = []

    def run(reader_id):
        try:
            acked[reader_id] = _answer_all(study, reader_id, N_CASES)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"reader{i + 1:02d}",)) for i in range(N_READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _check_exactly_once(study, acked)
    assert all(study.next_case(r) is None for r in acked)


def test_answers_that_arrive_together_share_one_commit_and_a_refusal_refuses_only_itself(study):
    """Group commit: answers waiting while a transaction commits go into the next one together;
    each is acknowledged only after that commit, and a refused answer takes no other with it."""
    store = study.store
    commits = []
    real_commit = store._commit
    store._commit = lambda batch: (commits.append(len(batch)), real_commit(batch))[1]
    readers = [f"reader{i + 1:02d}" for i in range(8)]
    first = {r: study.next_case(r).case_id for r in readers}
    second_of_reader01 = study.reading_list("reader01")[1]
    calls = [(r, first[r]) for r in readers] + [("reader02", study.reading_list("reader02")[5])]  # out of order
    results: dict[tuple[str, str], object] = {}

    def answer(reader_id: str, case_id: str) -> None:
        try:
            results[reader_id, case_id] = study.answer(reader_id, case_id, "real", 3)
        except StudyError as error:
            results[reader_id, case_id] = error

    store._write_lock.acquire()  # a transaction is "being committed": everyone queues behind it
    try:
        threads = [threading.Thread(target=answer, args=call) for call in calls]
        for t in threads:
            t.start()
        while len(store._pending) < len(calls):
            threading.Event().wait(0.01)
        assert _count_rows(study) == 0  # nobody was acknowledged or stored yet
    finally:
        store._write_lock.release()
    for t in threads:
        t.join()
    assert commits == [len(calls)], f"expected one transaction for all {len(calls)} answers, got {commits}"
    assert isinstance(results["reader02", study.reading_list("reader02")[5]], OutOfOrderError)
    assert all(results[r, first[r]].position == 1 and not results[r, first[r]].duplicate for r in readers)
    assert _count_rows(study) == len(readers)
    assert study.next_case("reader01").case_id == second_of_reader01
    # a conflicting answer in a later transaction is refused; the identical one is a duplicate
    with pytest.raises(AlreadyAnsweredError):
        study.answer("reader01", first["reader01"], "synthetic", 3)
    assert study.answer("reader01", first["reader01"], "real", 3).duplicate


def _process_worker(root: str, reader_id: str, queue) -> None:
    study = Study.open(root, verify="quick")
    queue.put((reader_id, _answer_all(study, reader_id, N_CASES)))


def test_twenty_readers_concurrently_in_processes(study):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(str(study.root), f"reader{i + 1:02d}", queue))
             for i in range(N_READERS)]
    for p in procs:
        p.start()
    acked = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    _check_exactly_once(Study.open(study.root), acked)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from mammosynth.study.study import Study
    study = Study.open(sys.argv[1], verify="quick")
    readers = [f"reader{i + 1:02d}" for i in range(4)]
    while True:
        for r in readers:
            view = study.next_case(r)
            if view is None:
                continue
            study.answer(r, view.case_id, "synthetic", 2, None, 0.5)
            print("ACK", r, view.case_id, flush=True)
""")


def test_writer_killed_mid_study_loses_nothing_acknowledged(study):
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(study.root)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[1])
    acked: dict[str, list[str]] = {}
    for _ in range(60):
        line = proc.stdout.readline()
        assert line.startswith("ACK"), line
        _, reader_id, case_id = line.split()
        acked.setdefault(reader_id, []).append(case_id)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    after = Study.open(study.root)
    for reader_id, cases in acked.items():
        stored = [a.case_id for a in after.store.answers(reader_id)]
        assert stored[: len(cases)] == cases  # nothing acknowledged is lost
        assert len(stored) <= len(cases) + 1  # at most the one answer in flight at the kill
        order = after.reading_list(reader_id)
        assert after.next_case(reader_id).case_id == order[len(stored)]  # resumes at the right case
        after.answer(reader_id, order[len(stored)], "real", 1, None, 1.0)  # and can go on
