"""Capture settings: frame source, detection, stability and publishing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DemoSourceConfig(BaseModel):
    """The built-in virtual camera: artworks shown in turn on a wall."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    artworks: int = Field(4, ge=1, le=32, description="How many artworks the camera visits.")
    dwell_s: float = Field(15.0, ge=1.0, le=600.0, description="Seconds on each artwork.")
    width: int = Field(1280, ge=160, le=3840)
    height: int = Field(720, ge=120, le=2160)
    seed: int = 7


class StabilityConfig(BaseModel):
    """When a newly seen artwork counts, and when one is lost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hold_frames: int = Field(4, ge=1, description="N: frames of the last M that must agree.")
    window_frames: int = Field(6, ge=1, description="M: the window N is counted in.")
    lost_after_s: float = Field(2.0, ge=0.0, description="Grace period before 'empty wall'.")
    same_artwork_distance: float = Field(
        0.12, gt=0.0, le=2.0,
        description="Descriptor distance under which two views are the same artwork.",
    )


class CaptureConfig(BaseModel):
    """One room's capture role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(
        "demo",
        description="'demo', 'camera:INDEX', 'video:PATH' or 'images:DIR'.",
        pattern=r"^(demo|camera:.+|video:.+|images:.+)$",
    )
    fps: float = Field(15.0, gt=0.0, le=120.0, description="Frames processed per second.")
    detect_width: int = Field(640, ge=160, le=1920, description="Detection runs at this width.")
    rectified_size: int = Field(256, ge=64, le=1024, description="Rectified artwork side, px.")
    heartbeat_s: float = Field(1.0, gt=0.0, le=60.0, description="Re-send the current view.")
    image_dwell_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="images:DIR shows each image this long, cycling."
    )
    stats_every_s: float = Field(10.0, gt=0.0, description="How often a 'stats' event is logged.")
    stability: StabilityConfig = StabilityConfig()
    demo: DemoSourceConfig = DemoSourceConfig()
