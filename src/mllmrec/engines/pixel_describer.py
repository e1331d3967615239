"""PixelDescriber: the honest offline stand-in for a captioning VLM (no weights can be had offline here).

    from mllmrec.engines.pixel_describer import PixelDescriber
    PixelDescriber().generate([GenerationRequest(messages=(), images=("posters/1.jpg",))])[0].text
    # 'A portrait-format image, bright and vivid, high contrast, mostly blue and white with touches of ...'

It is NOT a model: it measures the pixels (colour names by share, brightness, contrast, saturation, warm/cool tone,
where the light sits, how busy the texture is) and writes them as one short, deterministic English description of at
most 50 words. The request's text is ignored (it cannot follow a prompt), so a title in the prompt could never leak.
Bump REVISION whenever the output for some image can change: the caption cache keys on it.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from mllmrec.engines.base import GenerationRequest, GenerationResult

MODEL_ID = "pixel-describer"
REVISION = "pd-1"
MAX_WORDS = 50
SIZE = (64, 96)  # analysis resolution (w, h): fixed, so the description does not depend on the file's size


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb float [0,1] (..., 3) -> hue degrees [0,360), saturation, value."""
    mx, mn = rgb.max(-1), rgb.min(-1)
    d = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(d == 0, 1, d)
    h = np.select([mx == r, mx == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) * 60
    h = np.where(d == 0, 0, h)
    s = np.where(mx == 0, 0, d / np.where(mx == 0, 1, mx))
    return h, s, mx


# hue ranges in degrees for saturated pixels; order matters only at the shared borders
HUES = [
    ("red", 0, 15),
    ("orange", 15, 42),
    ("yellow", 42, 70),
    ("green", 70, 165),
    ("teal", 165, 195),
    ("blue", 195, 255),
    ("purple", 255, 315),
    ("pink", 315, 345),
    ("red", 345, 360),
]


def colour_names(rgb: np.ndarray) -> np.ndarray:
    """Name each pixel (rgb uint8 (..., 3)) with one of a dozen everyday colour words.

    >>> colour_names(np.array([[255, 0, 0], [0, 0, 255], [20, 20, 20], [250, 250, 250], [139, 69, 19]])).tolist()
    ['red', 'blue', 'black', 'white', 'brown']
    """
    h, s, v = _hsv(rgb.astype(np.float32) / 255)
    names = np.full(h.shape, "grey", dtype=object)
    for name, lo, hi in HUES:
        names[(h >= lo) & (h < hi)] = name
    warm = np.isin(names, ["red", "orange", "yellow"])
    names[warm & (h >= 15) & (h < 45) & (v < 0.62)] = "brown"  # dark orange reads as brown
    names[np.isin(names, ["orange", "yellow"]) & (s < 0.35) & (v >= 0.62)] = "beige"
    names[(names == "red") & (s < 0.5) & (v > 0.7)] = "pink"
    names[s < 0.15] = "grey"
    names[(s < 0.15) & (v > 0.85)] = "white"
    names[v < 0.18] = "black"
    return names


def _level(x: float, cuts: list[float], words: list[str]) -> str:
    return words[int(np.searchsorted(cuts, x, side="right"))]


def tones(rgb: np.ndarray) -> dict[str, str]:
    """Brightness, saturation, contrast, main colours and warmth of an RGB uint8 array (h, w, 3), as phrases; the
    part of the description the image_tagger captioner reuses.

    >>> tones(np.full((4, 4, 3), [200, 30, 30], dtype=np.uint8))["colours"]
    'mostly red'
    """
    f = rgb.astype(np.float32) / 255
    lum = f @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    _, sat, _ = _hsv(f)
    names = colour_names(rgb).ravel()
    kinds, counts = np.unique(names, return_counts=True)
    order = sorted(zip(-counts, kinds.tolist()))  # by share, ties by name: deterministic
    share = {k: -c / names.size for c, k in order}
    main = [k for _, k in order if share[k] >= 0.2][:2] or [order[0][1]]
    minor = [k for _, k in order if 0.05 <= share[k] < 0.2 and k not in main][:2]
    hue_w = sat * (1 - np.abs(lum - 0.5))  # warmth counts colourful pixels, not black/white
    warmth = float(((f[..., 0] - f[..., 2]) * hue_w).sum() / max(hue_w.sum(), 1e-6))
    return {
        "bright": _level(
            lum.mean(), [0.2, 0.38, 0.62, 0.8], ["very dark", "dark", "mid-toned", "bright", "very bright"]
        ),
        "contrast": _level(lum.std(), [0.12, 0.24], ["low contrast", "medium contrast", "high contrast"]),
        "vivid": _level(sat.mean(), [0.12, 0.3, 0.55], ["nearly monochrome", "muted", "moderately saturated", "vivid"]),
        "colours": "mostly " + " and ".join(main) + (f" with touches of {' and '.join(minor)}" if minor else ""),
        "tone": "warm tones" if warmth > 0.08 else "cool tones" if warmth < -0.08 else "balanced tones",
    }


def describe(path: str | Path) -> str:
    """The deterministic description of one image file (raises OSError if it cannot be decoded)."""
    with Image.open(path) as im:
        w, h = im.size
        rgb = np.asarray(im.convert("RGB").resize(SIZE, Image.Resampling.BILINEAR), dtype=np.uint8)
    f = rgb.astype(np.float32) / 255
    lum = f @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    aspect = w / h
    shape = "portrait-format" if aspect < 0.9 else "landscape-format" if aspect > 1.1 else "square"
    t = tones(rgb)
    bright, contrast, vivid, colours, tone = t["bright"], t["contrast"], t["vivid"], t["colours"], t["tone"]

    thirds = [lum[i * SIZE[1] // 3 : (i + 1) * SIZE[1] // 3].mean() for i in range(3)]
    where = ["top", "middle", "bottom"]
    hi, lo = int(np.argmax(thirds)), int(np.argmin(thirds))
    cy, cx = SIZE[1] // 4, SIZE[0] // 4
    centre = lum[cy:-cy, cx:-cx].mean()
    border = (lum.sum() - lum[cy:-cy, cx:-cx].sum()) / (lum.size - lum[cy:-cy, cx:-cx].size)
    d_cb, d_tb = centre - border, thirds[hi] - thirds[lo]
    if max(abs(d_cb), d_tb) <= 0.08:
        light = "light spread evenly"
    elif d_tb >= abs(d_cb):  # the stronger of the two contrasts names the layout
        light = f"light concentrated in the {where[hi]}, darkest in the {where[lo]}"
    else:
        light = f"a {'bright' if d_cb > 0 else 'dark'} centre framed by {'darker' if d_cb > 0 else 'lighter'} edges"

    gy, gx = np.abs(np.diff(lum, axis=0)).mean(), np.abs(np.diff(lum, axis=1)).mean()
    detail = _level(
        (gx + gy) / 2, [0.035, 0.06], ["smooth, uncluttered areas", "moderate detail", "busy, finely detailed texture"]
    )
    sym = 1 - np.abs(lum - lum[:, ::-1]).mean() / max(lum.mean(), 1e-6)
    balance = "a symmetric layout" if sym > 0.8 else "an asymmetric layout"

    text = (
        f"A {shape} image, {bright} and {vivid}, {contrast}, {colours}. "
        f"{tone.capitalize()}, {light}. {detail.capitalize()}, {balance}."
    )
    return " ".join(text.split()[:MAX_WORDS])


class PixelDescriber:
    """Engine protocol implementation: one description per request, from its first image; text is ignored."""

    model_id = MODEL_ID
    revision = REVISION

    def __init__(self, spec: object = None) -> None:
        self.spec = spec  # nothing to load; accepted so build_engine(spec) treats every engine alike

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [self._one(r) for r in requests]

    def _one(self, req: GenerationRequest) -> GenerationResult:
        if not req.images:
            return GenerationResult(finish_reason="error", error="no image in request")
        try:
            words = describe(req.images[0]).split()
        except FileNotFoundError:
            return GenerationResult(finish_reason="error", error=f"missing: {req.images[0]}")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            return GenerationResult(finish_reason="error", error=f"corrupt: {type(e).__name__}: {e}")
        cap = req.sampling.max_new_tokens  # one "token" per word: honour a tighter budget like a model would
        return GenerationResult(
            text=" ".join(words[:cap]),
            completion_tokens=min(len(words), cap),
            finish_reason="length" if len(words) > cap else "stop",
        )
