"""The capture role: camera frames in, ``ArtworkView`` messages out, one process per room.

Modules, in the order a frame meets them:

- ``sources``: where frames come from (the built-in demo camera, a camera, a
  video file, a folder of images).
- ``detect``: finding the painting's quadrilateral and rectifying it.
- ``stability``: N-of-M confirmation of the view and artwork identity by memory.
- ``descriptor``: the interpretable visual descriptor (named features + vector).
- ``loop``: the per-room loop that ties them together and publishes.
- ``artworks``: procedurally painted artworks for the demo and the tests.
- ``role``: the ZeroMQ wiring that runs the loop as a process.

Importing this package is cheap: no OpenCV, no torch.
"""
