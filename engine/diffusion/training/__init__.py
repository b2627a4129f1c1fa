"""Teaching the diffusion generator: paired data, caches, projection training, distillation.

Where it sits: offline, before the engine runs. A paired image/audio folder
(:mod:`.data`) is validated, its audio turned into VAE latents and its images
into embeddings once (:mod:`.features`, :mod:`.cache`); :mod:`.projection`
trains the Art2Mus image projection (``art2mus train-projection``) and
:mod:`.distill` distils a few-step consistency student (``art2mus distill``).
Both write model folders that :func:`engine.diffusion.model.load_model` loads
unchanged. :mod:`.loop` holds what the two trainers share (data order,
per-step randomness, checkpoints, progress); :mod:`.synthetic` writes a
dataset whose images determine their sound, for tests and demos;
:mod:`.evaluate` measures what a trained model does. Importing this package
does not import torch.
"""
