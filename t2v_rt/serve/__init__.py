"""``t2v-rt serve``: live video streams over HTTP, many streams on one backend.

- :mod:`t2v_rt.serve.scheduler`: the cross-stream batcher (one thread owns the backend; each
  tick one generator call for the frames due from every stream) and admission;
- :mod:`t2v_rt.serve.capacity`: what the machine can take, measured;
- :mod:`t2v_rt.serve.session`: a stream (prompt, clock, morphs) and its readers, each encoded
  on its own on a worker pool, a slow reader dropping frames for itself only;
- :mod:`t2v_rt.serve.metrics`: Prometheus text;
- :mod:`t2v_rt.serve.transports`: the browser's transports (fMP4 for MSE, MJPEG); the page
  itself is in ``static/``;
- :mod:`t2v_rt.serve.app`: the FastAPI app and uvicorn (imported only when serving:
  ``pip install 't2v-rt[serve]'``);
- :mod:`t2v_rt.serve.ray_app`: replicas behind Ray Serve's proxy, each stream pinned to its
  replica (``t2v-rt serve --ray``; ``pip install 't2v-rt[ray]'``).

The runtime core never imports this package; only ``app`` imports FastAPI.
"""

SERVE_MODULES = ("fastapi", "uvicorn")


def missing() -> list[str]:
    """The serving dependencies this install lacks (without importing them)."""
    from t2v_rt.extras import have

    return [m for m in SERVE_MODULES if not have(m)]
