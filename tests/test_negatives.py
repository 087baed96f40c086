"""Minimal-pair caption negatives (t2v_rt.training.negatives): captions of other clips that
differ from a clip's own in one word, leaving out the substitutions that the data shows to be
paraphrases (two captions of one clip that differ in that word)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from t2v_rt.training.negatives import MAX_PARTNERS, MinimalPairs, caption_words

TABLE = [
    ["a red circle moving left", "a red ball moving left"],      # 0: circle ~ ball, a paraphrase
    ["a red square moving left"],                                # 1
    ["a blue circle moving left"],                               # 2
    ["a red ball moving left"],                                  # 3: clip 0's second text
    ["a red square moving right quickly"],                       # 4: one word longer: no pair
    ["A Red Square, moving left!"],                              # 5: clip 1's words
    ["a green box"],                                             # 6: nothing like it
]


def test_a_minimal_pair_is_another_clips_caption_one_word_away():
    mp = MinimalPairs(TABLE)
    assert mp.paraphrases == {frozenset(("circle", "ball"))}
    assert caption_words("A Red Square, moving left!") == ("a", "red", "square", "moving", "left")
    assert set(mp.partners["a red circle moving left"]) == {
        (1, "a red square moving left"), (2, "a blue circle moving left"),
        (5, "A Red Square, moving left!")}
    # circle -> ball is a paraphrase: neither clip 0's own "ball" nor clip 3's is a negative
    assert set(mp.partners["a red ball moving left"]) == {
        (1, "a red square moving left"), (5, "A Red Square, moving left!")}
    # the same words as its own (clip 5) are no negative; captions of clip 0 and 3 are
    assert set(mp.partners["a red square moving left"]) == {
        (0, "a red circle moving left"), (0, "a red ball moving left"),
        (3, "a red ball moving left")}
    assert mp.partners["A Red Square, moving left!"] == mp.partners["a red square moving left"]
    assert set(mp.partners["a blue circle moving left"]) == {(0, "a red circle moving left")}
    assert "a red square moving right quickly" not in mp.partners
    assert "a green box" not in mp.partners
    assert len(mp) == 5


def test_draw_gives_one_partner_per_caption_or_none_and_repeats_with_the_seed():
    mp = MinimalPairs(TABLE)
    captions = ["a red square moving left", "a green box", "a blue circle moving left"]
    clips, texts, has = mp.draw(np.random.default_rng(0), captions)
    assert has.tolist() == [True, False, True]
    assert clips[1] == -1 and texts[1] == "a green box"             # none: its own text, marked
    assert (int(clips[2]), texts[2]) == (0, "a red circle moving left")
    assert (int(clips[0]), texts[0]) in mp.partners[captions[0]]
    again = mp.draw(np.random.default_rng(0), captions)
    assert again[0].tolist() == clips.tolist() and again[1] == texts
    # uniform over the partners
    rng = np.random.default_rng(1)
    counts = Counter(mp.draw(rng, captions[:1])[1][0] for _ in range(3000))
    assert set(counts) == {"a red circle moving left", "a red ball moving left"}
    share = counts["a red ball moving left"] / 3000        # 2 of the 3 partners (clips 0 and 3)
    assert abs(share - 2 / 3) < 0.04, counts


def test_draw_many_gives_k_uniform_candidates_per_caption():
    """draw_many: k partners per caption (with replacement, each uniform), row-major texts,
    the caption itself and clip -1 where it has none; the same seed, the same draws."""
    mp = MinimalPairs(TABLE)
    captions = ["a red square moving left", "a green box", "a blue circle moving left"]
    clips, texts, has = mp.draw_many(np.random.default_rng(0), captions, 4)
    assert clips.shape == (3, 4) and len(texts) == 12
    assert has.tolist() == [True, False, True]
    assert clips[1].tolist() == [-1] * 4 and texts[4:8] == ["a green box"] * 4
    assert clips[2].tolist() == [0] * 4 and texts[8:12] == ["a red circle moving left"] * 4
    assert all((int(c), t) in mp.partners[captions[0]] for c, t in zip(clips[0], texts[:4]))
    again = mp.draw_many(np.random.default_rng(0), captions, 4)
    assert again[0].tolist() == clips.tolist() and again[1] == texts
    rng = np.random.default_rng(1)
    counts = Counter(t for _ in range(750) for t in mp.draw_many(rng, captions[:1], 4)[1])
    assert abs(counts["a red ball moving left"] / 3000 - 2 / 3) < 0.04, counts
    with pytest.raises(ValueError):
        mp.draw_many(np.random.default_rng(0), captions, 0)


def test_partners_are_capped_and_keep_every_differing_word():
    """A caption with hundreds of one-word neighbours keeps MAX_PARTNERS, taken evenly over
    the words that differ (so a rare substitution is not crowded out by a common one)."""
    table = [["a red circle"]] + [[f"a c{i} circle"] for i in range(200)] + [["a red square"]]
    mp = MinimalPairs(table)
    kept = mp.partners["a red circle"]
    assert len(kept) == MAX_PARTNERS
    assert (201, "a red square") in kept
    assert len(set(kept)) == MAX_PARTNERS


@pytest.mark.parametrize("table", [[], [[]], [["", "!!"]], [["a"], ["a"]]])
def test_degenerate_tables_have_no_pairs(table):
    mp = MinimalPairs(table)
    assert len(mp) == 0
    clips, texts, has = mp.draw(np.random.default_rng(0), ["a"])
    assert not has.any() and texts == ["a"]
