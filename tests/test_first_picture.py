"""bench/first_picture.py's picture detection on synthetic screenshots (no X server, no player)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).parent.parent / "bench" / "first_picture.py"
_spec = importlib.util.spec_from_file_location("bench_first_picture", _PATH)
fp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fp)

H, W = 480, 640
RED = (220, 30, 30)


def weave() -> np.ndarray:
    """Xvfb's -retro root: black and white pixels alternating."""
    y, x = np.mgrid[0:H, 0:W]
    on = ((x + y) % 2 == 0)
    return np.repeat((on * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def with_window(screen: np.ndarray, fill=(0, 0, 0), box=(112, 192, 256, 256)) -> np.ndarray:
    out = screen.copy()
    top, left, h, w = box
    out[top:top + h, left:left + w] = fill
    return out


def with_disc(screen: np.ndarray, colour=RED, centre=(240, 260), radius=40) -> np.ndarray:
    out = screen.copy()
    y, x = np.mgrid[0:H, 0:W]
    out[(y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius ** 2] = colour
    return out


def test_prompt_colour():
    assert fp.prompt_colour("a large red circle moving left and right slowly") == ("red", RED)
    assert fp.prompt_colour("A small Blue square, fast")[0] == "blue"
    with pytest.raises(ValueError):
        fp.prompt_colour("a shape moving")


def test_empty_screen_and_black_window_are_not_a_picture():
    root = weave()
    assert fp.analyse(root, root, RED) == (0, 0)
    changed, shape = fp.analyse(with_window(root), root, RED)
    assert changed > 10_000 and shape == 0


def test_red_disc_is_a_picture_noisy_edges_too():
    root = weave()
    frame = with_disc(with_window(root))
    # codec noise: every channel off by up to +-25
    rng = np.random.default_rng(0)
    noisy = np.clip(frame.astype(int) + rng.integers(-25, 26, frame.shape), 0, 255).astype(np.uint8)
    _, shape = fp.analyse(noisy, root, RED)
    assert shape > 4000  # a disc of radius 40 is about 5000 pixels


def test_other_colours_and_the_weave_are_not_red():
    root = weave()
    for colour in [(235, 215, 30), (245, 130, 20), (210, 40, 200), (255, 255, 255), (128, 0, 0)]:
        _, shape = fp.analyse(with_disc(with_window(root), colour), root, RED)
        assert shape == 0, colour


def test_white_shape_counts_only_where_the_screen_changed():
    root = weave()
    frame = with_disc(with_window(root), (255, 255, 255))
    changed, shape = fp.analyse(frame, root, (255, 255, 255))
    assert 0 < shape < changed
    # the unchanged white pixels of the weave around the window are not counted
    _, on_root = fp.analyse(root, root, (255, 255, 255))
    assert on_root == 0


def test_detector_times_window_then_picture():
    root = weave()
    window = with_window(root)
    tiny = with_disc(window, radius=5)  # ~80 pixels: below min_pixels
    picture = with_disc(window)
    d = fp.Detector(root, RED)
    shots = [(0.05, root), (0.10, root), (0.15, window), (0.20, tiny), (0.25, picture),
             (0.30, picture)]
    seen = [d.feed(t, f) for t, f in shots]
    assert seen == [False, False, False, False, True, True]
    assert d.window_s == 0.15
    assert d.first_picture_s == 0.25 and d.before_s == 0.20
    assert d.shape_pixels > 4000 and d.picture is picture


def test_detector_picture_without_a_separate_window_frame():
    root = weave()
    d = fp.Detector(root, RED)
    assert not d.feed(0.05, root)
    assert d.feed(0.10, with_disc(with_window(root)))
    assert d.window_s == d.first_picture_s == 0.10 and d.before_s == 0.05


def test_summary_median_min_max():
    keys = ("window_s", "first_byte_s", "picture_after_first_byte_s")
    runs = [{"first_picture_s": v, **dict.fromkeys(keys)} for v in (1.0, 3.0, 2.0)]
    runs.append({"first_picture_s": None, **dict.fromkeys(keys)})
    s = fp.summary(runs)
    assert s["first_picture_s"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert s["first_byte_s"] is None and s["failed"] == 1


def test_stream_command_quotes_the_prompt():
    assert fp.stream_command("a red ball's path", "nut") == \
        "t2v-rt stream 'a red ball'\"'\"'s path' --format nut"
    assert fp.stream_command("a red ball", fp.DEFAULT) == "t2v-rt stream 'a red ball'"
