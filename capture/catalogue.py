"""A catalogue of known artworks: recognise a rectified view, or locate a known work in a frame.

Where it sits: optional. When ``CaptureConfig.catalogue`` names a folder, the
capture loop asks :meth:`Catalogue.recognise` which work a newly confirmed
view is, so ``ArtworkView.artwork_id`` is the gallery's own id; and when the
quad finder sees nothing, :meth:`Catalogue.locate` can still find a known
painting (partly hidden by a visitor, its edges lost in glare) by the
homography of its reference image into the frame. ``art2mus detect
--catalogue DIR`` and ``art2mus bench capture`` use the same calls.

The folder: reference images (``.png``, ``.jpg``...; in sub-folders too, as an
export sorted by room has them, and in folders linked in; hidden ones left out)
and, optionally, a ``catalogue.toml``::

    [[artwork]]
    file = "night-watch.jpg"      # required: the reference image, relative to the folder
    id = "SK-C-5"                 # default: the file name without its suffix
                                  # (1 to 256 printable characters, as the wire carries)
    title = "The Night Watch"     # optional, reported as metadata
    artist = "Rembrandt"
    year = 1642

One entry per image; a file of another shape (``[artwork]``, one table; ``[[artworks]]``),
an entry whose field is of the wrong type, or two entries of one image are refused, naming
them. Keys not read (``titel``, or a ``medium`` a museum keeps there) are named in one warning
(``check-config --deep`` shows it) and the catalogue loads.

Or, instead of the TOML, the collection system's export as a CSV file in the
folder (UTF-8, comma, semicolon or tab separated, one header row): a column
``file`` (or ``filename``, ``image``) names the reference image, and ``id``
(or ``inventory``, ``accession``, ``object number``), ``title``, ``artist``
(or ``author``, ``maker``) and ``year`` (or ``date``) are read where present;
other columns are left alone. A year that is not a whole year ("c. 1640") is
left out and counted in one warning, so a real export loads as it is.

A metadata entry names its image by its path in the folder
(``room-3/night-watch.jpg``) or by its bare file name where only one image has
that name. Images the metadata does not mention are catalogued under their
file stem.

The index (built once, :meth:`Catalogue.open`, or ahead of time with
``art2mus index DIR``): per reference, ORB features (Rublee et al., ICCV 2011)
on a contrast-normalised grey image of the reference squashed to a ``SQUARE``
x ``SQUARE`` square (a rectified view, whatever the painting's aspect, is
squashed the same way, so the two match without anisotropic distortion);
SIFT features (Lowe, IJCV 2004; as RootSIFT, Arandjelovic and Zisserman, CVPR
2012) of the reference at its own aspect, for locating it in a whole frame,
and of simulated views of it, their points mapped back to the frontal
reference's pixels: the reference squeezed across by ``_TILTS`` (as a camera
sees it from 60 and 69 degrees to the side; ASIFT, Morel and Yu, SIAM J.
Imaging Sciences 2009) and shrunk to ``_FAR_SIDES`` px (as a camera sees it
from far: SIFT's scale space holds coarse structure only down to a few
octaves, and a 60 px work's features are those of the shrunk reference);
plus a 16x16 thumbnail (grey and two opponent colours, each
detrended and z-scored) as a global signature for views too blurred, too
dim or too plain for local features, and a finer 64x64 appearance image
(the same three channels, lightly blurred, each z-scored) to tell apart
look-alikes the thumbnail cannot; and, per reference, its two best signature
correlations with the other references (the catalogue's own works as
impostors, which calibrates stage 3 below). It is saved
as ``.art2mus-index.npz`` in the folder (or in ``cache_dir``) with a
fingerprint of the folder (file names, sizes and modification times, the
TOML included) and of the index parameters; opening a folder whose
fingerprint changed rebuilds it, indexing only the references whose file is
new or changed (each work's file key is kept in the index; the others' parts
are taken from it, built with the same parameters).

Recognition (:meth:`Catalogue.recognise`), three stages, first that decides:

1. The view's ORB descriptors are matched (brute-force Hamming, Lowe's
   ratio test) against those of the ``_SHORTLIST`` references whose
   thumbnails look most like the view (one matrix product over the whole
   catalogue: the cost of a view hardly grows with the catalogue, and the
   matches are exact and deterministic); the references with the most votes
   (and the two globally most similar) are verified by a RANSAC homography, and the
   one with the most inliers wins if it has at least ``min_inliers`` and its
   homography maps the square onto a plausible quadrilateral near the view.
2. Otherwise a position prior: a rectified view lines up with its
   reference, so each query feature is matched only to features near the same
   place in the six globally most similar references (and the two most
   voted). A match counts for a reference only if it is distinctive among
   those candidates (clearly closer than to any other), which discards what
   look-alike works share (one composition, one horizon); the best verified
   candidate needs ``2/3 min_inliers`` inliers near the identity and at
   least twice the agreement of any other candidate, so a work outside the
   catalogue that shares a composition with catalogued ones gets no id.
   Below ``min_inliers`` it also needs ``_LOCATE_CONSISTENT`` of its own
   distinctive matches in the fit: in low light and sensor noise an
   outsider gives a candidate dozens of distinctive matches, and RANSAC
   finds 8-10 of them consistent by chance.
   ORB sees grey shapes only, and works that share a layout (radial designs
   of one symmetry) still agree on many positions; so the view, registered
   onto the pick by the fit, must also look like it (tones and colours at
   64x64, weighted around the inliers, so a visitor in front of the painting
   does not count) with the correlation a signature pick needs,
   ``_FINE_SUPPORT``.
3. Otherwise (blur, low light, a plain painting) global appearance decides,
   two ways. The signature correlation names the best reference if it
   reaches ``signature_threshold`` and beats the runner-up by
   ``signature_margin`` (and by more than :attr:`Catalogue.impostor_margin`
   to stand alone, below). And the ``_FINE_CANDIDATES`` references with the
   best signatures are compared at 64x64 (normalised correlation, searched
   over shifts of up to ``_FINE_SHIFT`` px, so a slightly-off quad still
   lines up): the best names its reference if its correlation reaches
   ``_FINE_THRESHOLD`` and its residual (1 - correlation) is at most
   ``1 / _FINE_RATIO`` of the runner-up's. Per-channel z-scoring removes
   the gain of low light, the blur and the coarse scale average the sensor
   noise, and the residual ratio separates look-alikes (seascapes with a
   different horizon or headland) that the thumbnail's margin cannot,
   while a work outside the catalogue, about as far from two or three
   references, gets no id. The signature's pick stands only where the fine
   comparison does not contradict it (its residual at most
   ``1 / _FINE_AGREE`` of the best other candidate's): a look-alike outside
   the catalogue can win the thumbnails by the margin. Should the two name
   different works, neither counts. A margin compares the view with the
   catalogued works alone, so on its own (no fine pick) it stands only above
   :attr:`Catalogue.impostor_margin`: the largest margin by which one of the
   catalogue's own works, left out, wins the thumbnails against the others.
   A work outside the catalogue of the same kind (another seascape) wins by
   as much, and in a small catalogue that is most of them: on the 50-work
   bench 6 of 7 signature picks that stood on the margin alone were works
   outside it (margins 0.19-0.26 against 0.28 for the one right view), and 4
   of the 50 works, left out, would be taken for another. In a catalogue
   with twins (a study and its painting) the impostor margin is high and
   only the fine comparison names works.

Otherwise: ``None``.

Location (:meth:`Catalogue.locate`), catalogue first: the frame, downscaled to
``locate_width``, gives SIFT features; each is matched to its nearest
reference feature (FLANN k-d trees, Lowe's ratio test); the references with
the most votes are verified by a RANSAC homography of the reference into the
frame, which gives the picture's exact corners whatever its frame, shadow or
angle (frontal SIFT holds to about 50 degrees of tilt, the tilted references'
to about 70; dim light and partial occlusion, where edge-based quads fail).
Each is also fitted to its per-work matches: for each work among a frame
feature's ``_WORK_NEIGHBOURS`` nearest, its nearest, where distinctive within
that work (the ratio test as made for two images, one work at a time). In a
catalogue of thousands, another work's feature is often about as near as the
true match, and a catalogue may hold a detail or a copy of a work beside it:
the ratio test then refuses most of the work's matches. A fit on per-work
matches counts only with ``min_inliers`` inliers at distinct points (they are
looser, and so are its corners: where the ratio-test fit is strong, its corners
stand), and ranks the work by them. A work whose inliers lie mostly inside
another located work's quad, more of them than of that work's inside its own,
fits a part of it (a detail, a copy of half of it), and is not reported.
The frame's features vote among the frontal features first, and a work is
placed on those votes alone where they are enough (as if no simulated views
were held: their chance votes would raise every other work's tally); only
then do the features with no frontal match vote among the simulated ones, and
the works not yet placed are fitted again on both (``Location.simulated``). A
simulated feature whose runner-up is a copy of it (the same reference's same
point, from another simulated view) is compared with the next one instead.

A location needs ``min_inliers``
inliers, a convex quad of plausible shape and size, a quarter of it in view
(or a quarter of the frame filled by it), and no better location of another
work at the same place. Features are taken at a fixed width
whatever the camera's resolution, so a 720p and a 1080p frame of one scene
give the same works. A frame smeared by a pan during the exposure has the
streak taken out first (:mod:`capture.deblur`; counted in ``deblurred``).

A homography fitted to a self-similar work (a Mondrian's grid crossings,
a pattern of repeated motifs) can lock onto the wrong repeats and be a few
per cent off, or skewed. Where the quad finder traced an outline at the
same place, :meth:`Catalogue.closest_outline` keeps whichever of the two
the reference's 64x64 appearance fits clearly best (the quad finder's
outline tried in its four orientations); the same choice is made between a
recognised outline and the picture its matched features place inside it.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import io
import json
import logging
import os
import time
import tomllib
import unicodedata
import zipfile
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from filelock import FileLock, Timeout

from capture.deblur import MotionBlur, deblur, estimate_motion_blur
from capture.detect import quad_iou
from capture.images import REDUCED_AT_LEAST, file_problem, read_image
from ground.config import parse_toml
from ground.errors import InputError
from ground.params import shown
from ground.protocol import MAX_TEXT_CHARS

log = logging.getLogger(__name__)

INDEX_VERSION = 9
INDEX_FILE = ".art2mus-index.npz"
#: What reading a damaged index file may raise (a copy cut short is no zip file at all):
#: such an index is rebuilt, never a traceback.
UNREADABLE_INDEX = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
METADATA_FILE = "catalogue.toml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

#: Side of the square that references and rectified views are compared at, px.
SQUARE = 320
#: Long side of the reference as located in a frame (its own aspect), px.
NATIVE_LONG_SIDE = 400
#: A reference image smaller than this on its long side (px) is reported at indexing. The
#: Estense photos against their catalogue shrunk (``bench capture --reference-side``): at
#: 120 and 200 px every work placed and named, as at 570; at 90 px too (one corner set
#: rougher); at 60 px 20 and 21 of 22 (the octagonal 010 placed roughly, IoU 0.63), and an
#: id the truth does not give.
SMALL_REFERENCE = 100
#: Width a frame is downscaled to for location (SIFT upsamples it 2x in its first octave).
LOCATE_WIDTH = 640
_REFERENCE_FEATURES = 500
_NATIVE_FEATURES = 500  # SIFT, per reference: ~0.25 MB each in memory (128 float32 each)
_QUERY_FEATURES = 500  # per rectified view
#: The reference is also indexed as seen from the side (ASIFT, Morel and Yu 2009): squeezed
#: across by these factors, as from 60 and 69 degrees off its axis. Frontal features hold
#: to about 50 degrees; with these a work is located to about 70.
_TILTS = (2.0, 2.83)
_TILTED_FEATURES = 150  # SIFT per tilted reference: the squeezed image has less to find
#: The index's simulated views of each reference (``{name}_desc/_xy/_owner`` arrays).
SIMULATED_VIEWS = ("tilted", "far")
_FAR_SIDES = (120, 72)  # long side, px: the reference as seen from far...
_FAR_FEATURES = 80  # ...with this many SIFT features each
_SAME_POINT = 4.0  # px in the reference: a feature's copy from another simulated view of it
#: A frame feature's nearest reference features (per matcher): each work among them gets the
#: nearest of its own as a per-work match, if distinctive within that work (see _matches).
_WORK_NEIGHBOURS = 8
_KD_CHECKS = 32  # leaves of the k-d trees looked at per query feature (see _kd_matcher)
_FRAME_FEATURES = 1500  # SIFT, per whole frame, for locate()
# A quarter of SIFT's default (0.04): dim, varnished or low-contrast works keep features (only the
# strongest _NATIVE_FEATURES / _FRAME_FEATURES are kept, so a busy frame loses nothing).
_SIFT_CONTRAST = 0.01
_LOCATE_CANDIDATES = 8  # references verified by RANSAC per located frame
#: Works :meth:`Catalogue.locate` reports at most, best supported first: a salon hang shows
#: 20 and more in one view (it reported 8 until 2026-12-06, and a still of 20 small works
#: turned 35 degrees, or seen from far, lost those the quad finder did not trace as well).
MAX_LOCATED = 32
_LOCATE_RATIO = 0.8  # Lowe's ratio test for SIFT
_LOCATE_THRESHOLD = 3.0  # px at locate_width: RANSAC reprojection threshold
_LOCATE_MIN_VOTES = 8  # a reference with fewer ratio-test votes is not verified
_LOCATE_CONSISTENT = 0.6  # ...and with fewer than min_inliers, this share must be inliers
_LOCATE_DOMINANT = 4.0  # ...or the reference this many times the votes of any other
_NEAR_MARGIN = 0.25  # of a quad's size: the neighbourhood locate(near=...) searches
# px, the longer side: locate(near=...) looks at a work no larger than its reference holds
# it (NATIVE_LONG_SIDE): detail finer than the reference's has no counterpart among its
# features, and costs SIFT time (a work filling a 960x1280 portrait frame: 150-200 ms an
# arrival at locate_width's scale). Smaller still (300 px), a plain work loses its fit.
_NEAR_SIDE = NATIVE_LONG_SIDE
_ARRIVED = 0.7  # IoU with that quad of a work placed exactly: the search ends there
_WEAK_INLIERS = 5  # a fit this consistent, too weak to stand, is looked at again finer...
_FINER = 2.0  # ...at this many times the scale (the frame's own pixels at most)...
_FINER_LOOKS = 2  # ...for at most this many works per frame
# locate(fine=True): the whole frame looked at again at _FINER times the scale, with as many
# features per pixel as the coarse pass (a far work of 60 px at locate_width has a dozen there).
_FINE_FRAME_FEATURES = round(_FRAME_FEATURES * _FINER ** 2)
# A neighbourhood (locate(near=...)) where nothing was located is looked at again finer when that
# costs at most this share of the whole frame's pixels at locate_width: a small picture the quad
# finder saw has too few features at the whole frame's scale; a large one has plenty.
_FINER_NEAR_PIXELS = 0.5
_LOCATE_SAME_PLACE = 0.5  # two locations this overlapping are one place, the better stays
_MAX_SIDE_RATIO = 6.0  # opposite sides of a located quad differ at most this much (~80 degrees)
_MIN_IN_VIEW = 0.25  # share of a located work inside the frame, at least...
_CLOSE_UP = 0.25  # ...unless what is inside fills this share of the frame (a close-up)
_THUMB = 16
_FINE = 64  # side of the fine appearance image, px
_FINE_SHIFT = 2  # px at _FINE: how far a view may sit from its reference (~3 % of the side)
_FINE_CANDIDATES = 6  # references (best signatures first) compared finely
_FINE_THRESHOLD = 0.9  # the fine correlation a match needs
_FINE_RATIO = 2.0  # the runner-up's residual (1 - correlation) over the best's, at least
_FINE_AGREE = 1.5  # ...and over the thumbnails' pick's, for the pick to stand
_FINE_SUPPORT = 0.75  # the thumbnails' pick's own fine correlation, at least
_OUTLINE_MARGIN = 0.02  # correlation by which another outline must fit better than a location
_FINE_STRUCTURE = 0.5  # summed variance of the view's z-scored fine channels, at least
_RATIO = 0.8  # Lowe's ratio test
_CANDIDATES = 4  # references verified by RANSAC per query
_SHORTLIST = 24  # references (most alike thumbnails) a view's ORB features are matched to
_ALIGNED_CANDIDATES = 6  # globally most similar references checked with the position prior
_DISTINCT = 0.85  # an aligned match must beat every other candidate's by this ratio
_ALIGNED_RADIUS = 0.12 * SQUARE  # px: how far a rectified view may sit from its reference
_RECTIFIED_SLACK = 0.3 * SQUARE  # px: the most a verified match may move the square's corners


@dataclass(frozen=True)
class CatalogueEntry:
    """One known artwork: its id, reference file (relative to the folder) and metadata."""

    artwork_id: str
    file: str
    title: str = ""
    artist: str = ""
    year: int | None = None


@dataclass(frozen=True, eq=False)  # holds arrays: == is identity
class Match:
    """A recognised view: the artwork id, a score in [0, 1], and how it was decided.

    ``homography`` maps the reference square (``SQUARE`` px) onto the query
    square when local features decided (``method == "features"``).
    """

    artwork_id: str
    score: float
    inliers: int
    method: str  # "features" or "signature"
    homography: np.ndarray | None = None


@dataclass(frozen=True, eq=False)  # holds arrays: == is identity
class Location:
    """A known painting found in a frame: its quad (TL, TR, BR, BL, frame px), id and score."""

    artwork_id: str
    quad: np.ndarray
    score: float
    inliers: int
    #: Placed with the simulated (tilted or far) reference views' votes (the frontal ones
    #: alone were too few): a coarser fit, which a finer look at the same place may better.
    simulated: bool = False
    #: The frame points (px) of the fit's inliers: where its evidence is.
    support: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    #: Its corners come from a fit to ratio-test votes with ``min_inliers`` inliers, not
    #: from a weaker one or one to the looser per-work matches (``Catalogue._fit``);
    #: ``inliers`` counts the per-work matches where they fit more.
    exact: bool = True


#: A searched part of a frame at a scale: its grey pixels, SIFT keypoints and descriptors.
_Features = tuple[np.ndarray, Sequence[cv2.KeyPoint], "np.ndarray | None"]


@dataclass(frozen=True, eq=False)
class _Homography:
    """A reference fitted to matches: the homography, its inliers, the reference's
    corners and the inliers' points (px of the searched image)."""

    homography: np.ndarray
    inliers: int
    quad: np.ndarray
    support: np.ndarray


