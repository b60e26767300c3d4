"""The on-disk formats have one owner each: card.json (`demo.core.card`), a run folder (`demo.core.run_folder`) and its
`stats.jsonl` (`demo.core.stats`); and "the student's teacher" has one rule (`demo.core.card.teacher_folder`)."""

import json
from pathlib import Path

import pytest

from demo.core.card import Card, read_card, teacher_folder, write_card
from demo.core.run_folder import RunFolder, finished_models, run_name, run_number
from demo.core.stats import append_row, events_since, read_stats, training_rows


def fake_model(folder: Path, card: dict | None = None, scheduler: bool = True) -> Path:
    """A folder the layout calls a model folder (no weights: these formats never read them)."""
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")
    if scheduler:
        (folder / "scheduler").mkdir()
        (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    if card is not None:
        write_card(folder, card)
    return folder


def test_card_round_trip_writes_the_same_bytes_as_before(tmp_path):
    card = Card(name="x", kind="student", teacher="t", steps=4)
    path = write_card(tmp_path, card)
    assert path.read_text() == json.dumps(card.__dict__, indent=2) + "\n"  # what save_model_folder always wrote
    assert Card.from_dict(read_card(tmp_path)) == card
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]  # no temporary file left behind


def test_read_card_is_lenient_for_listing_and_strict_for_loading(tmp_path):
    assert read_card(tmp_path) == {} and read_card(tmp_path, strict=True) == {}  # no card: defaults
    (tmp_path / "card.json").write_text("[1, 2]")
    assert read_card(tmp_path) == {}
    with pytest.raises(ValueError, match="JSON object"):
        read_card(tmp_path, strict=True)
    (tmp_path / "card.json").write_text("{not json")
    assert read_card(tmp_path) == {}
    with pytest.raises(ValueError):
        read_card(tmp_path, strict=True)


def test_one_rule_for_the_students_teacher(tmp_path):
    root = tmp_path / "models"
    teacher = fake_model(root / "old-teacher", {"name": "old-teacher"})
    student = fake_model(root / "student", {"name": "student", "kind": "student", "teacher": "old-teacher"})
    assert teacher_folder(student) == teacher  # a folder of that name beside the student
    assert teacher_folder(teacher) is None  # a teacher's card names none
    elsewhere = fake_model(tmp_path / "other-root" / "renamed", {"name": "old-teacher"})
    assert teacher_folder(student, known={"old-teacher": elsewhere}) == elsewhere  # the catalog's names come first
    write_card(student, {**read_card(student), "teacher": str(elsewhere)})
    assert teacher_folder(student) == elsewhere  # a path is taken as it is
    # A run's model/: the teacher path its run recorded wins over a name (the card holds the catalog name only).
    run = tmp_path / "runs" / run_name(3, "dash")
    model = fake_model(run / "model", {"name": "00003-dash", "kind": "student", "teacher": "fmnist-teacher"})
    RunFolder(run).write_config({"method": {"name": "dash", "teacher": str(teacher)}})
    assert teacher_folder(model) == teacher
    write_card(student, {**read_card(student), "teacher": "nowhere"})
    assert teacher_folder(student) is None


def test_run_folder_and_stats(tmp_path):
    run = RunFolder(tmp_path / run_name(12, "guided"))
    assert run.name == "00012-guided" and run_number(run.path) == 12 and run_number(tmp_path / "eval-features") is None
    run.path.mkdir()
    for row in (
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.0},
        {"step": 2, "event": "stopped", "time": 5.0},
        {"step": 2, "loss": 1.5},
    ):
        append_row(run.stats_file, row)
    with open(run.stats_file, "a") as f:
        f.write('{"step": 3, "lo')  # a line being written right now
    assert len(read_stats(run.stats_file)) == 4 and read_stats(tmp_path / "missing.jsonl") == []
    assert [(r["step"], r["loss"]) for r in training_rows(run.stats())] == [
        (1, 3.0),
        (2, 1.5),
    ]  # the resumed step replaces the old
    assert events_since(run.stats(), 5.0) == ["stopped"] and events_since(run.stats(), 6.0) == []
    assert run.model() is None and finished_models(tmp_path) == {}
    fake_model(run.model_dir, scheduler=False)
    assert run.model() == run.model_dir and run.finished_model() is None  # exported, but without its scheduler yet
    (run.model_dir / "scheduler").mkdir()
    (run.model_dir / "scheduler" / "scheduler_config.json").write_text("{}")
    assert finished_models(tmp_path) == {"00012-guided": run.model_dir}
