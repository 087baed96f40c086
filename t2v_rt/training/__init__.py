"""Training generators, any registered architecture.

- :mod:`t2v_rt.training.runs`: run folders, atomic checkpoints, resume, Ctrl-C, progress (what
  every trainer shares, the shapes model's included);
- :mod:`t2v_rt.training.settings`: typed, bounded training settings saved beside each run;
- :mod:`t2v_rt.training.discriminators`: text-aware frame and video discriminators;
- :mod:`t2v_rt.training.losses`: the non-saturating loss, R1, DiffAugment, EMA;
- :mod:`t2v_rt.training.trainer`: ``t2v-rt train --data DIR --arch ARCH``, adversarial
  training of any architecture on a captioned video folder (no paired targets).

Nothing here is imported by the runtime (streaming needs no training code).
"""
