"""Teaching the diffusion generator: paired data, caches, projection training, distillation.

Where it sits: offline, before the engine runs, beside it rather than inside
it (it may import the engine and capture; the running roles never import
it). A paired image/audio folder (:mod:`.data`) is validated, its audio
turned into VAE latents and its images into embeddings once
(:mod:`.features`, :mod:`.cache`); :mod:`.projection` trains the Art2Mus
image projection (``art2mus train-projection``) and :mod:`.distill` distils
a few-step consistency student (``art2mus distill``). Both write model
folders that :func:`engine.generators.diffusion.model.load_model` loads
unchanged. :mod:`.loop` holds what the two trainers share (the
:class:`~training.loop.Trainer` harness: optimiser, schedule, precision,
checkpoints and resume; data order, per-step randomness, progress);
:mod:`.cli` holds the commands; :mod:`.synthetic` writes a dataset whose
images determine their sound, for tests and demos; :mod:`.evaluate`
measures what a trained model does. Importing this package does not import
torch.
"""
