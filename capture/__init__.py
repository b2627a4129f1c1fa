"""The capture role: camera frames in, ``ArtworkView`` messages out, one process per room.

Modules, in the order a frame meets them:

- ``frames``: the frame and the frame-source protocol every source and the loop
  share (a frame may carry its source's ground truth).
- ``sources``: where frames come from (a camera, a video file, a folder of
  images, or the demo camera from ``synthetic``).
- ``detect``: finding the painting's quadrilateral (picture, not frame), rectifying
  it, and choosing the primary one with hysteresis.
- ``catalogue``: recognising a view against a folder of known works (ORB + RANSAC,
  cached index), or locating a known work in a frame by homography.
- ``stability``: N-of-M confirmation of the view, One Euro corner smoothing, and
  artwork identity by memory for uncatalogued works.
- ``descriptor``: the interpretable visual descriptor (named features + vector).
- ``encoders``: the embedding: the descriptor, or an ONNX image tower (CLIP).
- ``loop``: the per-room loop that ties them together and publishes.
- ``watch``: a source wrapper telling the role that the loop lives and the camera delivers.
- ``recognise``: detection + recognition of every artwork in a still image.
- ``synthetic``: worlds we built: procedural paintings (``artworks``), gallery
  scenes with ground truth (``scenes``) for the tests and ``bench``, and the
  demo's virtual camera (``camera``).
- ``bench``, ``cli``: ``art2mus bench capture``, ``art2mus detect``, ``export-encoder``.
- ``role``: the ZeroMQ wiring that runs the loop as a process.

Importing this package is cheap: no OpenCV, no torch.
"""
