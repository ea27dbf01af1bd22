"""A long document runs through the encoder a few windows at a time at inference, with the
same outputs as all windows at once; training is unchanged."""
import numpy
import pytest

from spacy_medllm.layers.chunked import MIN_ROWS, ChunkedHFShim, exact_attention
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
    monkeypatch.setattr(ChunkedHFShim, "group_windows", 10_000)
    monkeypatch.setattr(type(shim).__mro__[1], "predict", counting)
    whole = trained(text)
    n_windows = calls[-1]
    assert n_windows > 6
    calls.clear()
    monkeypatch.setattr(ChunkedHFShim, "max_windows", 3)
    chunked = trained(text)
    assert calls == [3] * (n_windows // 3) + ([n_windows % 3] if n_windows % 3 else [])
    mask = numpy.asarray(whole._.trf_data.tokens["attention_mask"]).astype(bool)  # padding is not read
    numpy.testing.assert_allclose(numpy.asarray(chunked._.trf_data.tensors[0])[mask], numpy.asarray(whole._.trf_data.tensors[0])[mask], rtol=1e-5, atol=1e-5)
    assert ents(chunked) == ents(whole)


def test_windows_grouped_by_length_and_cut_to_their_longest(trained, monkeypatch):  # noqa: F811
    """Windows of different lengths are encoded in length-sorted groups, each cut to its own
    longest window: no call computes more padding than its group needs, and every real
    piece gets the same output as in one uncut call."""
    shim = hf_shim(trained.get_pipe("transformer").model)
    words = [t for t, _ in TRAIN]
    texts = [" ".join(words[: 3 + 5 * i]) for i in range(8)] + [" ".join(words) * 3]
    real = type(shim).__mro__[1].predict
    calls = []

    def recording(self, inputs):
        mask = inputs.kwargs["attention_mask"]
        calls.append((mask.shape[1], int(mask.sum(dim=1).max()), mask.shape[0]))
        return real(self, inputs)

    monkeypatch.setattr(type(shim).__mro__[1], "predict", recording)
    monkeypatch.setattr(ChunkedHFShim, "group_windows", 10_000)
    whole = list(trained.pipe(texts, batch_size=len(texts)))
    assert len(calls) == 1
    padded = calls[0][0]
    calls.clear()
    monkeypatch.setattr(ChunkedHFShim, "group_windows", 3)
    grouped = list(trained.pipe(texts, batch_size=len(texts)))
    assert len(calls) > 2 and all(n <= 3 for _, _, n in calls)
    # each call cut to its longest window, or padded to MIN_ROWS pieces when it holds fewer
    assert all(width == max(longest, -(-MIN_ROWS // n)) for width, longest, n in calls)
    assert all(width * n >= MIN_ROWS for width, _, n in calls)
    assert min(width for width, _, _ in calls) < padded
    for a, b in zip(grouped, whole):
        out_a, out_b = a._.trf_data.model_output.last_hidden_state, b._.trf_data.model_output.last_hidden_state
        assert out_a.shape == out_b.shape  # put back at the batch's padded length
        mask = numpy.asarray(a._.trf_data.tokens["attention_mask"]).astype(bool)
        numpy.testing.assert_allclose(numpy.asarray(out_a)[mask], numpy.asarray(out_b)[mask], rtol=1e-5, atol=1e-5)
        assert ents(a) == ents(b)


def rows_round_alike() -> bool:
    """Whether this machine's CPU matrix product gives a row the same bits in products of 12 or
    more rows (what MIN_ROWS relies on; measured on the reference machine's torch 2.13)."""
    import torch

    torch.manual_seed(0)
    linear, x = torch.nn.Linear(64, 48), torch.randn(200, 64)
    with torch.no_grad():
        full = linear(x)
        return all(torch.equal(full[:m], linear(x[:m])) for m in (12, 13, 17, 31, 64, 100))


def real_pieces(doc):
    """Each window's outputs on its real pieces (the padding dropped), as arrays."""
    out = numpy.asarray(doc._.trf_data.tensors[0])
    lengths = numpy.asarray(doc._.trf_data.tokens["attention_mask"]).sum(axis=1)
    return [out[w, : int(n)] for w, n in enumerate(lengths)]


def test_a_windows_output_does_not_depend_on_its_batch(trained):  # noqa: F811
    """Each window attends over its own keys only and every call holds MIN_ROWS pieces or
    more, so a text's encoder outputs are the same bits alone and in any batch: texts of
    many lengths (one of a single word, several of many windows), batches of 1 to all."""
    if not rows_round_alike():
        pytest.skip("this CPU's matrix product rounds a row by the product's size beyond MIN_ROWS")
    shim = hf_shim(trained.get_pipe("transformer").model)
    words = [t for t, _ in TRAIN]
    texts = ["Lithium", "Cisplatin induced fever ."] + [" ".join(words[: 1 + i % 3]) * (1 + i) for i in range(7)]
    alone = [real_pieces(trained(t)) for t in texts]
    for size in (2, 3, len(texts)):
        for doc, expected in zip(trained.pipe(texts, batch_size=size), alone):
            got = real_pieces(doc)
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                numpy.testing.assert_array_equal(a, b)
    # inference put the per-window forward on every self-attention layer (once); the encoder
    # still pickles and deep-copies (multiprocessing, copies of a pipeline) and predicts alike
    patched = [m for m in shim._model.modules() if "forward" in vars(m)]
    assert len(patched) == shim._model.config.num_hidden_layers == exact_attention(shim._model)
    import copy
    import pickle

    import torch

    ids = torch.tensor([[2, 5, 6, 3, 0, 0], [2, 7, 8, 9, 10, 3]])
    mask = (ids != 0).long()
    for other in (pickle.loads(pickle.dumps(shim._model)), copy.deepcopy(shim._model)):
        assert exact_attention(other) == shim._model.config.num_hidden_layers
        other.eval()
        shim._model.eval()
        with torch.no_grad():
            assert torch.equal(other(input_ids=ids, attention_mask=mask).last_hidden_state,
                               shim._model(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_lean_loading_gives_the_stock_loaders_model(trained):  # noqa: F811
    """`ChunkedHFShim.from_bytes` (decoded once, no random init, tensors assigned) loads the
    same weights and buffers as spacy-transformers' own `HFShim.from_bytes`, and the model
    predicts the same."""
    import torch
    from spacy_transformers.layers.hf_shim import HFShim

    shim = hf_shim(trained.get_pipe("transformer").model)
    data = shim.to_bytes()
    stock = HFShim.from_bytes(shim, data)._model
    stock_state = {k: v.clone() for k, v in stock.state_dict(keep_vars=False).items()}
    stock_buffers = {k: v.clone() for k, v in stock.named_buffers()}
    lean = ChunkedHFShim.from_bytes(shim, data)._model
    assert lean is not stock and shim._hfmodel.transformer is lean
    lean_state = lean.state_dict()
    assert lean_state.keys() == stock_state.keys()
    for key, value in stock_state.items():
        assert torch.equal(lean_state[key], value), key
    for key, value in lean.named_buffers():  # non-persistent buffers (position ids) are built, not loaded
        assert value.device.type != "meta" and torch.equal(value, stock_buffers[key]), key
    text = " ".join(t for t, _ in TRAIN)
    assert ents(trained(text))  # the fixture's NER still finds its entities with the reloaded encoder


def test_base_model_class_is_what_automodel_picks(tiny_bert):
    """Loading a saved transformer looks its class up by model type alone (no scan of every
    model transformers knows) and gets AutoModel's class; anything else falls back to AutoModel."""
    import transformers
    from transformers import AutoConfig, AutoModel

    from spacy_medllm.layers.encoder import base_model_class, model_from_config

    config = AutoConfig.from_pretrained(str(tiny_bert))
    assert base_model_class(config) is transformers.BertModel
    model = model_from_config(config)
    assert type(model) is type(AutoModel.from_config(config)) is transformers.BertModel

    class Custom(transformers.BertConfig):
        model_type = "bert"

    assert base_model_class(Custom()) is AutoModel
    assert base_model_class(transformers.PretrainedConfig()) is AutoModel
