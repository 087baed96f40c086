"""Model families built on the runtime: each a plug-in registered by name
(``t2v_rt.generators.registry``); the runtime core imports none of them."""