@dataclass(frozen=True, eq=False)
class _Fit:
    """A reference's homography into the (searched part of the) frame, as judged."""

    inliers: int
    quad: np.ndarray  # the reference's corners, px of the searched image
    votes: int  # the matches it was fitted to
    distinct: int  # inliers at distinct points (_distinct_inliers; = inliers when strong)
    support: np.ndarray  # the inliers' points, px of the searched image


class Catalogue:
    """Known artworks, indexed for recognition and location; see the module docstring."""

    def __init__(self, folder: Path, entries: list[CatalogueEntry], arrays: dict[str, np.ndarray],
                 min_inliers: int = 12, signature_threshold: float = 0.3,
                 signature_margin: float = 0.15, locate_width: int = LOCATE_WIDTH) -> None:
        self.folder = folder
        self.entries = entries
        self.min_inliers = min_inliers
        self.locate_width = locate_width
        self.signature_threshold = signature_threshold
        self.signature_margin = signature_margin
        self._square_desc = arrays["square_desc"]
        self._square_xy = arrays["square_xy"]
        self._square_owner = arrays["square_owner"]
        # Features are stored reference by reference: owner k's are rows
        # _square_start[k] to _square_start[k + 1].
        self._square_start = np.searchsorted(self._square_owner, np.arange(len(entries) + 1))
        # RootSIFT, stored as uint8 (x 255) in the cache, and held so (:func:`_unit`): the
        # matchers below hold their own float32 copy of what they index (OpenCV's FLANN
        # copies it), and a second one here was 645 MB of a room's 1.75 GB at 2,000 works.
        # The frontal features, then those of the simulated views, the reference seen at
        # a steep angle (``tilted_*``) and from far (``far_*``), their coordinates in the
        # frontal reference's pixels: one table of coordinates and owners, two matchers.
        self._frontal = len(arrays["native_desc"])  # rows before it are frontal features
        parts = ("native", *SIMULATED_VIEWS)
        self._native_desc = np.concatenate([arrays[f"{p}_desc"] for p in parts])
        self._native_xy = np.concatenate([arrays[f"{p}_xy"] for p in parts])
        self._native_owner = np.concatenate([arrays[f"{p}_owner"] for p in parts])
        self._native_size = arrays["native_size"]  # (n, 2) width, height of the native reference
        self._thumbs = arrays["thumbs"]
        #: Pairs of ids whose references show the same picture (:func:`_twins`): a view of
        #: it may be named either. Empty for an index built before twins were looked for.
        self.twins: list[tuple[str, str]] = [
            (entries[int(a)].artwork_id, entries[int(b)].artwork_id)
            for a, b in arrays.get("twins", np.zeros((0, 2), np.int32))]
        #: Ids whose references are plain (:func:`_plain`): views of them are never named.
        #: Empty for an index built before plain references were looked for.
        self.plain: list[str] = [entries[int(k)].artwork_id
                                 for k in arrays.get("plain", np.zeros(0, np.int32))]
        #: Ids whose reference images are smaller than :data:`SMALL_REFERENCE` on their long
        #: side: views of them may go unnamed, their corners rough. Empty for an index
        #: built before the sizes were kept.
        self.small: list[str] = [entries[int(k)].artwork_id
                                 for k in arrays.get("small", np.zeros(0, np.int32))]
        #: The thumbnail margin the catalogue's own works reach as impostors: each work,
        #: left out, against the others (its best signature correlation over the next,
        #: among works whose best reaches ``signature_threshold``), the largest. A view
        #: of a work outside the catalogue wins the thumbnails by as much; a
        #: signature pick needs more to stand alone (see the module docstring).
        nearest = arrays["signature_nearest"]
        self.impostor_margin = float((nearest[:, 0] - nearest[:, 1])[
            nearest[:, 0] >= signature_threshold].max(initial=0.0))
        self._fine = arrays["fine"].astype(np.float32)  # (n, _FINE, _FINE, 3)
        self._orb = _orb(_QUERY_FEATURES)
        self._frame_sift = cv2.SIFT.create(nfeatures=_FRAME_FEATURES,
                                           contrastThreshold=_SIFT_CONTRAST)
        self._fine_frame_sift = cv2.SIFT.create(nfeatures=_FINE_FRAME_FEATURES,
                                                contrastThreshold=_SIFT_CONTRAST)
        # Two matchers: a frame feature's ratio test is among the frontal features first, as
        # if no simulated ones were held (more features to tell apart from would refuse some
        # of its matches), and among the simulated ones only where that finds nothing.
        self._native_matcher = _kd_matcher(_unit(self._native_desc[:self._frontal]))
        self._simulated_matcher = _kd_matcher(_unit(self._native_desc[self._frontal:]))
        #: Timings (ms) of recent calls, for ``art2mus bench capture``.
        #: ``locate_ms``: every locate call; ``search_ms`` / ``fine_search_ms``: those of the
        #: whole frame for every work (no ``near``, no ``only``), without / with ``fine``.
        self.stats: dict[str, list[float]] = {"recognise_ms": [], "locate_ms": [],
                                              "search_ms": [], "fine_search_ms": []}
        self.deblurred = 0  # location passes that took a motion streak out of the frame first
        #: Whether :meth:`open` built the index (the folder changed), and how many of its
        #: works it took unchanged from the index before (their images were not touched).
        self.rebuilt = False
        self.reused = 0
        #: Reference images :meth:`open` left out, unreadable: why, by path in the folder.
        self.left_out: dict[str, str] = {}
        # Each work's reference as the index read it (:func:`_file_key`: its file's path,
        # size and modification time): a running room tells by it which works an update
        # changed. None for an index from before the keys were kept.
        files = json.loads(str(arrays["files"])) if "files" in arrays else []
        self._references: dict[str, str] = dict(zip(
            (entry.artwork_id for entry in entries), files, strict=True)) \
            if len(files) == len(entries) else {}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        """Artwork ids in index order."""
        return [e.artwork_id for e in self.entries]

    def entry(self, artwork_id: str) -> CatalogueEntry | None:
        """The entry for ``artwork_id``, if catalogued."""
        return next((e for e in self.entries if e.artwork_id == artwork_id), None)

    def reference(self, artwork_id: str) -> str | None:
        """The work's reference image as the index read it: its path in the folder, size
        and modification time, one string (two catalogues give the same string where the
        work's image was not touched); None where it is not catalogued or the index did
        not keep it."""
        return self._references.get(artwork_id)

    # -- building and caching --

    @classmethod
    def open(cls, folder: str | Path, cache_dir: str | Path | None = None,
             min_inliers: int = 12, locate_width: int = LOCATE_WIDTH,
             progress: Callable[[int, int], None] | None = None, *,
             leave_out_unreadable: bool = False) -> Catalogue:
        """Load the folder's index from its cache, or build (and cache) it if the folder changed
        (:func:`current_index`), and open it for recognition and location.

        ``progress(done, total)`` is called per reference indexed. An image that cannot be
        read is an InputError naming it; with ``leave_out_unreadable`` (a running room) its
        work is left out, the catalogue opens with the others, and all those left out are
        named in one warning and in :attr:`left_out`.
        """
        index = current_index(folder, cache_dir, progress,
                              leave_out_unreadable=leave_out_unreadable)
        catalogue = cls(Path(folder), index.entries, index.arrays, min_inliers=min_inliers,
                        locate_width=locate_width)
        catalogue.rebuilt = index.rebuilt
        catalogue.reused = index.reused
        catalogue.left_out = index.left_out
        if catalogue.left_out:
            log.warning("catalogue %s: %d reference images cannot be read, their works left "
                        "out (the others are recognised; mended, they are taken in): %s",
                        folder, len(catalogue.left_out),
                        listed([f"{name} ({why})" for name, why in catalogue.left_out.items()]))
        if catalogue.plain:
            log.warning("catalogue %s: plain references, nothing to recognise a view of them "
                        "by (views of them are not named): %s", folder,
                        listed(catalogue.plain))
        if catalogue.small:
            log.warning("catalogue %s: reference images under %d px on their long side (views "
                        "of them may go unnamed, their corners rough; a bigger image of the "
                        "work fixes it): %s", folder, SMALL_REFERENCE, listed(catalogue.small))
        if catalogue.twins:
            log.warning("catalogue %s: references showing the same picture (a view of it may "
                        "be named either): %s", folder,
                        "; ".join(f"{a} = {b}" for a, b in catalogue.twins))
        return catalogue

    # -- recognition --

    def recognise(self, view_bgr: np.ndarray,
                  trace: list[dict[str, Any]] | None = None) -> Match | None:
        """Which catalogued artwork a rectified view shows, or ``None`` (not in the catalogue).

        ``trace``, when given, receives one record per stage that ran (its
        candidates' ids and scores, the thresholds it applied, its outcome):
        what ``art2mus bench catalogue --explain`` prints for each wrong answer.
        """
        began = time.perf_counter()
        square = cv2.resize(view_bgr, (SQUARE, SQUARE), interpolation=cv2.INTER_AREA
                            if min(view_bgr.shape[:2]) > SQUARE else cv2.INTER_LINEAR)
        signature = _thumbnail(square)
        # Correlation of normalised thumbnails (each channel z-scored: 1 is identical).
        similarity = self._thumbs @ signature / (signature.size / 3)
        match = self._recognise_features(square, similarity, trace)
        if match is None:
            match = self._recognise_signature(square, similarity, trace)
        self._note("recognise_ms", began)
        return match

    def _recognise_features(self, square: np.ndarray, similarity: np.ndarray,
                            trace: list[dict[str, Any]] | None = None) -> Match | None:
        keypoints, descriptors = self._orb.detectAndCompute(_normalised_grey(square), None)
        if descriptors is None or len(keypoints) < self.min_inliers:
            if trace is not None:
                trace.append({"stage": "features", "keypoints": len(keypoints),
                              "outcome": "too few keypoints"})
            return None
        query_xy = _points(keypoints)
        # The shortlist, not the whole catalogue: an LSH search over 2,000 works' features
        # costs ~2 s a view, brute force over 24 ~20 ms; the right work is among the 24
        # most alike thumbnails for ~98 % of damaged views (the thumbnail stage and the
        # position-prior stage below cover most of the rest).
        votes = self._vote_among(descriptors, np.argsort(-similarity)[:_SHORTLIST])
        # Verify the references with the most votes, and the two that look most
        # alike globally (their features may have been lost to blur or glare).
        voted = _top_owners(votes, self._square_owner, _CANDIDATES)
        candidates = voted + [int(o) for o in np.argsort(-similarity)[:2] if int(o) not in voted]
        best: tuple[int, int, np.ndarray] | None = None
        notes: list[dict[str, Any]] = []
        for owner in candidates:
            pairs = votes[self._square_owner[votes[:, 1]] == owner] if len(votes) else votes
            note: dict[str, Any] = {"id": self.entries[owner].artwork_id, "votes": len(pairs),
                                    "similarity": round(float(similarity[owner]), 3)}
            notes.append(note)
            if len(pairs) < self.min_inliers:
                continue
            ref_xy = self._square_xy[pairs[:, 1]]
            homography, inliers = _verified_homography(ref_xy, query_xy[pairs[:, 0]],
                                                       (SQUARE, SQUARE), (SQUARE, SQUARE),
                                                       threshold=6.0)
            note["inliers"] = inliers
            # A view rectified from a quad lines up with its reference: allow the
            # quad to be off (a frame's outer edge taken for the picture), not a
            # reference mapped onto a fraction or a multiple of the view.
            if homography is not None:
                note["corner_shift"] = round(_corner_shift(homography), 1)
            if homography is not None and _corner_shift(homography) > _RECTIFIED_SLACK:
                continue
            if homography is not None and (best is None or inliers > best[1]):
                best = (owner, inliers, homography)
        if trace is not None:
            decided = best is not None and best[1] >= self.min_inliers
            trace.append({"stage": "features", "keypoints": len(keypoints),
                          "candidates": notes, "min_inliers": self.min_inliers,
                          "max_corner_shift": _RECTIFIED_SLACK,
                          "outcome": self.entries[best[0]].artwork_id if decided and best
                          else None})
        if best is None or best[1] < self.min_inliers:
            best = self._aligned_verification(square, keypoints, descriptors, similarity, voted,
                                              trace)
        if best is None:
            return None
        owner, inliers, homography = best
        return Match(self.entries[owner].artwork_id, _inlier_score(inliers), inliers, "features",
                     homography)

    def _aligned_verification(self, square: np.ndarray, keypoints: Any, descriptors: np.ndarray,
                              similarity: np.ndarray, voted: list[int],
                              trace: list[dict[str, Any]] | None = None,
                              ) -> tuple[int, int, np.ndarray] | None:
        """Verify the globally most similar references with a position prior.

        A rectified view lines up with its reference square, so a query feature
        is matched (brute force, no Lowe ratio test, which blur defeats) only to
        reference features within ``_ALIGNED_RADIUS`` of the same place, and
        the homography must stay near the identity. The candidates are the
        ``_ALIGNED_CANDIDATES`` references that look most alike globally plus
        the two with the most votes; a match counts for a candidate only when
        it is distinctive among them (Hamming distance below ``_DISTINCT``
        times the same feature's best distance to any other candidate). That
        discards what look-alike works share (the same head outline, the same
        horizon) and keeps what tells them apart, so a work outside the
        catalogue that shares a composition with a catalogued one is not
        taken for it. Chance agreement on distinctive matches and the
        position prior together is rare enough that fewer inliers
        (``min_inliers * 2/3``) suffice. The pick's appearance must then bear
        it out (:meth:`_registered_support`): a work outside the catalogue
        whose grey shapes fall in the same places (a radial design of the same
        symmetry in other colours) is refused.
        """
        query_xy = _points(keypoints)
        candidates = [int(o) for o in np.argsort(-similarity)[:_ALIGNED_CANDIDATES]]
        candidates += [o for o in voted[:2] if o not in candidates]
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        # Per candidate: (query index, reference index, distance) of each query
        # feature's best match near its own position.
        found: dict[int, np.ndarray] = {}
        nearest = np.full((len(candidates), len(query_xy)), np.inf, np.float32)
        for k, owner in enumerate(candidates):
            mine = np.arange(self._square_start[owner], self._square_start[owner + 1])
            if len(mine) < 4:
                continue
            ref_xy = self._square_xy[mine]
            # Squared distances as |q|^2 + |r|^2 - 2 q.r: one small matrix product.
            squared = ((query_xy ** 2).sum(axis=1)[:, None] + (ref_xy ** 2).sum(axis=1)[None]
                       - 2.0 * query_xy @ ref_xy.T)
            near = (squared < _ALIGNED_RADIUS ** 2).astype(np.uint8)
            matches = matcher.match(descriptors, self._square_desc[mine], near)
            rows = np.array([(m.queryIdx, mine[m.trainIdx], m.distance) for m in matches
                             if m.distance < 64], np.float32).reshape(-1, 3)
            found[k] = rows
            nearest[k, rows[:, 0].astype(np.int64)] = rows[:, 2]
        best: tuple[int, int, np.ndarray] | None = None
        agreement = {k: 0 for k in found}  # inliers per candidate, plausible fit or not
        fitted: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the fit's matched points
        notes: list[dict[str, Any]] = []
        for k, rows in found.items():
            query = rows[:, 0].astype(np.int64)
            others = np.delete(nearest, k, axis=0).min(axis=0, initial=np.inf)[query]
            rows = rows[rows[:, 2] < _DISTINCT * others]
            note: dict[str, Any] = {"id": self.entries[candidates[k]].artwork_id,
                                    "distinct": len(rows)}
            notes.append(note)
            if len(rows) < 8:
                continue
            q, r = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
            homography, inliers = _verified_homography(self._square_xy[r], query_xy[q],
                                                       (SQUARE, SQUARE), (SQUARE, SQUARE),
                                                       threshold=6.0)
            agreement[k] = inliers
            note["inliers"] = inliers
            if homography is not None:
                note["corner_shift"] = round(_corner_shift(homography), 1)
            if homography is None or _corner_shift(homography) > _ALIGNED_RADIUS:
                continue
            if best is None or inliers > best[1]:
                best = (k, inliers, homography)
                fitted[k] = (self._square_xy[r], query_xy[q])
        # A look-alike outside the catalogue agrees a little with several
        # candidates (even where the fit is implausible); the right reference
        # agrees with one, far more than with any other.
        runner_up = max((v for k, v in agreement.items() if best is None or k != best[0]),
                        default=0)
        # Fewer than min_inliers stand only where most of the pick's distinctive matches
        # agree with its fit (as a location's, _LOCATE_CONSISTENT): in low light and sensor
        # noise a work outside the catalogue gives dozens of distinctive matches to a
        # candidate, and RANSAC finds 8-10 of them consistent by chance.
        accepted = best is not None and best[1] >= (2 * self.min_inliers) // 3 \
            and best[1] >= 2 * runner_up and (
                best[1] >= self.min_inliers
                or best[1] >= _LOCATE_CONSISTENT * len(fitted[best[0]][0]))
        # ORB sees grey shapes: two works that share a layout (radial designs with the
        # same symmetry, one composition) give position-consistent matches. Where the
        # geometry says the view shows the pick, its tones and colours must fit the
        # pick as well as a thumbnail-signature pick must (_FINE_SUPPORT).
        support = None
        if accepted and best is not None:
            support = self._registered_support(square, candidates[best[0]], best[2],
                                               *fitted[best[0]])
            accepted = support is None or support >= _FINE_SUPPORT
        if trace is not None:
            trace.append({"stage": "aligned", "candidates": notes,
                          "min_inliers": (2 * self.min_inliers) // 3,
                          "runner_up_inliers": runner_up, "max_corner_shift": _ALIGNED_RADIUS,
                          "support": None if support is None else round(support, 3),
                          "min_support": _FINE_SUPPORT,
                          "outcome": self.entries[candidates[best[0]]].artwork_id
                          if accepted and best is not None else None})
        if not accepted or best is None:
            return None
        return candidates[best[0]], best[1], best[2]

    def _recognise_signature(self, square: np.ndarray, similarity: np.ndarray,
                             trace: list[dict[str, Any]] | None = None) -> Match | None:
        # For views without enough verified local features (blur, low light, a
        # plain painting): global appearance decides (see the module docstring).
        # The thumbnails' pick (a margin over the runner-up) vetoes a different
        # fine pick, and stands alone only by more than the catalogue's own
        # impostor margin: in a small catalogue a work outside it of the same kind
        # (another seascape, a night scene) wins the thumbnails by as much as a dim
        # view of a catalogued one, and fits its 64 px appearance about as well
        # (0.78-0.86 against 0.80-0.90 on the 50-work bench).
        order = np.argsort(-similarity)
        best = float(similarity[order[0]])
        second = float(similarity[order[1]]) if len(order) > 1 else -1.0
        candidates = [int(o) for o in order[:_FINE_CANDIDATES]]
        fine = self._fine_scores(square, candidates)
        coarse = None
        if best >= self.signature_threshold and best - second >= self.signature_margin:
            coarse = (candidates[0], best)
            # The fine comparison must not contradict it: a look-alike outside the
            # catalogue can win the thumbnails by the margin and still fit its
            # reference's 64x64 appearance barely better than another's.
            if fine is not None and len(fine) > 1 \
                    and 1.0 - float(fine[1:].max()) < _FINE_AGREE * (1.0 - float(fine[0])):
                coarse = None
            # Nor leave it far from its reference: a painting framed in gilt and a
            # catalogue image that includes another's gilt frame share the thumbnail's
            # bright border and dark centre, not the picture inside.
            if fine is not None and float(fine[0]) < _FINE_SUPPORT:
                coarse = None
        # Look-alikes (one composition, a different horizon) have thumbnails
        # too close for the margin; the fine comparison separates them.
        decided = None
        if fine is not None and len(fine) > 1:
            ranked = np.argsort(-fine)
            top, runner_up = float(fine[ranked[0]]), float(fine[ranked[1]])
            if top >= _FINE_THRESHOLD and 1.0 - runner_up >= _FINE_RATIO * (1.0 - top):
                decided = (candidates[int(ranked[0])], top)
        if trace is not None:
            trace.append({
                "stage": "signature",
                "candidates": [{"id": self.entries[o].artwork_id,
                                "similarity": round(float(similarity[o]), 3),
                                "fine": None if fine is None else round(float(fine[k]), 3)}
                               for k, o in enumerate(candidates)],
                "signature_threshold": self.signature_threshold,
                "signature_margin": self.signature_margin,
                "impostor_margin": round(self.impostor_margin, 3),
                "fine_threshold": _FINE_THRESHOLD,
                "fine_ratio": _FINE_RATIO, "fine_agree": _FINE_AGREE,
                "fine_support": _FINE_SUPPORT,
                "coarse": None if coarse is None else self.entries[coarse[0]].artwork_id,
                "fine_pick": None if decided is None else self.entries[decided[0]].artwork_id})
        if coarse is not None and decided is not None and coarse[0] != decided[0]:
            return None  # the two disagree: no id rather than a guess
        if decided is None and coarse is not None and best - second > self.impostor_margin:
            decided = coarse  # a margin none of the catalogue's own works reaches as impostors
        if decided is None:
            return None
        return Match(self.entries[decided[0]].artwork_id, round(decided[1] * 0.6, 4), 0,
                     "signature")

    def _registered_support(self, square: np.ndarray, owner: int, homography: np.ndarray,
                            ref_xy: np.ndarray, query_xy: np.ndarray) -> float | None:
        """How well the view's appearance fits ``owner``'s where the geometry matched them.

        The fine images' correlation (:func:`_fine_image`'s channels, jointly)
        once the view is registered onto the reference by ``homography``
        (reference square -> view square), weighted by Gaussians around the
        fit's inliers (reference coordinates): where the view shows the
        reference, so a visitor in front of the painting does not count, and
        the tones and colours there do. ``None`` for a plain view (nothing to
        correlate, as :meth:`_fine_scores`).
        """
        moved = cv2.perspectiveTransform(ref_xy.reshape(-1, 1, 2).astype(np.float32),
                                         homography).reshape(-1, 2)
        # The fit's inliers (the RANSAC threshold of the fit, 6 px), counted per fine pixel
        # and spread over about a feature's own patch (4 px here, 20 px of the square:
        # ORB's patch is 19 px at its finest level).
        inliers = ref_xy[np.linalg.norm(moved - query_xy, axis=1) < 6.0] * (_FINE / SQUARE)
        counts = np.zeros((_FINE, _FINE), np.float32)
        cells = np.clip(np.round(inliers).astype(np.int64), 0, _FINE - 1)
        np.add.at(counts, (cells[:, 1], cells[:, 0]), 1.0)
        spread = cv2.GaussianBlur(counts, (0, 0), 4.0)
        weight = spread / max(float(spread.sum()), 1e-9)
        view = _fine_image(square)
        inner = view[_FINE_SHIFT:_FINE - _FINE_SHIFT, _FINE_SHIFT:_FINE - _FINE_SHIFT]
        if float((inner ** 2).mean(axis=(0, 1)).sum()) < _FINE_STRUCTURE:
            return None
        scale = np.diag([_FINE / SQUARE, _FINE / SQUARE, 1.0])
        registered = cv2.warpPerspective(view, scale @ homography @ np.linalg.inv(scale),
                                         (_FINE, _FINE),
                                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                         borderMode=cv2.BORDER_REPLICATE)
        w = weight[..., None]
        a = registered - (w * registered).sum(axis=(0, 1))
        b = self._fine[owner] - (w * self._fine[owner]).sum(axis=(0, 1))
        return float((w * a * b).sum() / np.sqrt((w * a * a).sum() * (w * b * b).sum() + 1e-9))

    def _fine_scores(self, square: np.ndarray, candidates: list[int]) -> np.ndarray | None:
        """How well each candidate's 64x64 appearance fits the view (``None``: a plain view).

        Normalised correlation (:func:`_fine_image`'s channels, jointly), the
        view's centre searched over shifts up to ``_FINE_SHIFT`` px against
        each reference. A match needs ``_FINE_THRESHOLD`` and a residual
        ``1 - correlation`` at most ``1 / _FINE_RATIO`` of the runner-up's:
        the right reference of a dim or blurred view leaves ~0.01-0.1, a
        look-alike two to ten times that.
        """
        view = _fine_image(square)
        inner = view[_FINE_SHIFT:_FINE - _FINE_SHIFT, _FINE_SHIFT:_FINE - _FINE_SHIFT]
        # A plain view (a bare wall, sensor noise) has nothing to correlate
        # (and a constant one would correlate 1 with anything): its channels,
        # z-scored against the std floor, stay near zero (0.1-0.3 in all for
        # noise of sigma 8-15; a painting, even dim, 0.9 or more).
        if float((inner ** 2).mean(axis=(0, 1)).sum()) < _FINE_STRUCTURE:
            return None
        return np.array([float(cv2.matchTemplate(self._fine[o], inner,
                                                 cv2.TM_CCOEFF_NORMED).max())
                         for o in candidates])

    def reference_view(self, artwork_id: str, size: int) -> np.ndarray:
        """The work's reference image as a ``size`` x ``size`` view of the picture (the whole
        image is the picture), as capture describes a view; InputError naming the file
        where it cannot be read, or the id where it is not catalogued."""
        entry = self.entry(artwork_id)
        if entry is None:
            raise InputError(f"{artwork_id!r} is not in the catalogue {self.folder}")
        return whole_view(read_image(self.folder / entry.file, REDUCED_AT_LEAST), size)

    def closest_outline(self, frame_bgr: np.ndarray, artwork_id: str,
                        quads: Sequence[np.ndarray]) -> np.ndarray:
        """Of ``quads`` (frame px) where work ``artwork_id`` may lie, the one whose view fits
        its reference best: the first (the default: a location, or the quad finder's
        outline) unless another (the quad finder's outlines at a location's place, tried in
        their four orientations; the picture a feature match places inside an outline)
        fits clearly better.

        The fit is :meth:`_fine_scores`' correlation of the 64x64 appearance;
        another quad replaces the first only where it fits as a recognised view
        must (``_FINE_THRESHOLD``) and by ``_OUTLINE_MARGIN`` more: the default
        is usually right, and under a real room's light a reference and its
        view often correlate too little for the comparison to mean anything.
        """
        from capture.detect import rectify

        owner = next((i for i, e in enumerate(self.entries) if e.artwork_id == artwork_id), None)
        first = np.asarray(quads[0], np.float32).reshape(4, 2)
        if owner is None or len(quads) < 2:
            return first
        reference = self._fine[owner]

        def fit(quad: np.ndarray) -> float:
            view = _fine_image(rectify(frame_bgr, quad, _FINE * 2))
            inner = view[_FINE_SHIFT:_FINE - _FINE_SHIFT, _FINE_SHIFT:_FINE - _FINE_SHIFT]
            return float(cv2.matchTemplate(reference, inner, cv2.TM_CCOEFF_NORMED).max())

        best, best_fit = first, max(fit(first) + _OUTLINE_MARGIN, _FINE_THRESHOLD)
        for quad in quads[1:]:
            quad = np.asarray(quad, np.float32).reshape(4, 2)
            for turn in range(4):
                turned = np.roll(quad, -turn, axis=0)
                score = fit(turned)
                if score > best_fit:
                    best, best_fit = turned, score
        return best

    # -- location in a whole frame --

    def locate(self, frame_bgr: np.ndarray, max_results: int = MAX_LOCATED,
               min_area_fraction: float = 0.002,
               only: Collection[str] | None = None,
               near: np.ndarray | None = None, fine: bool = False) -> list[Location]:
        """Known paintings in ``frame_bgr`` found by reference-to-frame homography, best first.

        ``only`` restricts the search to those ids (the live loop re-finds the
        painting it is following; matching against one reference is cheap).
        ``near`` (a quad, frame px) restricts it to that quad's neighbourhood
        (its bounding box grown by ``_NEAR_MARGIN`` of its size), at the same
        scale as the whole frame, or smaller where the quad would be larger than
        ``_NEAR_SIDE`` there: what a new arrival the quad finder or the tracker
        found costs, a fraction of the whole frame's search. It ends
        at the first work placed exactly (``min_inliers`` ratio-test inliers)
        where that quad is (IoU ``_ARRIVED``): a new arrival is one work.

        Coarse to fine: a work with a consistent but too weak a fit at
        ``locate_width`` (a small, far or dim work has few features there) is
        looked at again near that fit at ``_FINER`` times the scale, and stands
        if the fit there is evidence enough. So is a ``near`` neighbourhood
        where nothing was located, if small (a small picture the quad finder
        saw; ``_FINER_NEAR_PIXELS``): a fit there stands on ``min_inliers``
        or on most of the reference's votes agreeing with it (``rule``
        ``"consistent"`` of :meth:`_locate_at`). So is a work placed in the
        whole frame on a weak or a per-work fit to simulated votes
        (:meth:`_rough`), if small: a fit to frontal votes there replaces it.

        ``min_area_fraction``: the smallest share of the frame a location may
        cover (a whole frame's search; a 50 px work is 0.0027 of 1280x720).

        ``fine`` (a still, or a search with time to spare; not with ``near``):
        the whole frame is also looked at ``_FINER`` times finer, with as many
        features per pixel, for works the coarse pass did not place (a small
        or far work, or an octagonal frame's dark picture, has too few
        features at ``locate_width`` to be fitted, even weakly). About four
        times the coarse pass's cost.
        """
        began = time.perf_counter()
        height, width = frame_bgr.shape[:2]
        scale = min(1.0, self.locate_width / width)
        # looked for at the whole frame's scale: a large work's, below, may shorten the
        # streak past what shows
        streak = _FrameStreak(frame_bgr, scale)
        if near is not None:  # a large work is looked at no larger than _NEAR_SIDE
            extent = float((near.max(axis=0) - near.min(axis=0)).max())
            scale = min(scale, _NEAR_SIDE / max(extent, 1.0))
        found, weak = self._locate_at(frame_bgr, scale, near, only, min_area_fraction,
                                      streak=streak)
        finer = min(1.0, _FINER * scale)

        def small_enough(quad: np.ndarray) -> bool:  # its neighbourhood, finer, is cheap
            return _near_pixels(quad, width, height) * finer ** 2 \
                <= _FINER_NEAR_PIXELS * width * height * scale ** 2

        if finer > scale and near is not None and not any(
                overlap_fraction(near, f.quad) > _LOCATE_SAME_PLACE and not f.simulated
                for f in found) and small_enough(near):
            found += self._locate_at(frame_bgr, finer, near, only, min_area_fraction,
                                     rule="consistent", streak=streak)[0]
        elif finer > scale and near is None:
            # A weak or per-work fit on simulated votes is rough (their points come from a
            # squeezed or shrunk reference): looked at again finer, near it, for that work.
            for rough in [f for f in found if self._rough(f) and small_enough(f.quad)]:
                found += self._locate_at(frame_bgr, finer, rough.quad, [rough.artwork_id],
                                         min_area_fraction, rule="consistent",
                                         streak=streak)[0]
        found += self._second_looks(frame_bgr, weak, scale, finer, found, min_area_fraction,
                                    streak)
        if fine and near is None and finer > scale:
            more, weak = self._locate_at(frame_bgr, finer, None, only, min_area_fraction,
                                         exclude={f.artwork_id for f in found
                                                  if not self._rough(f)},
                                         sift=self._fine_frame_sift)
            found += more
            found += self._second_looks(frame_bgr, weak, finer, min(1.0, _FINER * finer),
                                        found, min_area_fraction, streak)
        # A work's fit on frontal votes, where it has one, is more exact than a rough one on
        # simulated votes at the same place, whatever their inliers (counted at two scales).
        found = [f for f in found if not self._rough(f) or not any(
            not other.simulated and other.artwork_id == f.artwork_id
            and overlap_fraction(f.quad, other.quad) > _LOCATE_SAME_PLACE for other in found)]
        # A work holding part of another (a detail, a copy of half of it) fits that part,
        # often on more inliers than the whole work (at another scale, or with the
        # simulated views' votes): its evidence lies in the other's quad, not the other way.
        found = [f for f in found if not any(
            other.artwork_id != f.artwork_id and other.inliers >= self.min_inliers
            and _part_of(f, other) for other in found)]
        found.sort(key=lambda r: r.inliers, reverse=True)
        kept: list[Location] = []
        for location in found:  # one work per place: the best supported
            if all(overlap_fraction(location.quad, other.quad) < _LOCATE_SAME_PLACE
                   for other in kept):
                kept.append(location)

        self._note("locate_ms", began)
        if near is None and only is None:
            self._note("fine_search_ms" if fine else "search_ms", began)
        return kept[:max_results]

    def _rough(self, location: Location) -> bool:
        """Whether ``location`` stood on simulated votes, its corners from a fit weaker
        than ``min_inliers`` ratio-test inliers (:attr:`Location.exact`): a coarse fit,
        which a fit on frontal votes of the same work betters."""
        return location.simulated and not location.exact

    def _second_looks(self, frame_bgr: np.ndarray, weak: list[tuple[str, np.ndarray]],
                      was: float, scale: float, found: list[Location],
                      min_area_fraction: float, streak: _FrameStreak | None = None,
                      ) -> list[Location]:
        """The strongest ``_FINER_LOOKS`` weak fits of a pass at scale ``was``
        (:meth:`_locate_at`) not at a place already ``found``, each looked at again near
        its quad at the finer ``scale``, standing on ``min_inliers`` there. Where ``was``
        is already the frame's own pixels there is no finer look: only the one among the
        work's own features, at ``was``. ``streak``: the frame's motion streak
        (:class:`_FrameStreak`) taken out of each neighbourhood; None: each looks for
        its own."""
        more: list[Location] = []
        finer = scale > was
        features: dict[tuple[float, int, int, int, int], _Features] = {}
        for artwork_id, quad in weak[:_FINER_LOOKS]:
            if all(overlap_fraction(quad, f.quad) < _LOCATE_SAME_PLACE for f in found):
                # First among the whole catalogue's features (its per-work matches keep
                # what a work shares with others); where that places nothing, among the
                # work's own (a dim or small work's true matches fail the ratio test
                # against thousands of works' features), finer, then at the weak fit's
                # own scale (a dark, blurred work's features are its coarse ones). At the
                # same scale the first look would repeat the pass's own matches.
                here = self._locate_at(frame_bgr, scale, quad, [artwork_id],
                                       min_area_fraction, rule="strict",
                                       features=features, streak=streak)[0] if finer else []
                for at in ([scale, was] if finer else [was]):
                    if here:
                        break
                    here = self._locate_at(frame_bgr, at, quad, [artwork_id],
                                           min_area_fraction, rule="strict", guided=True,
                                           features=features, streak=streak)[0]
                more += here
        return more

    def _locate_at(self, frame_bgr: np.ndarray, scale: float, near: np.ndarray | None,
                   only: Collection[str] | None, min_area_fraction: float,
                   rule: str = "all", exclude: Collection[str] = (),
                   sift: cv2.SIFT | None = None, guided: bool = False,
                   features: dict[tuple[float, int, int, int, int], _Features] | None = None,
                   streak: _FrameStreak | None = None,
                   ) -> tuple[list[Location], list[tuple[str, np.ndarray]]]:
        """One pass of :meth:`locate` with the frame at ``scale``: the locations, and the
        (id, quad in frame px) of consistent fits too weak to stand, strongest first.

        ``rule``: which evidence a location stands on (:meth:`_enough_inliers`):
        ``"all"``; ``"consistent"``, not a reference's dominant share of the votes
        (a second look at a small neighbourhood sees few other works' votes, so a
        dominant share of them says little); ``"strict"``, ``min_inliers`` only.
        ``exclude``: works already placed, not verified again (their votes still
        count against the others'). ``sift``: the feature detector (default: the
        whole frame's, ``_FRAME_FEATURES``). ``guided`` (with ``only``): the frame's
        features are matched among those works' features alone
        (:meth:`_vote_guided`). ``features``: the searched part's features at a scale, by
        (scale, its bounds), computed once for the looks that share them (the default
        detector's only). ``streak``: the whole frame's motion streak, taken out of a
        neighbourhood (``near``) before its features are (a pan smears every point alike,
        and a neighbourhood is often too small to show it); the whole frame is looked at
        for its own.
        """
        height, width = frame_bgr.shape[:2]
        left, top, right, bottom = 0, 0, width, height
        if near is not None:
            low, high = near.min(axis=0), near.max(axis=0)
            grow = _NEAR_MARGIN * (high - low)
            left, top = (int(max(0.0, v)) for v in low - grow)
            right = int(min(float(width), float(high[0] + grow[0])))
            bottom = int(min(float(height), float(high[1] + grow[1])))
            if right - left < 16 or bottom - top < 16:
                return [], []
        key = (scale, left, top, right, bottom)
        if features is not None and sift is None and key in features:
            grey, keypoints, descriptors = features[key]
        else:
            grey, keypoints, descriptors = self._features(
                frame_bgr[top:bottom, left:right], scale, sift or self._frame_sift,
                "own" if near is None or streak is None else streak.at(scale))
            if features is not None and sift is None:
                features[key] = (grey, keypoints, descriptors)
        found: list[Location] = []
        weak: list[tuple[int, str, np.ndarray]] = []
        if descriptors is None or len(keypoints) < _WEAK_INLIERS:
            return found, []
        frame_xy = _points(keypoints)
        floor = min_area_fraction * width * height * scale * scale
        # Nearest neighbours over the whole catalogue even when looking for a few works:
        # the ratio test then also rejects what those works share with others (not when
        # ``guided``: a second look at a weak fit that placed nothing that way).
        query = _root_sift(descriptors)
        skip = [i for i, e in enumerate(self.entries) if e.artwork_id in exclude] \
            if exclude else []
        looked_for = None if only is None else set(only) - set(exclude)
        wanted = None if looked_for is None else [
            i for i, e in enumerate(self.entries) if e.artwork_id in looked_for]
        fitted: dict[int, tuple[int, np.ndarray]] = {}
        # First the frontal features' votes alone, as if no simulated ones were held (their
        # chance votes would raise every runner-up); then, for the works not placed, the
        # simulated ones' too: a work seen from far to its side, or from far away.
        # The simulated features are searched only when the frontal pass did not end the
        # search (a new arrival placed there): their nearest-neighbour search is not needed.
        def passes() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            if guided and wanted is not None:
                yield (pairs := self._vote_guided(query, _LOCATE_RATIO, wanted)), pairs
                return
            frontal, frontal_work = self._vote_frontal(query, _LOCATE_RATIO)
            yield frontal, frontal_work
            simulated, simulated_work = self._vote_simulated(query, _LOCATE_RATIO, frontal,
                                                             frontal_work)
            if len(simulated) or len(simulated_work):
                yield (np.concatenate([frontal, simulated]),
                       np.concatenate([frontal_work, simulated_work]))

        def placed(fit: _Fit | None) -> np.ndarray | None:  # a fit's quad in the frame
            if fit is None or not _plausible_shape(fit.quad):
                return None
            quad = (fit.quad / scale + (left, top)).astype(np.float32)
            return quad if _in_view(quad, width, height) else None

        for second, (votes, work_votes) in enumerate(passes()):
            owners = wanted if wanted is not None else _top_owners(
                votes, self._native_owner, _LOCATE_CANDIDATES, skip)
            tally = np.bincount(self._native_owner[votes[:, 1]], minlength=len(self.entries))
            for owner in owners:
                if any(f.artwork_id == self.entries[owner].artwork_id for f in found):
                    continue
                # The floor is the frame's, not the searched part's: a far work is a
                # small share of a whole frame (a view's floor, 1/200 of it, is a 68 px
                # square in a 1280x720 frame, and refused every work smaller).
                strict, loose = self._fit(owner, votes, work_votes, frame_xy,
                                          grey.shape[1::-1], floor)
                runner_up = int(np.delete(tally, owner).max(initial=0))
                location = None
                if strict is not None and (in_frame := placed(strict)) is not None:
                    inliers, votes_for, distinct = strict.inliers, strict.votes, strict.distinct
                    # A weak fit's evidence is its inliers at distinct points: a frame
                    # point SIFT gave two orientations, matched to a reference point and
                    # its copy in a simulated view, is one piece of evidence, not two.
                    enough = inliers >= self.min_inliers if rule == "strict" else \
                        self._enough_inliers(inliers, votes_for, max(runner_up, 1),
                                             dominance=rule == "all") \
                        and (inliers >= self.min_inliers or distinct >= _LOCATE_MIN_VOTES)
                    if votes_for >= _LOCATE_MIN_VOTES and enough:
                        # ranked by the per-work matches it explains, where more
                        ranked = max(inliers, loose.inliers if loose is not None else 0)
                        location = Location(
                            self.entries[owner].artwork_id, in_frame, _inlier_score(ranked),
                            ranked, bool(second), strict.support / scale + (left, top),
                            exact=inliers >= self.min_inliers)
                    elif inliers > fitted.get(owner, (0, in_frame))[0]:
                        fitted[owner] = (inliers, in_frame)
                if location is None and loose is not None \
                        and (in_frame := placed(loose)) is not None:
                    location = Location(
                        self.entries[owner].artwork_id, in_frame,
                        _inlier_score(loose.inliers), loose.inliers, bool(second),
                        loose.support / scale + (left, top), exact=False)
                if location is not None:
                    found.append(location)
                    fitted.pop(owner, None)
                    if near is not None and location.exact \
                            and quad_iou(location.quad, near) >= _ARRIVED:
                        # A new arrival is one work: placed exactly where the quad is,
                        # the neighbourhood's other candidates (chance votes, a work at
                        # its margin) are not verified.
                        return found, []
        weak = [(inliers, self.entries[owner].artwork_id, quad)
                for owner, (inliers, quad) in fitted.items()]
        weak.sort(key=lambda w: w[0], reverse=True)
        return found, [(artwork_id, quad) for _, artwork_id, quad in weak]

    def _features(self, part_bgr: np.ndarray, scale: float, sift: cv2.SIFT,
                  blur: MotionBlur | None | Literal["own"] = "own") -> _Features:
        """``part_bgr`` at ``scale``, in grey (deblurred where a pan streaked it), with its
        SIFT keypoints and descriptors (None where it has none). ``blur``: the streak to
        take out (px at ``scale``), or ``"own"``: the one found in the part itself."""
        part_h, part_w = part_bgr.shape[:2]
        small = part_bgr if scale == 1.0 else cv2.resize(
            part_bgr, (max(1, round(part_w * scale)), max(1, round(part_h * scale))),
            interpolation=cv2.INTER_AREA)
        # Plain grey, not CLAHE: SIFT normalises its descriptors' contrast itself, and a
        # locally equalised frame and reference disagree (2 fewer works found on real photos).
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        if blur == "own":
            blur = estimate_motion_blur(grey)
        if blur is not None:  # a pan during the exposure: SIFT of a streaked frame is lost
            grey = deblur(grey, blur)
            self.deblurred += 1
        keypoints, descriptors = sift.detectAndCompute(grey, None)
        return grey, keypoints, descriptors

    def _fit(self, owner: int, votes: np.ndarray, work_votes: np.ndarray,
             frame_xy: np.ndarray, frame_size: tuple[int, int], min_area: float,
             ) -> tuple[_Fit | None, _Fit | None]:
        """``owner``'s reference fitted into the frame by RANSAC two ways: to its
        ratio-test ``votes`` (None where there are too few of them or of inliers, or the
        reference maps to under ``min_area`` px), and to its per-work matches
        (``work_votes``, :func:`_matches`; None unless ``min_inliers`` of them, at
        distinct points, are inliers).

        In a big catalogue many of a work's true matches fail the ratio test (another
        work's feature is about as near; or the catalogue holds a detail or a copy of
        the work), and only the per-work matches keep enough of them to fit. They are
        looser (a chance match for every work among a feature's neighbours), so a fit
        on them counts only when strong, and its corners are less exact: the
        ratio-test fit's stand where it does (:meth:`_locate_at`).
        """
        pairs = votes[self._native_owner[votes[:, 1]] == owner]
        strict = self._homography(owner, pairs, frame_xy, frame_size, min_area)
        more = work_votes[self._native_owner[work_votes[:, 1]] == owner]
        loose = self._homography(owner, more, frame_xy, frame_size, min_area) \
            if len(more) > len(pairs) and len(more) >= self.min_inliers else None
        if loose is not None and (loose.inliers < self.min_inliers or _distinct_inliers(
                self._native_xy[more[:, 1]], frame_xy[more[:, 0]], loose.homography,
                at_most=self.min_inliers) < self.min_inliers):
            loose = None
        return (
            None if strict is None else _Fit(
                strict.inliers, strict.quad, len(pairs),
                strict.inliers if strict.inliers >= self.min_inliers else _distinct_inliers(
                    self._native_xy[pairs[:, 1]], frame_xy[pairs[:, 0]], strict.homography),
                strict.support),
            None if loose is None else _Fit(loose.inliers, loose.quad, len(more),
                                            loose.inliers, loose.support))

    def _homography(self, owner: int, pairs: np.ndarray, frame_xy: np.ndarray,
                    frame_size: tuple[int, int], min_area: float) -> _Homography | None:
        """``owner``'s reference fitted to ``pairs`` (frame feature, reference feature),
        or None where there are under ``_WEAK_INLIERS`` of either or the fit is
        implausible."""
        if len(pairs) < _WEAK_INLIERS:
            return None
        ref_w, ref_h = (int(v) for v in self._native_size[owner])
        source, target = self._native_xy[pairs[:, 1]], frame_xy[pairs[:, 0]]
        homography, inliers = _verified_homography(
            source, target, (ref_w, ref_h), frame_size, threshold=_LOCATE_THRESHOLD,
            min_area=min_area)
        if homography is None or inliers < _WEAK_INLIERS:
            return None
        corners = np.array([[0, 0], [ref_w, 0], [ref_w, ref_h], [0, ref_h]], np.float32)
        return _Homography(homography, inliers,
                           cv2.perspectiveTransform(corners[None], homography)[0],
                           target[_within(source, target, homography)])

    # -- internals --

    def _enough_inliers(self, inliers: int, votes: int, runner_up: int,
                        dominance: bool = True) -> bool:
        """Whether a located homography is evidence enough: ``min_inliers`` inliers, or (a
        small, dim or half-hidden work has few features) ``_LOCATE_MIN_VOTES`` when most of
        the reference's votes agree with it, or when the reference has far more votes than
        any other (``dominance``): chance matches spread over the frame and over the
        catalogue, and rarely agree on one homography of one work.
        """
        return inliers >= self.min_inliers or inliers >= _LOCATE_MIN_VOTES and (
            inliers >= _LOCATE_CONSISTENT * votes
            or dominance and votes >= _LOCATE_DOMINANT * runner_up)

    def _vote_frontal(self, query: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
        """(query index, reference feature index) pairs against the references' frontal
        SIFT features: those passing the ratio test, and the per-work matches
        (:func:`_matches`)."""
        return _matches(self._native_matcher, query, ratio, 0, self._native_owner,
                        self._native_xy, copies=False)

    def _vote_guided(self, query: np.ndarray, ratio: float,
                     owners: Sequence[int]) -> np.ndarray:
        """(query index, reference feature index) pairs of the ratio test among the
        features of ``owners`` alone, frontal and simulated (a copy of a point from
        another view is no rival): a hypothesis verified, a work near the place a weak
        fit put it. In a catalogue of thousands another work's feature is often about as
        near as a dim or small work's true match, which fails the ratio test against all
        of them; among the work's own features it is clearly the nearest."""
        rows = np.flatnonzero(np.isin(self._native_owner, np.asarray(owners)))
        pairs, _ = _matches(_kd_matcher(_unit(self._native_desc[rows])), query, ratio, 0,
                            self._native_owner[rows], self._native_xy[rows], copies=True)
        pairs[:, 1] = rows[pairs[:, 1]]
        return pairs

    def _vote_simulated(self, query: np.ndarray, ratio: float, frontal: np.ndarray,
                        frontal_work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same pairs (:meth:`_vote_frontal` gave ``frontal`` and ``frontal_work``)
        against the simulated views' features (``SIMULATED_VIEWS``; empty without any):
        the ratio test's for query features with no match among the frontal ones; the
        per-work matches only for works the frontal features gave that query feature none
        of (a copy is no new match).

        A reference point is held once per simulated view that finds it: a query feature's
        runner-up that is the same reference's same point (within ``_SAME_POINT`` px) is
        its copy, not a rival, so the next one is.
        """
        rest = np.setdiff1d(np.arange(len(query)), frontal[:, 0])
        simulated, simulated_work = _matches(self._simulated_matcher, query[rest], ratio,
                                             self._frontal, self._native_owner,
                                             self._native_xy, copies=True)
        simulated[:, 0] = rest[simulated[:, 0]]
        simulated_work[:, 0] = rest[simulated_work[:, 0]]
        if len(simulated_work) and len(frontal_work):
            def key(pairs: np.ndarray) -> np.ndarray:  # one number per (query, work)
                return pairs[:, 0] * len(self.entries) + self._native_owner[pairs[:, 1]]
            simulated_work = simulated_work[~np.isin(key(simulated_work), key(frontal_work))]
        return simulated, simulated_work

    def _vote_among(self, query: np.ndarray, owners: np.ndarray) -> np.ndarray:
        """(query index, database index) ratio-test pairs against the square features of
        ``owners`` only (brute force: a shortlist of references is a few thousand features)."""
        rows = np.concatenate([np.arange(self._square_start[o], self._square_start[o + 1])
                               for o in owners]) if len(owners) else np.zeros(0, np.int64)
        if len(rows) < 2:
            return np.zeros((0, 2), np.int64)
        pairs = [(pair[0].queryIdx, int(rows[pair[0].trainIdx]))
                 for pair in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(
                     query, self._square_desc[rows], k=2)
                 if len(pair) == 2 and pair[0].distance < _RATIO * pair[1].distance]
        return np.array(pairs, np.int64).reshape(-1, 2)

    def _note(self, key: str, began: float) -> None:
        timings = self.stats[key]
        timings.append(1000.0 * (time.perf_counter() - began))
        if len(timings) > 10000:
            del timings[:5000]


@dataclass(frozen=True, eq=False)  # holds arrays: == is identity
class CurrentIndex:
    """A catalogue folder's index, current (:func:`current_index`)."""

    entries: list[CatalogueEntry]
    arrays: dict[str, np.ndarray]  # as cached
    rebuilt: bool  # built now (the folder changed), not loaded as it was
    reused: int  # works of a rebuilt index taken unchanged from the index before
    #: Reference images left out, unreadable (``leave_out_unreadable``): why, by path in
    #: the folder; their works are not in ``entries``.
    left_out: dict[str, str] = field(default_factory=dict)


def current_index(folder: str | Path, cache_dir: str | Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  waiting: Callable[[], None] | None = None, *,
                  leave_out_unreadable: bool = False) -> CurrentIndex:
    """The folder's index, loaded from its cache, or built (and cached) if the folder changed:
    what :meth:`Catalogue.open` opens, and all ``art2mus index`` needs (opening it for
    search, its k-d trees, takes longer than loading it).

    A rebuild indexes only the references added or changed since the cached index
    (their file's size or mtime): the others' features are taken from it, so a
    corrected title or one new work in a catalogue of thousands costs seconds, not
    minutes. One process of a machine builds it at a time (:func:`_one_builder`;
    ``waiting()`` is called when this one waits for another). ``progress(done, total)``
    is called per reference indexed.

    An image that cannot be read (empty, truncated, not an image, a link to nothing) is an
    InputError naming it; with ``leave_out_unreadable`` (a running room: one bad copy must
    not cost it every other work) its work is left out instead, and named in
    ``left_out``. Such an index is saved (the works read are not indexed again) but
    never taken as current: the next open, and ``art2mus index``, read those images
    again, and name them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"catalogue: expected a folder of reference images, got no folder "
                         f"at {folder}")
    entries = read_entries(folder)
    fingerprint = folder_fingerprint(folder)
    cache = Path(cache_dir) / INDEX_FILE if cache_dir is not None else folder / INDEX_FILE
    arrays = _load_cache(cache, fingerprint)
    if arrays is not None:
        return CurrentIndex(entries, arrays, rebuilt=False, reused=0)
    with _one_builder(cache, waiting):  # another process may have built it meanwhile
        arrays = _load_cache(cache, fingerprint)
        if arrays is not None:
            return CurrentIndex(entries, arrays, rebuilt=False, reused=0)
        began = time.perf_counter()
        arrays, reused, left_out = _build_index(folder, entries, progress,
                                                _previous_works(cache, folder, entries),
                                                leave_out_unreadable=leave_out_unreadable)
        # An index without some of the folder's works is not the folder's: a fingerprint
        # no folder has keeps it from being taken as current (else a restart, and
        # `art2mus index`, would say nothing of the images left out).
        arrays["fingerprint"] = np.array(
            f"{fingerprint} less {len(left_out)} unreadable" if left_out else fingerprint)
        _save_cache(cache, arrays)
    if left_out:
        unread = {name for name, _ in left_out}
        entries = [entry for entry in entries if entry.file not in unread]
    log.info("catalogue %s: indexed %d artworks in %.1f s, %d unchanged taken from the "
             "index before (cached in %s)", folder, len(entries) - reused,
             time.perf_counter() - began, reused, cache)
    return CurrentIndex(entries, arrays, rebuilt=True, reused=reused, left_out=dict(left_out))


def whole_view(image: np.ndarray, size: int) -> np.ndarray:
    """An image that is all picture (a catalogue reference) rectified whole to ``size`` x
    ``size``, as a camera view of the picture is."""
    from capture.detect import rectify

    height, width = image.shape[:2]
    corners = np.array([(0, 0), (width - 1, 0), (width - 1, height - 1), (0, height - 1)],
                       np.float32)
    return rectify(image, corners, size)


def _index_params() -> str:
    """What a work's part of the index depends on besides its image: the index version
    and the parameters it was built with."""
    return (f"art2mus-catalogue v{INDEX_VERSION} {SQUARE} {NATIVE_LONG_SIDE} "
            f"{_REFERENCE_FEATURES} {_NATIVE_FEATURES} {_SIFT_CONTRAST} {_THUMB} "
            f"{_TILTS} {_TILTED_FEATURES} {_FAR_SIDES} {_FAR_FEATURES} {_FINE}")


def _file_key(folder: Path, name: str) -> str:
    """A file of the folder as the fingerprint sees it: its path there, size and mtime; or,
    where it cannot be looked at (a link to nothing, a loop of links), why not. Such a
    file is refused where it is read (:func:`unreadable_images` names it, ``art2mus
    index`` with the images it cannot read), not here: the live capture fingerprints
    its folder every few seconds, and mending the link changes the fingerprint."""
    try:
        stat = (folder / name).stat()
    except OSError as error:
        return f"{name}\0unreadable\0{error.errno}"
    return f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}"


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over the folder's images and metadata (TOML or CSV: names, sizes, mtimes) and
    the index parameters (:func:`_index_params`)."""
    digest = hashlib.sha256(_index_params().encode())
    for name in sorted(catalogue_images(folder) + metadata_files(folder)):
        digest.update(f"{_file_key(folder, name)}\n".encode())
    return digest.hexdigest()


def metadata_files(folder: Path) -> list[str]:
    """The files at the top of ``folder`` that may describe its works: ``catalogue.toml``
    and CSV files. Hidden files are not the museum's (macOS's ``._index.csv`` beside an
    export copied to a shared drive)."""
    return [p.name for p in folder.iterdir() if not p.name.startswith(".")
            and (p.name == METADATA_FILE or p.suffix.lower() == ".csv")]


def unreadable_images(folder: Path) -> list[str]:
    """The reference images of ``folder`` (:func:`catalogue_images`) that cannot be read,
    each as ``name (why)``: a link to nothing or a loop of links, a folder named like an
    image (:func:`capture.images.file_problem`; nothing is decoded, so it is cheap)."""
    found = []
    for name in catalogue_images(folder):
        if (why := file_problem(folder / name)) is not None:
            found.append(f"{name} ({why})")
    return found


def read_entries(folder: Path, notes: list[str] | None = None) -> list[CatalogueEntry]:
    """The catalogue's works (ids, files, metadata) as the folder and its TOML or CSV
    describe them (see the module docstring).

    Builds no index: what a listing (the console's catalogue page) needs. InputError
    names the metadata file, entry or row, or the folder, at fault. What loads but is
    likely a slip (a TOML key we do not read, a CSV year that is not one) is appended to
    ``notes``, one line each, or logged as a warning where ``notes`` is None.
    """
    said: list[str] = [] if notes is None else notes
    try:
        return _read_entries(folder, said)
    finally:
        if notes is None:
            for note in said:
                log.warning("%s", note)


def _read_entries(folder: Path, notes: list[str]) -> list[CatalogueEntry]:
    images = catalogue_images(folder)
    if not images:
        raise InputError(f"catalogue {folder}: expected reference images "
                         f"({', '.join(IMAGE_SUFFIXES)}), found none")
    toml_path = folder / METADATA_FILE
    if os.path.lexists(toml_path) and (why := file_problem(toml_path, "a file")) is not None:
        # else a link to nothing, or a loop, would leave the works' metadata out unsaid
        raise InputError(f"catalogue {toml_path}: cannot read it: {why}")
    table = _metadata_table(folder)
    if table is not None and toml_path.is_file():
        raise InputError(f"catalogue {folder}: both {METADATA_FILE} and {table.name} describe "
                         f"the works; keep one")
    if table is not None:
        described = _csv_entries(table, images, notes)
    elif toml_path.is_file():
        described = _toml_entries(toml_path, images, notes)
    else:
        described = {}
    entries = [described.get(name) or CatalogueEntry(
        _artwork_id(Path(name).stem, f"catalogue {folder}, {name!r} (no id given: its file "
                                     f"name is its id)"), name)
               for name in images]
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.artwork_id in seen:
            raise InputError(f"catalogue {folder}: expected unique artwork ids, got "
                             f"{entry.artwork_id!r} for both {seen[entry.artwork_id]} and "
                             f"{entry.file}")
        seen[entry.artwork_id] = entry.file
    return entries


def catalogue_images(folder: Path) -> list[str]:
    """The reference images under ``folder``, sub-folders too (an export sorted by room or
    department): paths relative to it, ``/``-separated, sorted. Hidden files and folders
    (a name starting with ``.``: a viewer's thumbnails, a sync tool's) are left out.

    A link to a folder is followed (a room's export kept on another disk, linked in: its
    works were left out unsaid). A folder reached a second time, by a link back up to
    a folder above it (a loop) or by a second link to it, is read once, under the first
    name the walk reaches it by."""
    found: list[str] = []
    seen = {os.path.realpath(folder)}
    for root, folders, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(folders):
            if name.startswith("."):
                continue
            real = os.path.realpath(os.path.join(root, name))
            if real not in seen:
                seen.add(real)
                kept.append(name)
        folders[:] = kept
        found += [(Path(root) / name).relative_to(folder).as_posix() for name in files
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


class _ImageNames:
    """A metadata file's way to the catalogue's images: by path in the folder, or by bare
    file name where one image has it."""

    def __init__(self, images: list[str]) -> None:
        self.paths = set(images)
        self.by_name: dict[str, list[str]] = {}
        for image in images:
            self.by_name.setdefault(image.rsplit("/", 1)[-1], []).append(image)
        # paths and bare names (of one image), case folded: what a name differing only in
        # case meant
        self._folded: dict[str, list[str]] = {}
        for known in sorted({*self.paths, *(bare for bare, having in self.by_name.items()
                                            if len(having) == 1)}):
            self._folded.setdefault(known.casefold(), []).append(known)

    def find(self, name: str, where: str) -> str | None:
        """The image ``name`` names, or None where none does. InputError (``where``: the
        entry) where two or more images have that bare name."""
        if name in self.paths:
            return name
        having = self.by_name.get(name, []) if "/" not in name else []
        if len(having) > 1:
            raise InputError(f"{where}: {name}: two or more images have that name "
                             f"({', '.join(having)}); give its path in the folder")
        return having[0] if having else None

    def hint(self, name: str) -> str:
        """`` (did you mean '000.jpg'?)`` where an image's name differs from ``name`` only
        in case (an export written on Windows, whose names ignore case, read here where
        they do not), else ``""``."""
        close = self._folded.get(name.casefold(), [])
        return f" (did you mean {close[0]!r}?)" if len(close) == 1 else ""


#: Whole years a catalogue entry may carry (anything else is not a year of a work).
YEARS = (-50000, 2200)


#: The keys of a ``[[artwork]]`` entry that are read (:func:`_toml_entries`).
_TOML_KEYS = ("file", "id", "title", "artist", "year")


def _toml_entries(path: Path, images: list[str], notes: list[str]) -> dict[str, CatalogueEntry]:
    """The works ``catalogue.toml`` describes, by image path; InputError naming the file and
    the entry whose field is missing or of the wrong type, or two entries of one image, or a
    file with no ``[[artwork]]`` but other tables (``[[artworks]]``: every title would be
    lost unsaid). Keys we do not read are named in one note (a typo, ``titel``, would
    otherwise leave the title out unsaid; a key a museum adds on purpose still loads)."""
    try:
        data = parse_toml(path.read_text(encoding="utf-8-sig"))  # Notepad's BOM, too
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"catalogue {path}: expected valid TOML, got {error}") from None
    except OSError as error:
        raise InputError(f"catalogue {path}: cannot read it ({error.strerror or error})") from None
    others = sorted(key for key in data if key != "artwork")
    if others and "artwork" not in data:
        raise InputError(f"catalogue {path}: expected [[artwork]] tables, got only "
                         f"{', '.join(map(repr, others))}{_close_to(others, ('artwork',))}")
    if others:
        notes.append(f"catalogue {path}: left out {', '.join(map(repr, others))}: only "
                     f"[[artwork]] tables are read")
    artworks = data.get("artwork", [])
    if not isinstance(artworks, list) or not all(isinstance(item, dict) for item in artworks):
        # ``[artwork]`` (one pair of brackets) is one table, not a list of them
        got = ("a single [artwork] table" if isinstance(artworks, dict) else
               f"artwork = {shown(artworks)}")
        raise InputError(f"catalogue {path}: artwork: expected [[artwork]] tables, got {got}")
    described: dict[str, CatalogueEntry] = {}
    entry_of: dict[str, int] = {}
    unread: dict[str, list[str]] = {}  # key -> the entries that have it
    names = _ImageNames(images)
    for k, item in enumerate(artworks):
        where = f"catalogue {path}, artwork[{k}]"
        for key in item:
            if key not in _TOML_KEYS:
                unread.setdefault(key, []).append(f"artwork[{k}]")
        named = item.get("file")
        file = names.find(named, f"{where}.file") if isinstance(named, str) else None
        if file is None:
            raise InputError(f"{where}.file: expected the name of an image in {path.parent}, "
                             f"got {shown(named)}"
                             f"{names.hint(named) if isinstance(named, str) else ''}")
        if file in entry_of:  # else the last would silently win
            raise InputError(f"catalogue {path}, artwork[{entry_of[file]}] and artwork[{k}]: "
                             f"expected one entry per image, got two for {file}")
        entry_of[file] = k
        year = item.get("year")
        if year is not None and (not isinstance(year, int) or isinstance(year, bool)
                                 or not YEARS[0] <= year <= YEARS[1]):
            raise InputError(f"{where}.year: expected a whole year ({YEARS[0]} to {YEARS[1]}), "
                             f"got {year!r}")
        texts = {}
        for key in ("title", "artist"):
            value = item.get(key, "")
            if not isinstance(value, str):
                raise InputError(f"{where}.{key}: expected text (in quotes), got "
                                 f"{shown(value)}")
            texts[key] = value
        artwork_id = _artwork_id(item.get("id", Path(file).stem), f"{where}.id")
        described[file] = CatalogueEntry(artwork_id, file, texts["title"], texts["artist"], year)
    if unread:
        notes.append(f"catalogue {path}: left out keys it does not read: " + listed(
            [f"{key!r} in {len(where)} entries ({where[0]}...){_close_to([key], _TOML_KEYS)}"
             if len(where) > 1 else f"{key!r} in {where[0]}{_close_to([key], _TOML_KEYS)}"
             for key, where in unread.items()]) + f" (read: {', '.join(_TOML_KEYS)})")
    return described


def _close_to(typed: Sequence[str], known: Sequence[str]) -> str:
    """`` (did you mean 'title'?)`` where one of ``typed`` is close to a ``known`` key."""
    for word in typed:
        if close := difflib.get_close_matches(word.lower(), known, n=1, cutoff=0.7):
            return f" (did you mean {close[0]!r}?)"
    return ""


def _artwork_id(value: object, where: str) -> str:
    """``value`` as an artwork id: text of 1 to ``MAX_TEXT_CHARS`` characters (what the wire
    carries, :mod:`ground.protocol`), not all spaces, without control characters (a NUL or
    a line break would cut the id in a log, a CSV or the console). InputError naming
    ``where`` otherwise."""
    expected = f"expected an id of 1 to {MAX_TEXT_CHARS} printable characters"
    if not isinstance(value, str):
        raise InputError(f"{where}: {expected} (text, in quotes), got {shown(value)}")
    if not value.strip():
        raise InputError(f"{where}: {expected}, got {value!r}")
    if len(value) > MAX_TEXT_CHARS:
        raise InputError(f"{where}: {expected}, got {len(value)} characters "
                         f"({shown(value)})")
    # Unicode's spaces (a no-break space from a spreadsheet) are printable here; controls,
    # format characters, line and paragraph separators are not
    odd = next((k for k, c in enumerate(value)
                if not c.isprintable() and unicodedata.category(c) != "Zs"), None)
    if odd is not None:
        raise InputError(f"{where}: {expected}, got {shown(value)} (character {odd + 1} is "
                         f"{unicodedata.name(value[odd], f'U+{ord(value[odd]):04X}')})")
    return value


#: The CSV columns read, each under the names collection systems export it by
#: (compared lower-case, without spaces, dots, dashes or underscores).
_CSV_COLUMNS = {
    "file": ("file", "filename", "image", "imagefile"),
    "id": ("id", "inventory", "inventoryno", "inventorynumber", "accession",
           "accessionnumber", "objectnumber"),
    "title": ("title",),
    "artist": ("artist", "author", "maker", "creator"),
    "year": ("year", "date"),
}
_CSV_SAMPLE = 64 * 1024  # bytes the dialect is sniffed from


def _column_key(name: str) -> str:
    return "".join(c for c in name.lower() if c not in " ._-#")


def _read_table(path: Path) -> list[list[str]]:
    """A metadata CSV's rows (header first); InputError naming the file if it is not one."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's export starts with a BOM
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1
        raise InputError(f"catalogue {path}: expected UTF-8 text (export it as CSV UTF-8), "
                         f"got a byte {error.object[error.start]:#04x} on line {line}") from None
    except OSError as error:
        raise InputError(f"catalogue {path}: cannot read it ({error.strerror or error})") from None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:_CSV_SAMPLE], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # one column, or nothing to tell by: commas
    try:
        return [row for row in csv.reader(io.StringIO(text), dialect) if any(row)]
    except csv.Error as error:
        raise InputError(f"catalogue {path}: expected CSV, got {error}") from None


def _metadata_table(folder: Path) -> Path | None:
    """The CSV in ``folder`` that describes the works (its header names a file column), or
    None; InputError where several do."""
    tables = []
    for path in (folder / name for name in sorted(metadata_files(folder))):
        if path.is_symlink() and (why := file_problem(path, "a file")) is not None:
            # a link to an export that is gone: its works' metadata would go missing unsaid
            raise InputError(f"catalogue {path}: cannot read it: {why}")
        if path.suffix.lower() == ".csv" and path.is_file():
            rows = _read_table(path)
            if rows and any(_column_key(c) in _CSV_COLUMNS["file"] for c in rows[0]):
                tables.append(path)
    if len(tables) > 1:
        raise InputError(f"catalogue {folder}: {' and '.join(p.name for p in tables)} both "
                         f"describe the works (a file column); keep one")
    return tables[0] if tables else None


def _csv_entries(path: Path, images: list[str], notes: list[str]) -> dict[str, CatalogueEntry]:
    """The works a collection system's CSV export describes, by image path."""
    rows = _read_table(path)
    header = [_column_key(c) for c in rows[0]]
    columns: dict[str, int] = {}
    for field_, aliases in _CSV_COLUMNS.items():
        at = [k for k, c in enumerate(header) if c in aliases]
        if len(at) > 1:
            raise InputError(f"catalogue {path}: columns {' and '.join(rows[0][k] for k in at)} "
                             f"both give the {field_}; keep one")
        if at:
            columns[field_] = at[0]
    described: dict[str, CatalogueEntry] = {}
    names = _ImageNames(images)
    rows_of: dict[str, int] = {}
    missing: list[str] = []
    odd_years: list[str] = []
    for number, row in enumerate(rows[1:], start=2):
        def cell(field_: str, row: list[str] = row) -> str:
            at = columns.get(field_)
            return row[at].strip() if at is not None and at < len(row) else ""

        named = cell("file")
        if not named:
            raise InputError(f"catalogue {path}, row {number}: {rows[0][columns['file']]}: "
                             f"expected the name of an image, got nothing")
        file = names.find(named, f"catalogue {path}, row {number}")
        if file is None:
            missing.append(f"row {number} {named!r}{names.hint(named)}")
            continue
        if file in rows_of:
            raise InputError(f"catalogue {path}, rows {rows_of[file]} and {number}: both "
                             f"describe {file}")
        rows_of[file] = number
        year: int | None = None
        if text := cell("year"):
            try:
                year = int(text)
            except ValueError:
                year = None
            if year is None or not YEARS[0] <= year <= YEARS[1]:
                odd_years.append(f"row {number} {text!r}")
                year = None
        artwork_id = _artwork_id(cell("id") or Path(file).stem,
                                 f"catalogue {path}, row {number}: {rows[0][columns['id']]}"
                                 if "id" in columns else f"catalogue {path}, row {number}")
        described[file] = CatalogueEntry(artwork_id, file, cell("title"), cell("artist"), year)
    if missing:
        raise InputError(f"catalogue {path}: {len(missing)} rows name an image that is not in "
                         f"{path.parent}: {listed(missing)}")
    if odd_years:
        notes.append(f"catalogue {path}: year left out of {len(odd_years)} entries, not a "
                     f"whole year from {YEARS[0]} to {YEARS[1]}: {listed(odd_years)}")
    return described


#: Faults named in one error or warning line (a big export's); the rest are counted.
NAMED_AT_MOST = 20


def listed(items: Sequence[str]) -> str:
    """The first :data:`NAMED_AT_MOST` of ``items``, then how many more: one line that lets
    a big export be mended in one pass, not one fault per run."""
    more = len(items) - NAMED_AT_MOST
    return "; ".join(items[:NAMED_AT_MOST]) + (f"; and {more} more" if more > 0 else "")


#: The index's feature tables (``{part}_desc``, ``_xy``, ``_owner``), each reference's rows
#: in turn: ORB of the square, RootSIFT of the native reference and of its simulated views
#: (their points in the native reference's pixels); the descriptors' width.
_FEATURE_PARTS = {"square": 32, "native": 128, **{name: 128 for name in SIMULATED_VIEWS}}


@dataclass(frozen=True, eq=False)  # holds arrays: == is identity
class _WorkIndex:
    """One reference's part of the index: what :func:`_index_work` computes from its image,
    or what :func:`_previous_works` takes from the index before."""

    features: dict[str, tuple[np.ndarray, np.ndarray]]  # part -> descriptors (uint8), points
    native_size: tuple[int, int]  # width, height
    thumb: np.ndarray  # (3 * _THUMB * _THUMB,) float32
    fine: np.ndarray  # (_FINE, _FINE, 3) float16
    source_side: int  # the reference image's long side as decoded, px (0: not known)


class _Detectors:
    """The feature detectors an index is built with (one set per build)."""

    def __init__(self) -> None:
        self.orb = _orb(_REFERENCE_FEATURES)
        self.sift = cv2.SIFT.create(nfeatures=_NATIVE_FEATURES, contrastThreshold=_SIFT_CONTRAST)
        self.simulated = {name: cv2.SIFT.create(nfeatures=count, contrastThreshold=_SIFT_CONTRAST)
                          for name, count in (("tilted", _TILTED_FEATURES),
                                              ("far", _FAR_FEATURES))}


def _index_work(image: np.ndarray, detectors: _Detectors) -> _WorkIndex:
    """A reference image's part of the index (see the module docstring)."""
    square = cv2.resize(image, (SQUARE, SQUARE), interpolation=cv2.INTER_AREA)
    height, width = image.shape[:2]
    factor = NATIVE_LONG_SIDE / max(width, height)
    native = cv2.resize(image, (max(16, int(round(width * factor))),
                                max(16, int(round(height * factor)))),
                        interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {part: [] for part in _FEATURE_PARTS}
    keypoints, descriptors = detectors.orb.detectAndCompute(_normalised_grey(square), None)
    if descriptors is not None:
        found["square"].append((descriptors, _points(keypoints)))
    grey = cv2.cvtColor(native, cv2.COLOR_BGR2GRAY)
    keypoints, descriptors = detectors.sift.detectAndCompute(grey, None)
    if descriptors is not None:
        found["native"].append((np.round(_root_sift(descriptors) * 255.0).astype(np.uint8),
                                _points(keypoints)))
    for name, view in _simulated_views(grey):
        keypoints, descriptors = detectors.simulated[name].detectAndCompute(view, None)
        if keypoints:
            stretch = np.array([native.shape[1] / view.shape[1],
                                native.shape[0] / view.shape[0]], np.float32)
            found[name].append((np.round(_root_sift(descriptors) * 255.0).astype(np.uint8),
                                _points(keypoints) * stretch))
    features = {part: (np.concatenate([d for d, _ in held]) if held else
                       np.zeros((0, _FEATURE_PARTS[part]), np.uint8),
                       np.concatenate([xy for _, xy in held]).astype(np.float32) if held else
                       np.zeros((0, 2), np.float32))
                for part, held in found.items()}
    return _WorkIndex(features, (native.shape[1], native.shape[0]), _thumbnail(square),
                      _fine_image(square).astype(np.float16), max(height, width))


def _build_index(folder: Path, entries: list[CatalogueEntry],
                 progress: Callable[[int, int], None] | None = None,
                 previous: dict[str, _WorkIndex] | None = None, *,
                 leave_out_unreadable: bool = False,
                 ) -> tuple[dict[str, np.ndarray], int, list[tuple[str, str]]]:
    """The index of ``entries`` (arrays, as cached), how many of its works were taken
    from ``previous`` (by :func:`_file_key`: their image unchanged) rather than indexed,
    and the works left out, unreadable, as (file, why); ``progress(done, total)`` per
    work indexed. What relates works to each other (twins, each work's nearest others,
    plain references) is worked out afresh: it is cheap.

    An image that cannot be read is an InputError naming it, or, with
    ``leave_out_unreadable``, its work is left out of the index; all of them left out,
    an InputError naming them."""
    previous = previous or {}
    keys = [_file_key(folder, entry.file) for entry in entries]
    missing = [k for k, key in enumerate(keys) if key not in previous]
    detectors = _Detectors()
    works: list[_WorkIndex | None] = [previous.get(key) for key in keys]
    left_out: list[tuple[str, str]] = []
    for done, owner in enumerate(missing, start=1):
        path = folder / entries[owner].file
        try:  # a big scan is decoded smaller: the index looks at 400 px
            image = read_image(path, REDUCED_AT_LEAST)
        except InputError as error:
            if not leave_out_unreadable:
                raise InputError(f"catalogue {folder}: {error}") from None
            left_out.append((entries[owner].file,
                             str(error).removeprefix(f"cannot read image {path}: ")))
        else:
            works[owner] = _index_work(image, detectors)
        if progress is not None:
            progress(done, len(missing))
    if left_out:
        if len(left_out) == len(entries):
            raise InputError(f"catalogue {folder}: expected reference images that can be "
                             f"read, got none: {listed([f'{n} ({w})' for n, w in left_out])}")
        kept = [k for k, work in enumerate(works) if work is not None]
        entries, keys = [entries[k] for k in kept], [keys[k] for k in kept]
        works = [works[k] for k in kept]
    held = [work for work in works if work is not None]
    assert len(held) == len(entries)
    arrays: dict[str, np.ndarray] = {}
    for part in _FEATURE_PARTS:
        arrays[f"{part}_desc"] = np.concatenate([w.features[part][0] for w in held])
        arrays[f"{part}_xy"] = np.concatenate([w.features[part][1] for w in held])
        arrays[f"{part}_owner"] = np.concatenate(
            [np.full(len(w.features[part][0]), owner, np.int32)
             for owner, w in enumerate(held)])
    thumbs = np.array([w.thumb for w in held], np.float32)
    arrays.update({
        "native_size": np.array([w.native_size for w in held], np.int32).reshape(-1, 2),
        "thumbs": thumbs,
        "signature_nearest": _nearest_others(thumbs.reshape(-1, 3 * _THUMB * _THUMB)),
        "fine": np.array([w.fine for w in held], np.float16).reshape(-1, _FINE, _FINE, 3),
        "entries": np.array(json.dumps([e.__dict__ for e in entries])),
        # what a later build takes unchanged works from (:func:`_previous_works`)
        "params": np.array(_index_params()),
        "files": np.array(json.dumps(keys)),
    })
    arrays["twins"] = _twins(arrays["thumbs"].reshape(len(entries), -1), arrays["native_desc"],
                             arrays["native_xy"], arrays["native_owner"])
    arrays["plain"] = _plain(arrays["fine"].astype(np.float32), arrays["square_owner"])
    sides = np.array([w.source_side for w in held], np.int32)
    arrays["source_side"] = sides
    arrays["small"] = np.flatnonzero((sides > 0) & (sides < SMALL_REFERENCE)).astype(np.int32)
    return arrays, len(entries) - (len(missing) - len(left_out)), left_out


def images_to_index(folder: Path, cache: Path) -> list[str]:
    """The folder's reference images (:func:`catalogue_images`) a rebuild of the index at
    ``cache`` would index: those new or changed since it was built (all, where there is no
    such index). What ``art2mus index`` checks are readable before it builds."""
    images = catalogue_images(folder)
    try:
        # our own handle: numpy leaves its file open where the index is no zip file
        with cache.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            if "files" not in data.files or str(data["params"]) != _index_params():
                return images
            indexed = set(json.loads(str(data["files"])))
    except UNREADABLE_INDEX:
        return images
    return [name for name in images if _file_key(folder, name) not in indexed]


def _previous_works(cache: Path, folder: Path,
                    entries: list[CatalogueEntry]) -> dict[str, _WorkIndex]:
    """The works of the index at ``cache`` (built with today's parameters) whose images
    ``entries`` still hold unchanged, by :func:`_file_key`: what a rebuild need not index
    again. Empty where there is no such index (none yet, another version, unreadable)."""
    if not cache.is_file():
        return {}
    wanted = {_file_key(folder, entry.file) for entry in entries}
    try:
        with cache.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            if "files" not in data.files or str(data["params"]) != _index_params():
                return {}
            keys = json.loads(str(data["files"]))
            arrays = {f"{part}_{what}": data[f"{part}_{what}"]
                      for part in _FEATURE_PARTS for what in ("desc", "xy", "owner")}
            sizes, thumbs, fine = data["native_size"], data["thumbs"], data["fine"]
            # (an index from before the source sizes were kept: not known, never "small")
            sides = data["source_side"] if "source_side" in data.files \
                else np.zeros(len(keys), np.int32)
    except UNREADABLE_INDEX as error:
        log.warning("catalogue index %s unreadable (%s); indexing every work", cache, error)
        return {}
    starts = {part: np.searchsorted(arrays[f"{part}_owner"], np.arange(len(keys) + 1))
              for part in _FEATURE_PARTS}
    works: dict[str, _WorkIndex] = {}
    for owner, key in enumerate(keys):
        if key not in wanted:
            continue
        rows = {part: slice(int(start[owner]), int(start[owner + 1]))
                for part, start in starts.items()}
        works[key] = _WorkIndex(
            {part: (arrays[f"{part}_desc"][rows[part]], arrays[f"{part}_xy"][rows[part]])
             for part in _FEATURE_PARTS},
            (int(sizes[owner][0]), int(sizes[owner][1])), thumbs[owner], fine[owner],
            int(sides[owner]))
    return works


def _plain(fine: np.ndarray, square_owner: np.ndarray) -> np.ndarray:
    """References (owner indices, int32) with nothing to recognise a view of them by:
    fewer ORB features than a features match needs and no appearance to correlate (a
    blank or one-colour image: a placeholder exported for a work without a photo, or a
    monochrome whose reference lost its texture). The signature stage refuses a view
    that plain (:meth:`Catalogue._fine_scores`), so it is never named; the index says so.
    """
    features = np.bincount(square_owner, minlength=len(fine))
    structure = (fine ** 2).mean(axis=(1, 2)).sum(axis=1)
    return np.flatnonzero((features < _PLAIN_FEATURES) & (structure < _FINE_STRUCTURE)
                          ).astype(np.int32)


def _simulated_views(grey: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """A reference (grey, at its native size) as its ``SIMULATED_VIEWS`` see it: (name,
    image), squeezed across by each of ``_TILTS`` and shrunk to each of ``_FAR_SIDES``."""
    height, width = grey.shape[:2]
    views = [("tilted", cv2.resize(grey, (max(8, round(width / tilt)), height),
                                   interpolation=cv2.INTER_AREA)) for tilt in _TILTS]
    for side in _FAR_SIDES:
        factor = side / max(width, height)
        if factor < 1.0:  # a reference this small is its own far view
            views.append(("far", cv2.resize(grey, (max(8, round(width * factor)),
                                                   max(8, round(height * factor))),
                                             interpolation=cv2.INTER_AREA)))
    return views


def _twins(thumbs: np.ndarray, desc: np.ndarray, xy: np.ndarray,
           owner: np.ndarray) -> np.ndarray:
    """Pairs of references (owner indices, (k, 2) int32) that show the same picture: a
    collection's export with one image under two records, or a work added twice. A view
    of such a picture may be named either, so the index says so.

    Thumbnails first (their cosine: 1.0 for the same image, at most 0.78 between the
    127 distinct real works we have), then the pair's own SIFT features must agree on
    one homography (:data:`_TWIN_INLIERS`, or a third of a plain work's few). In blocks
    of rows, so a big catalogue needs no n x n matrix.
    """
    unit = thumbs / np.maximum(np.linalg.norm(thumbs, axis=1, keepdims=True), 1e-6)
    starts = np.searchsorted(owner, np.arange(len(thumbs) + 1))
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(unit), 1024):
        similarity = unit[start:start + 1024] @ unit.T
        for row, other in zip(*np.nonzero(similarity >= _TWIN_SIGNATURE), strict=True):
            first = start + int(row)
            if other <= first:
                continue
            a = slice(starts[first], starts[first + 1])
            b = slice(starts[other], starts[other + 1])
            fewer = min(a.stop - a.start, b.stop - b.start)
            if fewer < _TWIN_MIN_INLIERS:
                continue  # a blank reference: nothing to compare
            # a plain work has few features: a third of the fewer agreeing is enough there
            needed = max(_TWIN_MIN_INLIERS, min(_TWIN_INLIERS, fewer // 3))
            matches = [m[0] for m in matcher.knnMatch(desc[a].astype(np.float32),
                                                      desc[b].astype(np.float32), k=2)
                       if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
            if len(matches) < needed:
                continue
            source = xy[a][[m.queryIdx for m in matches]]
            target = xy[b][[m.trainIdx for m in matches]]
            _, inliers = cv2.findHomography(source, target, cv2.RANSAC, 3.0)
            if inliers is not None and int(inliers.sum()) >= needed:
                pairs.append((first, int(other)))
    return np.array(pairs, np.int32).reshape(-1, 2)


#: Thumbnail cosine from which two references may be one picture (then checked by features).
_TWIN_SIGNATURE = 0.9
#: Features of two references agreeing on one homography that make them one picture.
_TWIN_INLIERS = 40
_TWIN_MIN_INLIERS = 8  # ...or a third of a plain one's features, at least this many
_PLAIN_FEATURES = 12  # ORB features: fewer than a features match needs (min_inliers)


def _nearest_others(thumbs: np.ndarray, block: int = 1024) -> np.ndarray:
    """Each work's best and second-best signature correlation with the other works, (n, 2).

    The catalogue's works against each other, as a view is against them
    (``recognise``'s similarity); -1 where there is no such other work. In
    blocks of rows, so a big catalogue needs no n x n matrix.
    """
    count = len(thumbs)
    nearest = np.full((count, 2), -1.0, np.float32)
    for start in range(0, count, block):
        similarity = thumbs[start:start + block] @ thumbs.T / (thumbs.shape[1] / 3)
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # not itself
        top = -np.sort(-similarity, axis=1)[:, :2]
        nearest[start:start + len(top), :top.shape[1]] = np.maximum(top, -1.0)
    return nearest


def _load_cache(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        # our own handle: numpy leaves its file open where the index is no zip file
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            if str(data["fingerprint"]) != fingerprint:
                return None
            return {key: data[key] for key in data.files}
    except UNREADABLE_INDEX as error:
        log.warning("catalogue index %s unreadable (%s); rebuilding it", path, error)
        return None


def _marked_read_only(folder: Path) -> bool:
    """Whether ``folder`` is marked read-only (which a root user could still write to: a
    shared data set, a mounted archive): no index is written there."""
    return folder.is_dir() and not folder.stat().st_mode & 0o222


@contextmanager
def _one_builder(cache: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Held while the index at ``cache`` is built: the rooms of one machine, each a process
    opening the same changed catalogue, build it once (they wrote one file at once, and
    each spent the minutes); the others wait, then load what it wrote. A lock file beside
    the index; none where that folder cannot be written (each builds its own there).
    ``waiting()`` is called once if another process holds it."""
    lock = FileLock(cache.with_name(cache.name + ".lock"))
    try:
        if _marked_read_only(cache.parent):
            raise PermissionError(f"{cache.parent} is marked read-only")
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("catalogue index %s: another process is building it; waiting", cache)
            if waiting is not None:
                waiting()
            lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the index to ``path`` atomically; where that folder cannot or should not be
    written (:func:`_marked_read_only`), warn and go on: the catalogue is then re-indexed
    per start."""
    if _marked_read_only(path.parent):
        log.warning("catalogue index not cached: %s is marked read-only; pass a writable "
                    "cache_dir", path.parent)
        return
    temporary = path.with_name(path.name + ".tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(temporary, **arrays)  # type: ignore[arg-type]
        temporary.replace(path)  # atomic: a reader never sees half an index
    except OSError as error:
        # A read-only catalogue folder still works; it is only re-indexed per start. On a
        # full disk the part written goes: hundreds of MB a recording may need.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        log.warning("catalogue index not cached (%s: %s); pass a writable cache_dir", path,
                    error)


@dataclass(frozen=True)
class _KdIndex:
    """A FLANN k-d tree index (``cv2.flann_Index``) and how many features it holds."""

    index: Any
    size: int


def _kd_matcher(descriptors: np.ndarray) -> _KdIndex | None:
    """A FLANN index of ``descriptors`` (float32 rows) for :func:`_matches`; None for
    under two. Randomised k-d trees: 4 trees, ``_KD_CHECKS`` leaves checked per query
    find nearly all of the exact ratio-test matches at a few percent of brute force's
    cost (more checks found no more works on a 2,000-work catalogue). Seeded: the same
    frame gives the same matches. The index itself, not a ``FlannBasedMatcher``: its
    ``knnSearch`` answers in arrays, without a Python object per neighbour."""
    if len(descriptors) < 2:
        return None
    cv2.setRNGSeed(0)
    index = cv2.flann_Index(  # type: ignore[attr-defined]  # the stubs lack it
        np.ascontiguousarray(descriptors, np.float32), {"algorithm": 1, "trees": 4})
    return _KdIndex(index, len(descriptors))


def _matches(matcher: _KdIndex | None, query: np.ndarray, ratio: float,
             offset: int, owner: np.ndarray, xy: np.ndarray, copies: bool,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of (query index, feature index + ``offset``) pairs from the
    ``_WORK_NEIGHBOURS`` nearest features of each query in ``matcher``
    (:func:`_kd_matcher`; ``owner`` and ``xy``: every feature's work and reference
    point, offset included):

    - Lowe's ratio test: the nearest, where clearly nearer than the runner-up. With
      ``copies``, a runner-up that is the nearest's copy (the same work's point within
      ``_SAME_POINT`` px, from another simulated view) is passed over for the next one.
    - Per work: for each work among the neighbours, its nearest, where clearly nearer
      than that work's next feature at another point (a rival only there; none among
      the neighbours is none near). The ratio test as Lowe made it for matching two
      images, each work in turn: in a catalogue of thousands another work's feature is
      often about as near as the true match, which fails the first test.
    """
    empty = np.zeros((0, 2), np.int64)
    if matcher is None or len(query) == 0:
        return empty, empty
    held = min(_WORK_NEIGHBOURS, matcher.size)
    found, squared = matcher.index.knnSearch(np.ascontiguousarray(query, np.float32), held,
                                             params={"checks": _KD_CHECKS})
    # Columns beyond what a small catalogue holds, and FLANN's -1 (none found), are none.
    found = np.pad(found.astype(np.int64), ((0, 0), (0, _WORK_NEIGHBOURS - held)),
                   constant_values=-1)
    squared = np.pad(squared, ((0, 0), (0, _WORK_NEIGHBOURS - held)),
                     constant_values=np.inf)
    valid = found >= 0
    index = np.where(valid, found + offset, -1)
    distance = np.where(valid, np.sqrt(np.maximum(squared, 0.0)), np.inf)
    safe = np.where(valid, index, 0)
    work = np.where(valid, owner[safe], -1)
    same_work = (work[:, :, None] == work[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    place = xy[safe]
    apart = np.abs(place[:, :, None] - place[:, None, :])
    same_point = same_work & (np.maximum(apart[..., 0], apart[..., 1]) <= _SAME_POINT)
    rivals = valid[:, 1:] & ~same_point[:, 0, 1:] if copies else valid[:, 1:]
    rival = np.where(rivals, distance[:, 1:], np.inf).min(axis=1)
    rows = np.flatnonzero(valid[:, 0] & np.isfinite(rival) & (distance[:, 0] < ratio * rival))
    nearest = np.stack([rows, index[rows, 0]], axis=1).astype(np.int64).reshape(-1, 2)
    columns = np.arange(_WORK_NEIGHBOURS)
    before = columns[None, :] < columns[:, None]  # [i, j]: column j comes before i
    first = valid & ~(same_work & before[None]).any(axis=2)
    own_rival = np.where(same_work & ~same_point & before.T[None], distance[:, None, :],
                         np.inf).min(axis=2)
    rows, picked = np.nonzero(first & (distance < ratio * own_rival))
    per_work = np.stack([rows, index[rows, picked]], axis=1).astype(np.int64).reshape(-1, 2)
    return nearest, per_work


class _FrameStreak:
    """A frame's motion streak (:func:`capture.deblur.estimate_motion_blur`), looked for
    once, at ``scale``, when a pass over a neighbourhood first asks (a pass over the
    whole frame finds its own)."""

    def __init__(self, frame_bgr: np.ndarray, scale: float) -> None:
        self._frame = frame_bgr
        self._scale = scale
        self._found: tuple[MotionBlur | None] | None = None

    def at(self, scale: float) -> MotionBlur | None:
        """The streak, px at ``scale``; None where the frame has none."""
        if self._found is None:
            height, width = self._frame.shape[:2]
            small = self._frame if self._scale == 1.0 else cv2.resize(
                self._frame, (max(1, round(width * self._scale)),
                              max(1, round(height * self._scale))),
                interpolation=cv2.INTER_AREA)
            grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
            self._found = (estimate_motion_blur(grey),)
        blur = self._found[0]
        return None if blur is None else blur.scaled(scale / self._scale)


def _points(keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """The keypoints' positions, (n, 2) float32 px, (0, 2) for none: SIFT gives a plain
    image no keypoints and an empty descriptor array, not ``None`` as ORB does."""
    return np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)


def _unit(stored: np.ndarray) -> np.ndarray:
    """RootSIFT descriptors as the index stores them (uint8, x 255) back as float32."""
    return stored.astype(np.float32) / 255.0


def _root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT: L1-normalise, then square-root (Hellinger kernel; better matches than L2)."""
    descriptors = descriptors.astype(np.float32)
    return np.sqrt(descriptors / (descriptors.sum(axis=1, keepdims=True) + 1e-7))


def _near_pixels(near: np.ndarray, width: int, height: int) -> float:
    """Frame pixels in the neighbourhood ``locate(near=...)`` searches (clipped to the frame)."""
    low, high = near.min(axis=0), near.max(axis=0)
    grow = _NEAR_MARGIN * (high - low)
    left, top = np.maximum(low - grow, 0.0)
    right, bottom = np.minimum(high + grow, (float(width), float(height)))
    return float(max(0.0, right - left) * max(0.0, bottom - top))


def _in_view(quad: np.ndarray, width: int, height: int) -> bool:
    """Whether a located work is in view enough to report: a quarter of it inside the frame,
    or a quarter of the frame filled by it (a close-up of a large work). A sliver at the
    frame's edge is not what the camera looks at, and its corners are extrapolated from
    features on the sliver alone (at 7 % in view, 14 times the area they cover)."""
    frame = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    inside, _ = cv2.intersectConvexConvex(quad.astype(np.float32), frame)
    area = abs(cv2.contourArea(quad.astype(np.float32)))
    return area > 0 and (inside >= _MIN_IN_VIEW * area or inside >= _CLOSE_UP * width * height)


def _plausible_shape(quad: np.ndarray) -> bool:
    """A rectangle seen in perspective: opposite sides within ``_MAX_SIDE_RATIO``, corners
    neither too sharp nor too flat."""
    sides = np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)
    if sides.min() < 4.0:
        return False
    if max(sides[0], sides[2]) > _MAX_SIDE_RATIO * min(sides[0], sides[2]) \
            or max(sides[1], sides[3]) > _MAX_SIDE_RATIO * min(sides[1], sides[3]):
        return False
    incoming = quad - np.roll(quad, 1, axis=0)
    outgoing = np.roll(quad, -1, axis=0) - quad
    cosines = (incoming * outgoing).sum(axis=1) / (
        np.linalg.norm(incoming, axis=1) * np.linalg.norm(outgoing, axis=1))
    return bool(np.all(np.abs(cosines) < np.cos(np.radians(25.0))))


def overlap_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller quad's area (0 when either is degenerate)."""
    inter, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    smaller = min(abs(cv2.contourArea(a.astype(np.float32))),
                  abs(cv2.contourArea(b.astype(np.float32))))
    return float(inter / smaller) if smaller > 0 else 0.0


def _part_of(a: Location, b: Location) -> bool:
    """Whether ``b``'s quad holds most of ``a``'s evidence (its inliers' points), and more
    of it than ``a``'s quad holds of ``b``'s: ``a`` fits a part of what ``b`` fits."""
    of_a = _share_inside(a.support, b.quad)
    return of_a >= _LOCATE_SAME_PLACE and of_a > _share_inside(b.support, a.quad)


def _share_inside(points: np.ndarray, quad: np.ndarray) -> float:
    """The share of ``points`` inside the convex ``quad`` (0 for no points): on the same
    side of each of its sides as the others."""
    if len(points) == 0:
        return 0.0
    corners = quad.astype(np.float64)
    sides = np.roll(corners, -1, axis=0) - corners
    offsets = points.astype(np.float64)[:, None, :] - corners[None]
    cross = sides[None, :, 0] * offsets[:, :, 1] - sides[None, :, 1] * offsets[:, :, 0]
    inside = (cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)
    return float(inside.mean())


def _orb(features: int) -> cv2.ORB:
    # A lower FAST threshold than the default 20 keeps features on dim or
    # low-contrast works; patch 19 (not 31) keeps more of a 320 px square.
    return cv2.ORB.create(nfeatures=features, scaleFactor=1.25, nlevels=6, edgeThreshold=19,
                          patchSize=19, fastThreshold=10)


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))


def _normalised_grey(bgr: np.ndarray) -> np.ndarray:
    """Grey with local contrast equalised, so low light and glare gradients matter less."""
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    return _CLAHE.apply(grey)


def _thumbnail(square_bgr: np.ndarray) -> np.ndarray:
    """A 16x16 global signature: grey and two opponent colours, each detrended and z-scored.

    Linear channels (not L*a*b*) so that a change of exposure is a pure gain,
    which the z-score removes; a fitted plane is subtracted per channel so a
    lighting gradient across the painting does not count either.
    """
    small = cv2.resize(square_bgr, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA)
    b, g, r = (small[..., i].astype(np.float32) for i in range(3))
    channels = np.stack([(r + g + b) / 3.0, r - g, (r + g) / 2.0 - b]).reshape(3, -1)
    channels -= (_PLANE @ channels.T).T  # least-squares plane per channel
    channels /= channels.std(axis=1, keepdims=True) + np.array([[2.0], [2.0], [2.0]], np.float32)
    return (channels / np.sqrt(3.0)).ravel().astype(np.float32)


def _fine_image(square_bgr: np.ndarray) -> np.ndarray:
    """A 64x64 appearance image: grey and two opponent colours, lightly blurred, z-scored.

    The same linear channels as :func:`_thumbnail` (a gain is removed by the
    z-score); the area resize and the blur average the sensor noise of a dim
    view and make a slightly blurred view look like its sharp reference.
    """
    small = cv2.resize(square_bgr, (_FINE, _FINE), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), 1.0)
    b, g, r = small[..., 0], small[..., 1], small[..., 2]
    channels = []
    for channel in ((r + g + b) / 3.0, r - g, (r + g) / 2.0 - b):
        channel = channel - channel.mean()
        channels.append(channel / (channel.std() + 2.0))
    return np.dstack(channels).astype(np.float32)


def _plane_projector(side: int) -> np.ndarray:
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    basis = np.stack([np.ones(side * side, np.float32), xs.ravel(), ys.ravel()], axis=1)
    return (basis @ np.linalg.pinv(basis)).astype(np.float32)  # projects onto a + bx + cy


_PLANE = _plane_projector(_THUMB)


def _top_owners(votes: np.ndarray, owners: np.ndarray, count: int,
                skip: Sequence[int] = ()) -> list[int]:
    """The ``count`` references with the most votes (at least one), leaving out ``skip``."""
    if len(votes) == 0:
        return []
    tally = np.bincount(owners[votes[:, 1]])
    tally[[s for s in skip if s < len(tally)]] = 0
    order = np.argsort(-tally)[:count]
    return [int(o) for o in order if tally[o] > 0]


def _verified_homography(source: np.ndarray, target: np.ndarray, source_size: tuple[int, int],
                         target_size: tuple[int, int], threshold: float,
                         min_area: float | None = None) -> tuple[np.ndarray | None, int]:
    """RANSAC homography source -> target and its inlier count, or (None, 0) if implausible.

    ``min_area`` (px in the target): the smallest the source may map to; default
    1/200 of the target (a view: a degenerate fit maps the reference to a sliver).
    """
    if len(source) < 4:
        return None, 0
    homography, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, threshold,
                                          maxIters=2000, confidence=0.995)
    if homography is None or mask is None:
        return None, 0
    inliers = int(mask.sum())
    width, height = source_size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    try:
        quad = cv2.perspectiveTransform(corners[None], homography)[0]
    except cv2.error:
        return None, 0
    if not np.isfinite(quad).all() or not cv2.isContourConvex(quad.astype(np.float32)):
        return None, 0
    # At most 4x the target: a degenerate fit maps the reference to something far bigger.
    area = abs(cv2.contourArea(quad.astype(np.float32)))
    floor = 0.005 * target_size[0] * target_size[1] if min_area is None else min_area
    if not floor <= area <= 4.0 * target_size[0] * target_size[1]:
        return None, 0
    return homography, inliers


def _within(source: np.ndarray, target: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Indices of the ``source`` points ``homography`` maps within ``_LOCATE_THRESHOLD``
    of their ``target`` (its inliers)."""
    if len(source) == 0:
        return np.zeros(0, np.int64)
    mapped = cv2.perspectiveTransform(source[None].astype(np.float32), homography)[0]
    return np.flatnonzero(np.linalg.norm(mapped - target, axis=1) <= _LOCATE_THRESHOLD)


def _distinct_inliers(source: np.ndarray, target: np.ndarray, homography: np.ndarray,
                      at_most: int | None = None) -> int:
    """The inliers of ``homography`` (:func:`_within`) at distinct points: those sharing a
    frame point (within a pixel) or a reference point (within ``_SAME_POINT``) with one
    counted before count once. Counted up to ``at_most`` where given."""
    inside = _within(source, target, homography)
    frame, reference = target[inside], source[inside]
    same = (np.abs(frame[:, None] - frame[None]).max(axis=2) <= 1.0) \
        | (np.abs(reference[:, None] - reference[None]).max(axis=2) <= _SAME_POINT)
    kept = np.zeros(len(inside), bool)
    for k in range(len(inside)):
        kept[k] = not (same[k] & kept).any()
        if at_most is not None and kept.sum() >= at_most:
            break
    return int(kept.sum())


def _corner_shift(homography: np.ndarray) -> float:
    """How far (px) the homography moves the reference square's corners, at most."""
    corners = np.array([[0, 0], [SQUARE, 0], [SQUARE, SQUARE], [0, SQUARE]], np.float32)
    moved = cv2.perspectiveTransform(corners[None], homography)[0] - corners
    return float(np.abs(moved).max())


def _inlier_score(inliers: int) -> float:
    # 12 inliers (the minimum) ~ 0.55, 40 ~ 0.8, 100+ ~ 0.9+.
    return round(float(inliers / (inliers + 10.0)), 4)
