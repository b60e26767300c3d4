"""Reports store their rows in the model cards; a run over fewer seeds must not replace a better-sampled row."""

from __future__ import annotations

import shutil

from analysis.evaluate import store_card_metrics
from demo.core.card import read_card


def test_a_row_over_fewer_seeds_keeps_the_cards_row_and_a_new_or_larger_one_replaces_it(tiny_teacher_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_teacher_dir, folder)
    tag = "ddim50_W2_dash_report"
    assert store_card_metrics(folder, tag, {"frechet_distance": 4.79, "seeds": [0, 1]})
    assert not store_card_metrics(folder, tag, {"frechet_distance": 5.03, "seeds": [0]})
    assert "kept its card's ddim50_W2_dash_report row (seeds [0, 1])" in capsys.readouterr().err
    assert read_card(folder)["metrics"][tag]["frechet_distance"] == 4.79
    # the same seeds (a re-run), more seeds, more samples per seed, or a row that names no seeds: replaced
    for row in (
        {"frechet_distance": 4.80, "seeds": [0, 1]},
        {"frechet_distance": 4.70, "seeds": [0, 1, 2]},
        {"frechet_distance": 4.60, "seeds": [0], "n": 5000},
        {"frechet_distance": 4.50},
    ):
        assert store_card_metrics(folder, tag, row)
        assert read_card(folder)["metrics"][tag] == row
    # another tag is independent
    assert store_card_metrics(folder, "ddim64_W2_guided_report", {"frechet_distance": 5.0, "seeds": [0]})
