"""`medllm quantize`: an int8 encoder that saves, loads with the stock loader, predicts the
same after the round trip, refuses to train, and refuses bad paths."""
import numpy
import pytest
import spacy
from spacy import util
from spacy.training import Example
from thinc.api import Adam
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.layers.quantize import QuantizedHFShim, hf_shim, is_quantized

from test_chunked import rows_round_alike
from test_ner_trf import TRAIN, ents, trained  # noqa: F401  (the tiny transformer NER fixture)

TEXTS = [t for t, _ in TRAIN] + ["Propofol and cisplatin were given; lithium caused fever .", ""]


@pytest.fixture(scope="module")
def pipeline(trained, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("fp32") / "model"
    trained.to_disk(path)
    return path


def token_vectors(nlp, text):
    return numpy.asarray(nlp(text)._.trf_data.tensors[0]).copy()


def assert_same_bits_after_a_round_trip(nlp, path):
    """Saved to `path` and loaded: the same entities and the same token vectors, bit for bit."""
    nlp.to_disk(path)
    again = spacy.load(path)
    for text in TEXTS:
        assert ents(again(text)) == ents(nlp(text))
        if text:
            numpy.testing.assert_array_equal(token_vectors(again, text), token_vectors(nlp, text))


def test_quantize_round_trip(pipeline, tmp_path):
    out = tmp_path / "int8"
    result = CliRunner().invoke(app, ["quantize", str(pipeline), str(out)])
    assert result.exit_code == 0, result.output
    model_cfg = util.load_config(out / "config.cfg")["components"]["transformer"]["model"]
    assert model_cfg["quantize"] is True and model_cfg["quantize_activations"] == "per_token"  # the default
    nlp = spacy.load(out)
    shim = hf_shim(nlp.get_pipe("transformer").model)
    assert isinstance(shim, QuantizedHFShim) and is_quantized(shim._model)
    assert shim.activations == "per_token" and "Int8Linear" in nlp.meta["quantized"]["method"]
    assert nlp.meta["quantized"]["components"] == ["transformer"]
    # saved again and reloaded: the same int8 encoder, the same predictions and vectors
    nlp.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again")
    for text in TEXTS:
        assert ents(again(text)) == ents(nlp(text))
        if text:
            numpy.testing.assert_allclose(token_vectors(again, text), token_vectors(nlp, text), rtol=1e-5, atol=1e-6)
    # close to the fp32 encoder it was made from (int8 weights, not another model)
    fp32 = spacy.load(pipeline)
    a, b = token_vectors(fp32, TEXTS[3]), token_vectors(nlp, TEXTS[3])
    assert numpy.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    # inference only
    with pytest.raises(ValueError, match="E140"):
        nlp.update([Example.from_dict(nlp.make_doc(TRAIN[0][0]), {"entities": TRAIN[0][1]})], sgd=Adam(1e-3))


def test_quantize_refuses_bad_paths(pipeline, tmp_path):
    runner = CliRunner()
    same = runner.invoke(app, ["quantize", str(pipeline), str(pipeline)])
    assert same.exit_code == 1 and "is the input pipeline" in same.output
    (tmp_path / "exists").mkdir()
    exists = runner.invoke(app, ["quantize", str(pipeline), str(tmp_path / "exists")])
    assert exists.exit_code == 1 and "--force" in exists.output
    missing = runner.invoke(app, ["quantize", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert missing.exit_code == 1 and "not a pipeline folder" in missing.output
    cnn = spacy.blank("en")
    cnn.add_pipe("ner")
    cnn.initialize()
    cnn.to_disk(tmp_path / "cnn")
    no_trf = runner.invoke(app, ["quantize", str(tmp_path / "cnn"), str(tmp_path / "out")])
    assert no_trf.exit_code == 1 and "E142" in no_trf.output and not (tmp_path / "out").exists()


def test_keep_some_layers_fp32(pipeline, tmp_path):
    import torch

    out = tmp_path / "int8_ffn"
    result = CliRunner().invoke(app, ["quantize", str(pipeline), str(out), "--keep-fp32", "attention"])
    assert result.exit_code == 0, result.output
    nlp = spacy.load(out)
    model = hf_shim(nlp.get_pipe("transformer").model)._model
    kinds = {name: type(m) for name, m in model.named_modules() if "dense" in name or name.endswith(("query", "key", "value"))}
    assert kinds and all((k is torch.nn.Linear) == ("attention" in name) for name, k in kinds.items())
    assert nlp.meta["quantized"]["kept_fp32"] == ["attention"]
    nlp.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again")
    for text in TEXTS:
        assert ents(again(text)) == ents(nlp(text))


def test_empty_keep_pattern_quantizes_every_linear(pipeline, tmp_path):
    """`--keep-fp32 ''` (the project's quantize_keep_fp32 left empty) keeps nothing fp32; it
    must not match every layer name as an empty substring would."""
    import torch

    from spacy_medllm.layers.int8 import Int8Linear

    for activations, kind in (("per_token", Int8Linear), ("per_call", torch_dynamic_linear())):
        out = tmp_path / f"int8_all_{activations}"
        result = CliRunner().invoke(app, ["quantize", str(pipeline), str(out), "--keep-fp32", "", "--activations", activations])
        assert result.exit_code == 0, result.output
        nlp = spacy.load(out)
        model = hf_shim(nlp.get_pipe("transformer").model)._model
        linears = [type(m) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch_dynamic_linear(), Int8Linear))]
        assert linears and all(k is kind for k in linears)
        assert nlp.meta["quantized"]["kept_fp32"] == []


def test_activation_range(pipeline, tmp_path):
    """quantize_full_range: all 256 activation levels or PyTorch's 128, chosen in the config
    (None: by the CPU); the two differ, and each is closer to fp32 than noise."""
    from spacy_medllm.layers.quantize import _quantized_linears, cpu_has_vnni

    out = tmp_path / "int8"
    assert CliRunner().invoke(app, ["quantize", str(pipeline), str(out), "--activations", "per_call"]).exit_code == 0
    fp32 = token_vectors(spacy.load(pipeline), TEXTS[3])
    vectors = {}
    for full in (True, False, None):
        nlp = spacy.load(out, config={"components": {"transformer": {"model": {"quantize_full_range": full}}}})
        linears = list(_quantized_linears(hf_shim(nlp.get_pipe("transformer").model)._model))
        assert linears
        used = cpu_has_vnni() if full is None else full
        assert all(("forward" in vars(linear)) == used for _, linear in linears)
        vectors[full] = token_vectors(nlp, TEXTS[3])
        assert numpy.corrcoef(fp32.ravel(), vectors[full].ravel())[0, 1] > 0.99
    assert not numpy.array_equal(vectors[True], vectors[False])
    numpy.testing.assert_array_equal(vectors[None], vectors[cpu_has_vnni()])


def test_smoothing_is_exact_in_fp32():
    """Folding the factors into the weights' columns and dividing the inputs by them leaves
    a Linear's function unchanged (before any rounding to int8)."""
    import copy

    import torch

    from spacy_medllm.layers.smooth import SmoothedLinear, activation_maxima, fold_into_weights, smoothing_factors, wrap

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    x = torch.randn(32, 8) * torch.tensor([1.0] * 7 + [40.0])  # one outlier channel
    maxima = activation_maxima(net, lambda: net(x), ["0", "2"])
    assert maxima["0"].shape == (8,) and float(maxima["0"][7]) == float(x[:, 7].abs().max())
    factors = smoothing_factors(net, maxima, alpha=0.5)
    smoothed = copy.deepcopy(net)
    wrap(smoothed, fold_into_weights(smoothed, factors))
    assert isinstance(smoothed[0], SmoothedLinear) and isinstance(smoothed[2], SmoothedLinear)
    torch.testing.assert_close(smoothed(x), net(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        smoothing_factors(net, maxima, alpha=1.5)
    with pytest.raises(ValueError, match="input channels"):
        fold_into_weights(copy.deepcopy(net), {"0": [1.0] * 3})


def test_quantize_with_smoothing_round_trip(pipeline, tmp_path):
    from spacy_medllm.layers.smooth import SmoothedLinear

    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(f'{{"text": "{t}"}}\n' for t in TEXTS if t), encoding="utf8")
    out = tmp_path / "int8_smooth"
    # PyTorch's dynamic int8 Linear smoothed (test_quantize_per_token_activations: Int8Linear)
    result = CliRunner().invoke(app, ["quantize", str(pipeline), str(out), "--calibrate", str(calib), "--smooth-alpha", "1.0",
                                      "--keep-fp32", "encoder.layer.0.", "--activations", "per_call"])
    assert result.exit_code == 0, result.output
    assert util.load_config(out / "config.cfg")["components"]["transformer"]["model"]["quantize_activations"] == "per_call"
    nlp = spacy.load(out)
    assert nlp.meta["quantized"]["smoothing"]["alpha"] == 1.0 and nlp.meta["quantized"]["smoothing"]["calibration_texts"] == len(TEXTS) - 1
    model = hf_shim(nlp.get_pipe("transformer").model)._model
    smoothed = [name for name, m in model.named_modules() if isinstance(m, SmoothedLinear)]
    quantized = [name for name, m in model.named_modules() if isinstance(m, torch_dynamic_linear())]
    assert smoothed and all(".layer.0." not in name for name in smoothed)
    assert len(quantized) == len(smoothed)  # every int8 layer is smoothed; the fp32 ones are not
    assert_same_bits_after_a_round_trip(nlp, tmp_path / "again")
    fp32 = spacy.load(pipeline)
    a, b = token_vectors(fp32, TEXTS[3]), token_vectors(nlp, TEXTS[3])
    assert numpy.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_quantize_per_token_activations(pipeline, tmp_path):
    """`--activations per_token`: Int8Linear layers (smoothed too), no PyTorch quantized
    Linear after loading, the same bits after a save and load, and a text's vectors that do
    not depend on the other texts of its batch."""
    from spacy_medllm.layers.int8 import Int8Linear
    from spacy_medllm.layers.smooth import SmoothedLinear

    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(f'{{"text": "{t}"}}\n' for t in TEXTS if t), encoding="utf8")
    out = tmp_path / "int8_token"
    result = CliRunner().invoke(app, ["quantize", str(pipeline), str(out), "--activations", "per_token", "--calibrate", str(calib),
                                      "--smooth-alpha", "1.0", "--keep-fp32", "encoder.layer.0."])
    assert result.exit_code == 0, result.output
    assert util.load_config(out / "config.cfg")["components"]["transformer"]["model"]["quantize_activations"] == "per_token"
    nlp = spacy.load(out)
    assert nlp.meta["quantized"]["activations"].startswith("quantized per token")
    model = hf_shim(nlp.get_pipe("transformer").model)._model
    int8 = [name for name, m in model.named_modules() if isinstance(m, Int8Linear)]
    assert int8 and not any(isinstance(m, torch_dynamic_linear()) for m in model.modules())
    assert len([m for m in model.modules() if isinstance(m, SmoothedLinear)]) == len(int8)
    assert all(".layer.0." not in name for name in int8)
    assert_same_bits_after_a_round_trip(nlp, tmp_path / "again")
    # a text alone and beside another text of its length: the same vectors; beside shorter and
    # longer texts (padding), its real pieces the same too
    text = TEXTS[3]
    alone = token_vectors(nlp, text)
    docs = list(nlp.pipe([text, text.upper()], batch_size=2))
    numpy.testing.assert_array_equal(numpy.asarray(docs[0]._.trf_data.tensors[0]), alone)
    if rows_round_alike():
        for other in ("Lithium .", TEXTS[0] + " " + TEXTS[1] + " " + TEXTS[2]):
            for doc in (list(nlp.pipe([other, text], batch_size=2))[1], list(nlp.pipe([text, other], batch_size=2))[0]):
                lengths = numpy.asarray(doc._.trf_data.tokens["attention_mask"]).sum(axis=1)
                out = numpy.asarray(doc._.trf_data.tensors[0])
                for w, n in enumerate(lengths):
                    numpy.testing.assert_array_equal(out[w, : int(n)], alone[w, : int(n)])
    fp32 = spacy.load(pipeline)
    assert numpy.corrcoef(token_vectors(fp32, text).ravel(), alone.ravel())[0, 1] > 0.99
    bad = CliRunner().invoke(app, ["quantize", str(pipeline), str(tmp_path / "bad"), "--activations", "per_word"])
    assert bad.exit_code == 1 and "per_word" in bad.output and not (tmp_path / "bad").exists()


def torch_dynamic_linear():
    import torch

    return torch.ao.nn.quantized.dynamic.Linear


def test_quantize_calibration_errors(pipeline, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["quantize", str(pipeline), str(tmp_path / "o1"), "--calibrate", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 1 and "no such calibration file" in missing.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf8")
    broken = runner.invoke(app, ["quantize", str(pipeline), str(tmp_path / "o2"), "--calibrate", str(bad)])
    assert broken.exit_code == 1 and f"{bad}:2" in broken.output
    other = tmp_path / "calib.txt"
    other.write_text("text\n", encoding="utf8")
    wrong = runner.invoke(app, ["quantize", str(pipeline), str(tmp_path / "o3"), "--calibrate", str(other)])
    assert wrong.exit_code == 1 and ".spacy DocBin or a .jsonl" in wrong.output
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
