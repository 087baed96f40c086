"""The shapes world, one model family of t2v-rt: its contract (``CONTRACT.md`` beside this file),
attributes (``spec``), scenes, renderer, captions and grammar, data, its generator (architecture
``shapes``, the bundled model), training and evaluator.

Nothing in the runtime core imports this package; the registry names it
(``t2v_rt.generators.registry.BUILTIN``) and imports it when a config says ``"architecture":
"shapes"``.
"""

from t2v_rt.generators.registry import Architecture
from t2v_rt.models.shapes.config import ModelConfig

ARCHITECTURE = Architecture(
    name="shapes",
    generator="t2v_rt.models.shapes.generator:Generator",
    config=ModelConfig,
    summary="the shapes world's generator: grammar front end, attribute-code bottleneck, "
            "CoordConv upsample blocks, palette compositing (continuous time)",
    presets={"tiny": {"resolution": 16, "channels": [16, 8, 8], "style_dim": 32,
                      "text_dim": 16, "text_layers": 1, "motion_channels": 4}},
)
