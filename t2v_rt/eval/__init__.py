"""Evaluation against the shapes-world contract: attributes recovered from a video's pixels."""

from t2v_rt.eval.attributes import recover_attributes, score

__all__ = ["recover_attributes", "score"]
