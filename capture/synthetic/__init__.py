"""Worlds we built: scenes for benchmarks and tests, the demo's virtual camera.

Nothing here films a real gallery. ``artworks`` paints the procedural works,
``scenes`` hangs them in seeded gallery scenes with ground truth (for the
tests and ``art2mus bench capture``): the "classic" style, and the "rooms"
style (``rooms``: gilded frames, shadows, steep angles, fisheye, low light,
JPEG, blur, labels, visitors) that looks like real gallery photos; and
``camera`` is the demo's virtual camera
(:class:`~capture.synthetic.camera.DemoCamera`), the one frame source that
knows what it filmed and says so with every frame. The live path only
reaches in here when ``CaptureConfig.source`` is ``"demo"``.
"""
