"""The runtime's generator interface, config schema, registry and weight I/O.

- :mod:`~t2v_rt.generators.interface`: :class:`VideoGenerator` (style, synthesize, and for
  recurrent generators initial_state/step);
- :mod:`~t2v_rt.generators.text`: text front ends (torch-free);
- :mod:`~t2v_rt.generators.config`: typed, bounded configs (the JSON beside the weights);
- :mod:`~t2v_rt.generators.registry`: architectures by name, plugins by entry point;
- :mod:`~t2v_rt.generators.io`: load, save, initialise, checked before allocation.

Import the submodules directly; this package imports nothing heavy.
"""
