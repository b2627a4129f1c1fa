"""The engine role: turns artwork views into a stream of timed audio chunks.

- ``generators``: what every generator implements (:mod:`engine.generators.base`),
  the factory that picks one by config, and the generators themselves:
  ``procedural`` (the embedded default), ``diffusion`` (the Art2Mus model:
  latent diffusion conditioned on the image embedding, few-step samplers,
  CUDA graphs, ONNX Runtime) and ``sine`` (the fake at the model seam).
- ``streaming``: per-room sessions on a sample timeline (lead, continuity,
  transitions).
- ``server``: the process loop over ZeroMQ.

Training the diffusion model is an offline tool beside the engine
(:mod:`training`), not part of it.
"""
