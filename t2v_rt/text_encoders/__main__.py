"""``python -m t2v_rt.text_encoders export [--precision fp32 int8] [--force]``: export the
pretrained text encoder to ONNX once, checked against PyTorch, into the t2v-rt cache;
``python -m t2v_rt.text_encoders embed PROMPT...``: print each prompt's embedding's first values
(torch-free: the runtime path)."""

from __future__ import annotations

import argparse
import sys
import time

from t2v_rt.errors import T2VError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m t2v_rt.text_encoders")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="export all-MiniLM-L6-v2 to ONNX into the cache "
                                      "(needs torch)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "int8"])
    p.add_argument("--force", action="store_true", help="export again even if the cache holds it")
    p = sub.add_parser("embed", help="embed prompts through ONNX Runtime (torch-free)")
    p.add_argument("prompts", nargs="+")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        from t2v_rt.text_encoders.minilm import PretrainedFrontEnd, model_files

        if args.command == "export":
            from t2v_rt.extras import require

            for m in ("torch", "onnx", "onnxscript"):
                require(m, "exporting the text encoder")
            from t2v_rt.text_encoders.export import export_into_cache

            start = time.time()
            export_into_cache(model_files(), tuple(args.precision), log=log, force=args.force)
            log(f"done in {time.time() - start:.1f} s")
        else:
            front = PretrainedFrontEnd(args.precision, log=log)
            for prompt, e in zip(args.prompts, front.embed(args.prompts)):
                print(f"{prompt!r}: [{', '.join(f'{v:.4f}' for v in e[:6])}, ...]")
    except T2VError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
