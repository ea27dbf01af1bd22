"""`medllm add-components`: a component trained on a frozen shared encoder is added to the
pipeline that owns that encoder, and refused onto any other encoder."""
import pytest
import spacy
from spacy.training import Example
from typer.testing import CliRunner

from spacy_medllm.assemble import add_components
from spacy_medllm.cli import app

TEXTS = ["Cisplatin caused nephrotoxicity.", "No adverse event was seen.", "Naloxone reversed the hypotension."]
LISTENER = {"model": {"@architectures": "spacy.TextCatReduce.v1", "exclusive_classes": True, "use_reduce_first": False,
                      "use_reduce_last": False, "use_reduce_max": False, "use_reduce_mean": True,
                      "tok2vec": {"@architectures": "spacy.Tok2VecListener.v1", "width": 96, "upstream": "tok2vec"}}}


def _base(seed: int):
    spacy.util.fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("tok2vec")
    ner = nlp.add_pipe("ner", config={"model": {"tok2vec": {"@architectures": "spacy.Tok2VecListener.v1", "width": 96, "upstream": "tok2vec"}}})
    ner.add_label("Chemical")
    nlp.initialize()
    return nlp


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("add")
    base = _base(0)
    base.to_disk(root / "base")
    # the textcat pipeline: the base's encoder, frozen, and a textcat trained on it
    src = spacy.blank("en")
    src.add_pipe("tok2vec", source=spacy.load(root / "base"))
    textcat = src.add_pipe("textcat", config=LISTENER)
    for label in ("ADE", "NONE"):
        textcat.add_label(label)
    src.initialize()
    src.get_pipe("tok2vec").from_bytes(base.get_pipe("tok2vec").to_bytes())  # initialize re-drew it
    examples = [Example.from_dict(src.make_doc(t), {"cats": {"ADE": float(i != 1), "NONE": float(i == 1)}}) for i, t in enumerate(TEXTS)]
    optimizer = src.resume_training()
    for _ in range(5):
        src.update(examples, sgd=optimizer, exclude=["tok2vec"], annotates=["tok2vec"])
    src.to_disk(root / "textcat")
    _base(1).to_disk(root / "other_base")  # another encoder
    return root


def test_added_component_reads_the_base_encoder(pipelines, tmp_path):
    nlp = add_components(pipelines / "base", tmp_path / "out", [(pipelines / "textcat", [])])
    assert nlp.pipe_names == ["tok2vec", "ner", "textcat"]
    assert "textcat" in nlp.get_pipe("tok2vec").listening_components
    src = spacy.load(pipelines / "textcat")
    for text in TEXTS:
        assert nlp(text).cats == pytest.approx(src(text).cats, abs=1e-6)


def test_refused_onto_another_encoder(pipelines, tmp_path):
    with pytest.raises(ValueError, match="not the one it was trained on"):
        add_components(pipelines / "other_base", tmp_path / "out", [(pipelines / "textcat", ["textcat"])])
    assert not (tmp_path / "out").exists()


def test_refused_without_the_encoder_or_with_a_clash(pipelines, tmp_path):
    nlp = spacy.blank("en")
    nlp.to_disk(tmp_path / "blank")
    with pytest.raises(ValueError, match="the base has none"):
        add_components(tmp_path / "blank", tmp_path / "out", [(pipelines / "textcat", ["textcat"])])
    with pytest.raises(ValueError, match="already has a component 'tok2vec'"):
        add_components(pipelines / "base", tmp_path / "out", [(pipelines / "textcat", ["tok2vec"])])
    with pytest.raises(ValueError, match="is not one of its components"):
        add_components(pipelines / "base", tmp_path / "out", [(pipelines / "textcat", ["parser"])])


def test_cli(pipelines, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["add-components", str(pipelines / "base"), str(tmp_path / "out"), "--from", f"{pipelines / 'textcat'}:textcat"])
    assert result.exit_code == 0, result.output
    assert spacy.load(tmp_path / "out").pipe_names == ["tok2vec", "ner", "textcat"]
    again = runner.invoke(app, ["add-components", str(pipelines / "base"), str(tmp_path / "out"), "--from", str(pipelines / "textcat")])
    assert again.exit_code == 1 and "exists" in again.output


def test_replace_puts_the_component_in_its_place(pipelines, tmp_path):
    """--replace: a component the base has is swapped for the source's, at the same place in
    the pipeline (the components after it still run after it), weights from the source."""
    src = spacy.load(pipelines / "other_base")
    src.add_pipe("sentencizer")
    src.to_disk(tmp_path / "src")
    nlp = add_components(pipelines / "base", tmp_path / "out", [(tmp_path / "src", ["tok2vec"])], replace=True)
    assert nlp.pipe_names == ["tok2vec", "ner"]
    assert nlp.get_pipe("tok2vec").to_bytes() == spacy.load(pipelines / "other_base").get_pipe("tok2vec").to_bytes()
    assert nlp.get_pipe("tok2vec").to_bytes() != spacy.load(pipelines / "base").get_pipe("tok2vec").to_bytes()
    runner = CliRunner()
    refused = runner.invoke(app, ["add-components", str(pipelines / "base"), str(tmp_path / "out2"), "--from", f"{tmp_path / 'src'}:tok2vec"])
    assert refused.exit_code == 1 and "--replace" in refused.output
    done = runner.invoke(app, ["add-components", str(pipelines / "base"), str(tmp_path / "out2"), "--from", f"{tmp_path / 'src'}:tok2vec", "--replace"])
    assert done.exit_code == 0, done.output
    assert spacy.load(tmp_path / "out2").pipe_names == ["tok2vec", "ner"]
