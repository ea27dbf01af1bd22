"""Every name the package registers is declared as an entry point.

spaCy finds a plugin's registered functions through entry points only: a name that is
registered by a decorator but not declared in setup.cfg resolves only in a process that
happened to import its module first (`registry.resolve` fails with E893 elsewhere, and
`spacy.load` of a saved pipeline fails with E002 for a factory). The names are found
by importing every module of the package and reading spaCy's registries, so a new
registration without its entry point fails here.
"""
import importlib
import pkgutil
import subprocess
import sys
from importlib.metadata import entry_points

import spacy
from spacy.language import Language

import spacy_medllm

# the registries a plugin fills; each reads its own entry point group (`entry_point_namespace`)
REGISTRIES = ("architectures", "readers", "misc", "scorers", "tokenizers", "augmenters", "layers", "callbacks")


def import_all_modules():
    names = []
    for info in pkgutil.walk_packages(spacy_medllm.__path__, "spacy_medllm."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # runs the command line on import
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def ours(name, func):
    return name.startswith("spacy_medllm.") or getattr(func, "__module__", "").split(".")[0] == "spacy_medllm"


def declared(group):
    return {ep.name: ep for ep in entry_points(group=group) if ep.value.split(":")[0].split(".")[0] == "spacy_medllm"}


def registered():
    """{entry point group: {name: function}} for what the package registers."""
    import_all_modules()
    out = {}
    for reg_name in REGISTRIES:
        reg = getattr(spacy.registry, reg_name)
        out[reg.entry_point_namespace] = {n: f for n, f in reg.get_all().items() if ours(n, f)}
    out["spacy_factories"] = {n: f for n, f in spacy.registry.factories.get_all().items() if ours(n, f)}
    return out


def test_every_module_imports():
    names = import_all_modules()
    assert "spacy_medllm.relations.model" in names and "spacy_medllm.augment.entity_swap" in names


def test_registered_names_are_entry_points():
    found = registered()
    assert set(found) == {"spacy_architectures", "spacy_readers", "spacy_misc", "spacy_scorers", "spacy_tokenizers", "spacy_augmenters", "thinc_layers", "spacy_callbacks", "spacy_factories"}
    assert "spacy_medllm.PairRepresentation.v2" in found["spacy_architectures"]
    assert {"medllm_linker", "medllm_rel"} <= set(found["spacy_factories"])
    missing = {group: sorted(set(names) - set(declared(group))) for group, names in found.items()}
    assert {g: m for g, m in missing.items() if m} == {}, "registered but not declared in setup.cfg [options.entry_points]"


def test_entry_points_load_the_registered_functions():
    found = registered()
    for group, names in found.items():
        for name, ep in declared(group).items():
            # a declared name points at the very function that is registered under it
            assert name in names, f"{group}: {name} is declared but not registered"
            assert ep.load() is names[name], f"{group}: {name} -> {ep.value}"


def test_factories_are_language_factories():
    import_all_modules()
    for name in declared("spacy_factories"):
        assert Language.has_factory(name), name
        assert name.startswith("medllm_"), name  # prefixed, never bare


def test_console_script():
    assert {ep.name: ep.value for ep in declared("console_scripts").values()} == {"medllm": "spacy_medllm.cli:main"}


FRESH = """
import sys
import spacy
assert "spacy_medllm" not in sys.modules, "spacy imported spacy_medllm by itself"
cfg = {"m": {"@architectures": "spacy_medllm.PairRepresentation.v2", "hidden_width": 8, "distance_width": 4,
             "knowledge_width": 4, "depth": 0, "dropout": 0.0, "n_entity_labels": 4}}
model = spacy.registry.resolve(cfg)["m"]
print(type(model).__name__, model.name, model.attrs["knowledge_width"], model.get_dim("nO"))
"""


def test_fresh_process_resolves_by_entry_point():
    """No import of spacy_medllm: the entry point alone makes the name resolve."""
    result = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "Model medllm_pair_representation 4 40"


def test_entry_point_namespaces():
    # the groups setup.cfg must use: spaCy's own for its registries, thinc's for layers
    assert {r: getattr(spacy.registry, r).entry_point_namespace for r in REGISTRIES} == {
        "architectures": "spacy_architectures", "readers": "spacy_readers", "misc": "spacy_misc",
        "scorers": "spacy_scorers", "tokenizers": "spacy_tokenizers", "augmenters": "spacy_augmenters",
        "layers": "thinc_layers", "callbacks": "spacy_callbacks",
    }
