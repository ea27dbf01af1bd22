"""Coded error and warning messages.

Every message names what went wrong and is formatted with the offending value,
file and line, so a user can find the problem in their own data.
"""


class ErrorsWithCodes(type):
    def __getattribute__(self, code: str) -> str:
        msg = super().__getattribute__(code)
        if code.startswith("__"):
            return msg
        return f"[{code}] {msg}"


class Warnings(metaclass=ErrorsWithCodes):
    W001 = "{path}: skipped {n} malformed record(s) ({reasons}); first: line {line}: {reason}"
    W002 = ("{path}, line {line}: mention text {given!r} differs from the text at its "
            "offsets {found!r}; the offsets are kept")
    W003 = "{path}: document {doc_id} occurs more than once; the later copy (line {line}) is dropped"


class Errors(metaclass=ErrorsWithCodes):
    E001 = "{path}, line {line}: {reason}"
    E003 = "{path}: file not found"
    E004 = "Unknown value for on_error: {value!r}. Use 'raise' or 'skip'."
    E005 = "{path}: the zip archive holds no brat .ann/.txt pairs"
    E006 = "{path}: column {column!r} is missing (columns: {columns})"
    E007 = "Unknown corpus format {fmt!r}. Known: {known}."
    E008 = ("Split fractions must be positive and sum below 1 (dev={dev}, test={test})")
    E009 = "{path}: not a directory of corpus files, or none of the expected files is in it: {expected}"
    E010 = "{path}: not a knowledge base file: {reason}"
    E011 = ("{path}: knowledge base format version {version} is newer than this spacy_medllm "
            "supports ({supported}); upgrade spacy_medllm or rebuild the knowledge base")
    E013 = ("{name}: no knowledge base. Initialize the component with a kb_path "
            "([initialize.components.{name}] kb_path = \"corpus/kb\") or call set_kb() first.")
    E014 = "{path}: the linker model could not be loaded from this file"
    E015 = "{path}: not a knowledge graph embedding table: {reason}"
    E016 = ("{path}: embedding table format version {version} is newer than this spacy_medllm "
            "supports ({supported}); upgrade spacy_medllm or export the table again with `medllm train-kg`")
    E017 = ("KGAttention: no embedding table to initialize from. Set embeddings_path (the folder "
            "written by `medllm train-kg`) and kb_path on the layer, e.g. "
            "[components.ner.model.tok2vec] embeddings_path = \"corpus/kg/embeddings\" kb_path = \"corpus/kb\"")
    E018 = ("KGAttention: none of the {n} entities of the embedding table {path} has a name in the "
            "knowledge base {kb}; were the graph and the table built from this knowledge base?")
    E019 = "KGAttention: attention_width ({width}) must be a positive multiple of n_heads ({n_heads})"
    E020 = "KGAttention: the layer's weights could not be loaded: {reason}"
    E021 = ("KGAttention: the layer is not initialized (no alias matcher or embedding table); call "
            "nlp.initialize() or load a trained pipeline")
    E022 = "{path}: no triples to train on"
    E023 = "Unknown PyKEEN model {name!r}: {reason}"
    E024 = "Held-out fraction {value} must be between 0 and 0.5"
    E030 = ("{name}: the relation extractor is not initialized (no relation labels or input width); "
            "train it, call nlp.initialize(), or load a trained pipeline")
    E031 = "Unknown candidate level {level!r}; use one of: {levels}"
    E032 = "{name}: the relation model could not be loaded from {path}: {reason}"
    E033 = "Candidate pairs must be [head label, tail label] pairs of strings (\"*\" for any label); got {value!r}"
    E034 = "max_pairs ({max_pairs}) must be at least 1 and max_distance ({max_distance}) null or non-negative"
    E035 = ("{name}: no relation labels: the training examples hold no relation records in "
            "doc._.medllm_rels (were the .spacy files saved with user data?) and no labels were given")
    E036 = "Concept hierarchy {path}: {reason}"
    E037 = "{name}: learn_rate_scale must be positive; got {value}"
    E038 = "{name}: relative_threshold must be in (0, 1] or null; got {value}"
    # pretraining (E080-E089)
    E080 = "{path}, line {line}: {reason}"
    E081 = "--gpu-id {gpu_id}: no CUDA device is available (install a CUDA build of torch, or use --gpu-id -1)"
    E082 = "Pretraining: cannot find the transformer blocks of a {name} model (expected encoder.layer, transformer.layer or layers)"
    E083 = "Pretraining: cannot freeze {n} layers of an encoder with {total}; use 0 to {total}"
    E084 = "Pretraining: no training text in {sources} (every document empty or held out?)"
    E085 = "{path}: not a pretraining checkpoint this spacy_medllm can resume: {reason}"
    E086 = ("{path} already holds a pretraining checkpoint: pass --resume to continue it, or choose "
            "another output folder")
    E087 = "Pretraining needs a fast (Rust) tokenizer for whole-word masking; {name} has none"
    # relation knowledge, candidate index, augmenter (E050-E059)
    E050 = "{path}: not a relation knowledge file (prior counts and hierarchy): {reason}"
    E051 = "{path}: not a candidate index file: {reason}; rebuild the index with `medllm build-kb`"
    E052 = ("{path}: this candidate index was built from another knowledge base than {kb} ({reason}); "
            "rebuild the index from this knowledge base with `medllm build-kb`, or load the knowledge base it was built from")
    # linker, relations, KG attention fixes (E040-E049)
    E040 = ("{name}: the linker is not initialized (its model has not been set up on training "
            "examples); call nlp.initialize() or load a trained pipeline")
    # de-identification (E060-E079)
    E060 = "medllm_deid: unknown replace mode {value!r}; use one of: {modes}"
    E061 = "medllm_deid: shift_days must be [low, high] with low <= high and not both 0; got {value}"
    E062 = "No medllm_deid component wrote doc._.deid_text (pipeline: {pipes}); add one with replace = \"surrogate\" or \"tag\""
    E063 = "{path}: the output exists; pass --force to replace it"
    E064 = "{path}: the output is the input, or lies inside it ({input}); choose another output path"
    E065 = "{path}, {position}: corrupt record: {reason}"
    E066 = "{path}: unknown input format {fmt!r}; known: {known}"
    E067 = "{path}: column {column!r} is missing (columns: {columns}); choose one with --column"
    E068 = "{path}: input not found"
    E069 = "{path}: a .spacy output needs a .spacy input, and a .spacy input a .spacy output"
    E088 = "{path}: not a synonym list: expected a JSON object {{\"word\": [\"synonym\", ...]}}"
    E089 = "Unknown EDA operation(s) {op!r}; use some of: {known}"
    # vocabularies, alternative ids (E090-E099)
    E090 = "Unknown primary_ids {value!r}; use one of: {known}"
    E091 = "Unknown KB use {value!r}; use one of: {known}"
    E092 = "Unknown supplementary record scope {value!r}; use one of: {known}"
    E093 = "The supplementary record scope 'actions' needs the pharmacological-actions table (--mesh-actions): it names the records that table lists"
    # augmenters, evaluation (E100-E109)
    E100 = "Unknown replacement mode {mode!r}; use one of: {known}"
    # evaluation and threshold tuning (E120-E129)
    E120 = "{path}: the output exists; pass --force to replace it"
    E121 = ("{path}: the output is an input pipeline, lies inside one or holds one ({input}); "
            "write the tuned pipeline to another folder (e.g. model-tuned beside model-best)")
    E122 = "{path}: no medllm_rel component (pipeline: {pipes})"
    E123 = "{path}: no relation component {name!r} to take thresholds from (its relation components: {names})"
    E124 = ("{path}: component {name!r} has no tuned thresholds; tune that pipeline on its dev set "
            "first (medllm tune-thresholds)")
    E125 = "{path}: no {factory} component (pipeline: {pipes})"
    E126 = "tune-thresholds: give either --dev DEV.spacy (tune) or --from TUNED_MODEL (copy), not {given}"
    E127 = "evaluating {model} failed: {reason}"
    E128 = "data set {name}: {path} not found"
    E129 = "{path}: building the scispaCy peer's index failed (exit code {code}); see the messages above"
    # torch layers' weights, linker features (E130-E139)
    E130 = "{name}: the torch module cannot be replaced: {reason}"
    E131 = "{name}: the saved weights cannot be read: {reason}"
    E132 = "{name}: the saved weights are of an unsupported format: {reason}"
    E133 = "{name}: the saved weights do not fit the module: {reason}"
    E134 = "{name}: the model could not be loaded from {path}: {reason}"
    E135 = "{name}: unknown linker feature {feature!r} in {featurizer}; known: {known}"
    E136 = "{name}: the model reads {width} features per candidate, the featurizer {featurizer} gives {n}; set the model's n_features to {n} (or leave it to the component)"
    # multi-task corpora (E137-E139)
    E137 = "spacy_medllm.MultiTaskCorpus.v1: source {name!r} needs a `path`, and optionally `annotations` and `limit`; got {value}"
    E138 = "spacy_medllm.MultiTaskCorpus.v1: source {name!r}: annotations {value} are not a subset of {known} (\"relations\" needs \"ents\")"
    # int8 quantization (E140-E149)
    E140 = "the encoder is quantized to int8 (dynamic quantization, `medllm quantize`) and runs for inference only; train the fp32 pipeline it was made from"
    E141 = "{name}: no Hugging Face transformer in this model to quantize"
    E142 = "{path}: no transformer component to quantize (pipeline: {pipes})"
    E143 = "{name}: the encoder's architecture is {arch}; `medllm quantize` handles spacy_medllm.TransformerModel.v1 and spacy-transformers.TransformerModel.v3"
    E145 = "the knowledge base holds {sources}, whose terms allow local use only: build a package KB without them (`medllm build-kb --use package`, `spacy project run build-kb-package`), or pass --local-only for a package that stays on this site"
    # medllm annotate (E146-E153)
    E146 = "{path}, line {line}: not an annotation record (JSON with an 'id'); --resume reads the ids already written: is this the output of medllm annotate?"
    E147 = "{path}: the output exists; pass --resume to continue it or --force to replace it"
    E148 = "{path}: the output is a folder; annotate writes one JSONL file"
    E149 = "the Ray engine needs Ray Data: pip install 'spacy_medllm[ray]' (or pip install 'ray[data]')"
    E150 = "the Ray engine loads the pipeline in every actor: give its package name or path, not a loaded {model}"
    E151 = "workers={workers}, window={window}, batch_size={batch_size}: each must be at least 1"
    E152 = "{model}: neither a pipeline folder nor an installed pipeline package; every Ray node must be able to load it"
    E153 = "a Ray actor failed: {error} (the documents before it are in {output}; run again with --resume)"
    # dense name encoder and index (E154-E159)
    E154 = "{path}: {reason}"
    E155 = "{kb} has {n} concepts with two or more names: the name encoder trains on synonym sets and needs at least 2"
    E156 = ("{path} already holds a name-encoder checkpoint: pass --resume to continue it, or choose "
            "another output folder")
    # adding trained components to another pipeline (E157-E159)
    E157 = "{source}: '{name}' {reason}"
    E158 = ("{source}: '{name}' reads the output of '{upstream}', and {base}'s '{upstream}' is not the one it "
            "was trained on ({reason}); train it on that pipeline's frozen encoder (e.g. --paths.ner_model {base})")
    E159 = "{base} already has a component '{name}': the added one would replace it (--replace to replace it in its place)"
    E160 = ("{files}: no linked mention names a concept of {kb} that the name encoder trains on (a concept with "
            "two or more names, not held out): check that the files are annotated with this KB's ids")
