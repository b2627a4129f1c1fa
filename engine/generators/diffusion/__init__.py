"""The diffusion generator: image embedding -> latent audio diffusion -> audio.

Modules, in the order of the flow: ``config`` (torch-free settings), ``model``
(the model folder: make, check, load), ``conditioner`` (image embedding ->
cross-attention tokens), ``samplers`` (few-step schedules), ``state`` (conditions,
window plan, stream state), ``batching`` (rooms into padded batch buckets),
``backends`` (the Backend protocol, eager torch), ``onnx_backend`` (export, ORT),
``graphs`` (the CUDA-graph runner), ``generator`` (the pipeline behind the
Generator protocol: streaming windows), ``cli`` (commands), ``testing``
(tiny-model fixtures). Importing this package does not import torch.
"""
