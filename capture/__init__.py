"""The capture role: camera frames in, ``ArtworkView`` messages out, one process per room.

Modules, in the order a frame meets them:

- ``frames``: the frame and the frame-source protocol every source and the loop
  share (a frame may carry its source's ground truth).
- ``sources``: where frames come from (a camera, a video file, a folder of
  images, or the demo camera from ``synthetic``).
- ``detect``: finding the painting's quadrilateral (picture, not frame), rectifying
  it, and choosing the primary one with hysteresis.
- ``catalogue``: known works, catalogue first: locating them in a whole frame by
  their own features (SIFT + RANSAC homography: the picture's exact corners),
  and recognising a rectified view (ORB + RANSAC, colour signatures); a cached
  index (``index_cli``: ``art2mus index DIR`` builds it ahead, with progress).
- ``tracking``: following the located quad from frame to frame by optical flow,
  so recognition runs once per arrival and a passing visitor does not drop it.
- ``stability``: N-of-M confirmation of the view, One Euro corner smoothing, and
  artwork identity by memory for uncatalogued works.
- ``descriptor``: the interpretable visual descriptor (named features + vector).
- ``encoders``: the embedding: the descriptor, or an ONNX image tower (CLIP).
- ``loop``: the per-room loop that ties them together and publishes.
- ``watch``: a source wrapper telling the role that the loop lives and the camera delivers.
- ``recognise``: detection + recognition of every artwork in a still image.
- ``overlay``: what capture sees, drawn (quads, ids, titles, scores), for
  ``detect --draw`` and the capture role's latest-frame file.
- ``images``: reading still images with one-line errors naming the file.
- ``synthetic``: worlds we built: procedural paintings (``artworks``), gallery
  scenes with ground truth (``scenes``) for the tests and ``bench``, and the
  demo's virtual camera (``camera``).
- ``bench`` (synthetic scenes and real photos with truth), ``bench_catalogue``
  (a 2,000-work catalogue), ``bench_video`` (tracking), ``cli``: ``art2mus bench
  capture|catalogue|tracking``, ``art2mus detect``, ``index``, ``export-encoder``.
- ``role``: the ZeroMQ wiring that runs the loop as a process.

Importing this package is cheap: no OpenCV, no torch.
"""
