"""The diffusion generator: image embedding -> latent audio diffusion -> audio.

Modules, in the order of the flow: ``config`` (torch-free settings), ``model``
(the model folder: make, check, load), ``conditioner`` (image embedding ->
cross-attention tokens), ``samplers`` (few-step schedules), ``generator``
(the Generator protocol, streaming windows), ``onnx_backend`` (export, ORT),
``cli`` (commands), ``testing`` (tiny-model fixtures). Importing this package
does not import torch.
"""
