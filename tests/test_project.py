"""project.yml and every config are valid."""
from pathlib import Path

import pytest
from spacy import util
from weasel.util import load_project_config

ROOT = Path(__file__).parent.parent


def test_project_yml_is_valid():
    project = load_project_config(ROOT, overrides={"vars.corpus_dir": "../shared/corpus"})
    commands = {c["name"] for c in project["commands"]}
    assert {"convert", "train", "train-cnn", "evaluate", "package", "package-ner", "verify-corpus"} <= commands
    assert project["workflows"]["all"] == [
        "convert", "fetch-mesh-supplementary", "build-kb", "build-kg", "train-kg", "train-pipeline", "tune-pipeline", "build-kb-package", "build-kg-package",
        "assemble", "train-name-encoder", "train-name-encoder-target", "build-dense-index", "linker-corpus-final",
        "build-dense-index-package-final", "train-linker-package-final", "assemble-dense", "quantize", "evaluate-pipeline", "evaluate-pipeline-dense", "benchmark-load", "package",
    ]
    assert project["workflows"]["ner"] == ["convert", "train", "train-cnn", "evaluate", "package-ner"]
    # every command of the main job declares what it reads and writes, so a second run does nothing
    by_name = {c["name"]: c for c in project["commands"]}
    for name in project["workflows"]["all"]:
        assert by_name[name].get("deps") and (by_name[name].get("outputs") or by_name[name].get("outputs_no_cache")), name
    # the main job is whole and in order: what a command reads is a corpus file, a config, a
    # script or an asset, or what an earlier command of `all` wrote
    made = {}
    for at, name in enumerate(project["workflows"]["all"]):
        for dep in by_name[name]["deps"]:
            if not dep.startswith(("../shared/corpus/", "configs/", "scripts/", "assets/")):
                assert dep in made and made[dep] < at, f"{name} reads {dep}, which no earlier command of `all` writes"
        for out in by_name[name].get("outputs", []) + by_name[name].get("outputs_no_cache", []):
            made.setdefault(out, at)
    package = by_name["package"]["script"][0]
    assert by_name["assemble-dense"]["outputs"] == ["training/medllm_bc5cdr/meta.json"] and " training/medllm_bc5cdr " in package
    assert project["workflows"]["baseline"] == ["convert", "train-cnn", "evaluate-cnn"]
    for asset in project["assets"]:
        # a derived file (converted from an upstream R data file) has no URL: its description names the upstream
        if "url" in asset:
            assert asset["url"].startswith("https://")
        else:
            assert "Derived file, no direct URL: " in asset["description"] and "https://github.com/" in asset["description"]
        assert len(asset["checksum"]) == 32
        assert "sha256 " in asset["description"]


@pytest.mark.parametrize("name", ["ner_trf.cfg", "ner_trf_gpu.cfg", "ner_cnn.cfg"])
def test_configs_build(name, tiny_bert):
    config = util.load_config(ROOT / "configs" / name)
    if "transformer" in config["components"]:
        config["components"]["transformer"]["model"]["name"] = str(tiny_bert)
    nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
    assert nlp.pipe_names[-1] == "ner"
    assert [t.text for t in nlp.make_doc("Na+/K+")] == ["Na", "+", "/", "K", "+"]
