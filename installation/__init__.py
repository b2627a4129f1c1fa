"""The front door of Art2Mus: CLI, config, wire protocol, supervisor, demo.

Nothing here imports torch; the heavy engine backends are imported only by
the engine role when its config asks for them.
"""
