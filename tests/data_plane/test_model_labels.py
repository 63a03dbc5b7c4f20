"""Client-chosen model names are bounded before they become labels or breaker keys."""

from __future__ import annotations

from data_plane.bridge.model_labels import MAX_LENGTH, OTHER, ModelLabels


def test_known_models_keep_their_name_and_new_ones_past_the_limit_fold_into_other() -> None:
    """The first `limit` distinct names are kept per provider; later new names become "other"."""
    labels = ModelLabels(limit=2)
    assert labels.label("p", "a") == "a"
    assert labels.label("p", "b") == "b"
    assert labels.label("p", "c") == OTHER
    assert labels.label("p", "a") == "a"
    assert labels.label("q", "c") == "c"


def test_long_names_are_cut() -> None:
    """A model name longer than MAX_LENGTH is cut before it is used."""
    assert ModelLabels().label("p", "x" * 10_000) == "x" * MAX_LENGTH
