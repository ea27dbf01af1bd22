"""A long document runs through the encoder a few windows at a time at inference, with the
same outputs as all windows at once; training is unchanged."""
import numpy

from spacy_medllm.layers.chunked import ChunkedHFShim
from spacy_medllm.layers.quantize import hf_shim

from test_ner_trf import TRAIN, ents, trained  # noqa: F401  (the tiny transformer NER fixture)


def test_chunked_inference_matches_one_call(trained, monkeypatch):  # noqa: F811
    shim = hf_shim(trained.get_pipe("transformer").model)
    assert isinstance(shim, ChunkedHFShim)
    text = " ".join(t for t, _ in TRAIN) * 12  # windows of 16 pieces, stride 12: dozens of windows
    calls = []
    real = type(shim).__mro__[1].predict  # HFShim's (thinc's PyTorchShim) predict

    def counting(self, inputs):
        calls.append(inputs.kwargs["input_ids"].shape[0])
        return real(self, inputs)

    monkeypatch.setattr(ChunkedHFShim, "max_windows", 10_000)
    monkeypatch.setattr(type(shim).__mro__[1], "predict", counting)
    whole = trained(text)
    n_windows = calls[-1]
    assert n_windows > 6
    calls.clear()
    monkeypatch.setattr(ChunkedHFShim, "max_windows", 3)
    chunked = trained(text)
    assert calls == [3] * (n_windows // 3) + ([n_windows % 3] if n_windows % 3 else [])
    numpy.testing.assert_allclose(numpy.asarray(chunked._.trf_data.tensors[0]), numpy.asarray(whole._.trf_data.tensors[0]), rtol=1e-5, atol=1e-5)
    assert ents(chunked) == ents(whole)
