"""Every event a producer may emit: its fields and their types (a TypedDict per (stage, kind)), and one line
that describes it. The console, the dashboard and the static HTML all describe events through `describe`.

A field that is NotRequired may be absent; one typed `X | None` is always there and may be null. Readers index
declared fields directly (`data["prob"]`): `explain.events.check_event` has proven they are there.
"""

from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict

from ..utils.config_names import common_config
from ..utils.units import size_text


# -- pieces shared by several kinds ---------------------------------------------------------------------
class Top(TypedDict):
    """The highest entries of a row over the vocabulary, best first (token ids and their values)."""

    ids: list[int]
    values: list[float]


class CacheSize(TypedDict):
    length: int  # positions held
    bytes: int


class ErrorInfo(TypedDict):
    type: str
    message: str


# -- loading: run 0 -------------------------------------------------------------------------------------
class RegistryLookup(TypedDict):
    task_asked: str
    task: str
    pipeline_class: str
    model_class: str | None
    default_model: str | None
    default_revision: str | None
    type: str
    alias_of: str | None
    historical_default: dict[str, str]
    known_tasks: list[str]
    runnable_tasks: list[str]
    model_used: str
    revision_used: NotRequired[str | None]
    gguf_file_used: NotRequired[str | None]
    default_reason: str
    # backend="transformers" (explain/backends/transformers): the lookup transformers itself did
    backend: NotRequired[str]  # "transformers"
    pipeline_class_used: NotRequired[str]  # the traced subclass of the pipeline class transformers named
    trust_remote_code: NotRequired[bool]  # what the call asked


class QuantizationInfo(TypedDict):
    method: str  # the quant_method of transformers' quantization config (bitsandbytes, gptq, torchao, ...)
    config: dict[str, Any]
    quantizer: str | None  # transformers' HfQuantizer class that loaded the weights


class AdapterInfo(TypedDict):
    peft_type: str  # LORA, IA3, ...
    r: int | None
    lora_alpha: float | None
    target_modules: list[str] | str | None
    base_model: str | None


class HooksInfo(TypedDict):
    count: int  # accelerate hooks on the model's modules
    classes: dict[str, int]
    offloading_modules: int


class ConfigFile(TypedDict):
    repo: str
    filename: str
    revision_asked: str | None
    commit: str | None
    cache: str | None  # "hit", "miss" or "local folder"
    size: int | None
    path: str | None
    offline: bool
    absent: NotRequired[bool]  # an optional file the model does not have
    stage: NotRequired[str]  # backend="transformers": the loading stage that asked for the file


class ConfigConfig(TypedDict):
    source: str
    architecture: str
    model_type: str | None
    hyperparameters: dict[str, Any]
    checkpoint_dtype: str | None
    generation_config: dict[str, Any]
    generation_config_source: dict[str, str]
    has_generation_config_file: bool
    config_class: NotRequired[str]  # backend="transformers": the PretrainedConfig class transformers built
    remote_code: NotRequired[
        bool
    ]  # backend="transformers": the class came from the model's own code (trust_remote_code)
    given: NotRequired[bool]  # backend="transformers": the model was built by the caller (read off it, not loaded)


class SpecialToken(TypedDict):
    token: str | None
    id: int | None


class AddedToken(TypedDict):
    id: int
    token: str
    special: bool


class TokenizerLoad(TypedDict):
    path: str | None
    source: str
    model: str
    vocab_size: int
    num_merges: int | None
    special_tokens: dict[str, SpecialToken]
    added_tokens: list[AddedToken]
    add_bos_token: bool | None
    add_eos_token: bool | None
    model_max_length: int | None
    has_chat_template: bool
    chat_template: str | None
    normalizer: str | None
    pre_tokenizer: str | None
    post_processor: str | None
    decoder: str | None
    seconds: float
    tokenizer_class: NotRequired[str]  # backend="transformers": the tokenizer class transformers built
    remote_code: NotRequired[bool]
    given: NotRequired[bool]


class WeightsProgress(TypedDict):
    file: str
    done: int
    total: int


class ShapeMismatch(TypedDict):
    checkpoint: list[int]
    config: list[int]


class WeightsLoad(TypedDict):
    format: str
    files: list[str]
    tensors: int
    bytes: int
    parameters: int
    dtype: str
    stored_dtypes: dict[str, int]
    quantization_types: NotRequired[dict[str, int]]
    file_bytes: NotRequired[int]
    skeleton_seconds: float | None  # None: backend="transformers", which builds the skeleton inside its own loading
    missing: list[str]
    unexpected: list[str]
    unexpected_count: int
    mismatched: dict[str, ShapeMismatch]
    tied: dict[str, str]
    shards: NotRequired[int | None]
    backend: NotRequired[str]  # "explain" or "transformers": whose code built the model
    model_class: NotRequired[str]  # the model class that ran (explain's, or transformers' ...ForCausalLM)
    source_file: NotRequired[str | None]  # the file that class is written in (the dashboard links it)
    # backend="transformers": transformers' own loading report and what it loaded with
    parameter_dtypes: NotRequired[dict[str, int]]  # dtype -> parameters in it, after loading
    error_msgs: NotRequired[list[str]]
    conversion_errors: NotRequired[dict[str, Any]]
    quantization: NotRequired[QuantizationInfo | None]
    adapters: NotRequired[dict[str, AdapterInfo] | None]  # PEFT adapters transformers loaded, by adapter name
    remote_code: NotRequired[bool]
    seconds: NotRequired[float | None]
    given: NotRequired[bool]
    # which argument set the dtype: "dtype", "torch_dtype", "model_kwargs['dtype']", "model_kwargs['torch_dtype']",
    # 'default ("auto")'; and the warnings it raised (torch_dtype: transformers 5's deprecation, word for word)
    dtype_argument: NotRequired[str]
    warnings: NotRequired[list[str]]
    kept_quantized: NotRequired[int]  # tensors kept as the file stores them (quantization="gguf")


class ProcessMemory(TypedDict):
    rss_bytes: int | None
    peak_rss_bytes: int | None
    source: str


class WeightsQuantize(TypedDict):
    """quantization="gguf" / "int8" / "int4" (explain.quantization), or on backend="transformers" the model's
    quantization_config (TorchAoConfig, QuantoConfig, ...; explain/backends/transformers/quantized.py): what is kept
    as integers, and what it saves."""

    method: str  # explain's method name, or transformers' quant_method ("torchao", "quanto", "bitsandbytes", ...)
    summary: str
    form: str  # "fast" / "exact" for gguf; the activations' dtype for int8 / int4 and on backend="transformers"
    label: str  # what the form is, in words
    compute_dtype: str  # the activations' dtype
    modules: dict[str, int]  # quantized layer class (transformers: "layer class (tensor class weight)") -> how many
    kernels: dict[str, str]  # quantized layer (transformers: tensor) class -> the op its products run in
    conversions: list[dict[str, Any]]  # {"from", "to", "tensors", "float_round_trip", "reason"}
    left_in_float: dict[str, str]  # tensor -> why it is not quantized (transformers: the linears it left in float)
    # stored type (Q4_1, F32, bfloat16...) -> bytes, in the file or as loaded; absent where the files are not known
    # (backend="transformers" with a model given or attached)
    bytes_before: NotRequired[dict[str, int]]
    bytes_after: dict[str, int]  # storage kind in memory -> bytes (transformers: "qdata (int8)", "scale (float32)")
    total_before: NotRequired[int]
    total_after: int
    float32_bytes: int  # the same parameters in float32, for scale
    parameters: int
    ratio_to_float32: float | None
    bits_per_parameter: float | None
    process_memory: ProcessMemory
    seconds: NotRequired[
        float
    ]  # explain's install time; absent on backend="transformers", which quantizes while loading
    # backend="transformers"
    backend: NotRequired[str]
    config: NotRequired[dict[str, Any]]  # the quantization config as transformers writes it (to_dict), as text
    quantizer: NotRequired[str | None]  # transformers' HfQuantizer class
    bytes_before_source: NotRequired[str]  # "checkpoint files": bytes_before read from the files' headers
    given: NotRequired[bool]  # read off a model built outside explain (explain.attach or a model object)


class AdaptedModule(TypedDict):
    module: str
    rank: int
    scaling: float  # alpha / r (alpha / sqrt(r) with rsLoRA)
    in_features: int
    out_features: int
    parameters: int  # of lora_A and lora_B
    bytes: int
    base_parameters: int
    delta_norm: float  # ||scaling B A||, Frobenius
    weight_norm: float  # ||W|| of the base layer
    relative_change: float | None
    base_layer: str  # the class of the adapted layer (Linear, Int4Linear, ...)


class WeightsAdapter(TypedDict):
    """A PEFT LoRA adapter applied on top of the loaded weights (explain.adapters)."""

    adapter: str
    path: str
    peft_type: str
    applied_with: str
    base_model_name_or_path: str | None
    r: int
    lora_alpha: float
    use_rslora: bool
    target_modules: Any
    layers: int
    modules: list[AdaptedModule]
    adapter_parameters: int
    base_parameters: int
    share_of_base: float
    adapter_bytes: int
    merged: bool
    formula: str
    given: NotRequired[bool]  # backend="transformers": read off a model built outside explain (explain.attach)
    warnings: NotRequired[list[str]]  # the adapter names another base model than the one loaded


class WeightsAdapterMerge(TypedDict):
    adapter: str
    merged: bool  # True: W + (alpha / r) B A written into the weights; False: taken out again
    layers: int


class PlacementPlace(TypedDict):
    asked: dict[str, Any]
    strategy: str
    device_map: dict[str, str | int]
    reason: str
    devices: list[str]
    dtype: str
    no_split_module_classes: list[str]
    max_memory: NotRequired[dict[str, int | str]]
    budget: NotRequired[dict[str, int | float]]  # device_map="auto": the max_memory given to infer_auto_device_map
    headroom: NotRequired[list[str]]  # the steps from max_memory to budget, as transformers takes them
    bytes_per_device: dict[str, int]  # where the weights are stored (an offloaded module's: CPU RAM)
    tied: dict[str, str]
    modules: dict[str, str]
    layers: dict[str, str]
    main_device: str  # where inputs go
    execution_devices: dict[str, str]  # device-map module -> the device its forward runs on
    offloaded: list[str]  # modules whose weights stay in CPU RAM and are copied to main_device for every forward
    # backend="transformers"
    hooks: NotRequired[HooksInfo]
    max_memory_asked: NotRequired[dict[str, int | str] | None]
    offload_folder: NotRequired[str | None]
    given: NotRequired[bool]


# -- a call: run n ----------------------------------------------------------------------------------------
class Segment(TypedDict):
    role: str
    start: int
    end: int


class TokenizationEncode(TypedDict):
    kind_of_input: Literal["text", "chat"]
    text: str
    ids: list[int]
    tokens: list[str]
    offsets: list[list[int]] | None  # None: a tokenizer with no offsets (transformers' slow, Python tokenizers)
    special: list[bool]
    count: int
    add_special_tokens: bool
    chat_template_text: str | None
    segments: list[Segment] | None
    messages: NotRequired[list[dict[str, Any]]]
    add_generation_prompt: NotRequired[bool]
    hole: NotRequired[dict[str, int]]  # handle_long_generation="hole": the prompt's start was cut
    # truncation / max_length cut the prompt as transformers' tokenizer does: prompt_tokens, kept, side
    truncated: NotRequired[dict[str, Any]]
    # backend="transformers": the pipeline's own preprocess output
    attention_mask: NotRequired[list[int] | None]
    continue_final_message: NotRequired[bool]
    # a plain string went to a model that has a chat template, which transformers then does not apply
    # (pipelines/text_generation.py:349-350): the instruct model continues the text instead of answering it
    chat_template_skipped: NotRequired[bool]
    batch_row: NotRequired[int]  # a prompt of a batch (batch_size > 1): its index in the call's list


class PaddedRow(TypedDict):
    batch_row: int  # the prompt's index in the call's list
    ids: list[int]  # the row as the model gets it: pad tokens first, then the prompt's tokens
    pads: int  # how many pad tokens it starts with
    attention_mask: list[int]  # 0 for a pad, 1 for a real token


class TokenizationPad(TypedDict):
    """A batch of prompts collated into one tensor (transformers' pad_collate_fn): each row padded to the longest."""

    side: Literal["left", "right"]
    pad_token_id: int
    pad_token: str | None
    width: int  # the longest prompt's length: every row's length
    rows: list[PaddedRow]
    source: str  # where transformers does it, and why on that side


# the class that ran ("class", a keyword, hence the functional form): explain's, named after the transformers class it
# mirrors, or transformers' own (backend="transformers"); a processor the registry lacks is named after its class
ProcessorSpec = TypedDict(
    "ProcessorSpec",
    {
        "name": str,  # the knob that turned it on (explain.generation.processors: the registry)
        "args": dict[str, Any],
        "title": NotRequired[str],  # the short human title of its panel in the step view (absent in older traces)
        "class": NotRequired[str],
    },
)


class StrategyInfo(TypedDict):
    """The decoding strategy a call runs (explain.generation.strategies: the registry)."""

    name: str  # the registry's key: one_sequence, samples, beam_search, assisted
    mode: str  # transformers' GenerationMode: greedy_search, sample, beam_search, beam_sample, assisted_generation
    title: str
    label: str  # one line with its settings: "beam search: 4 beams, length_penalty 1.0, early_stopping False"
    description: str
    source: str  # where transformers runs it


class BatchNote(TypedDict):
    """A list of prompts: which one this call is, and how explain runs them."""

    index: int  # the (first) prompt's index in the list
    size: int | None  # None: a generator's prompts, whose number is not known ahead
    batch_size: int  # what the call asked for (transformers' pipeline default: 1)
    note: str
    # a batch of several prompts generated together (batch_size > 1)
    rows: NotRequired[list[int]]  # the prompts' indices in the list, in the batch's row order
    padding_side: NotRequired[str]  # "left", as transformers' text-generation pipeline pads
    pad_token_id: NotRequired[int]
    width: NotRequired[int]  # the padded length
    prompt_lengths: NotRequired[list[int]]  # each prompt's own tokens


class GenerationSettings(TypedDict):
    settings: dict[str, Any]
    sources: dict[str, str]
    processors: list[ProcessorSpec]
    prompt_tokens: int
    dtype: str
    device: str
    hole: NotRequired[dict[str, int]]
    warnings: NotRequired[list[str]]  # what the reader should know about this run (e.g. trace_top="all" costs,
    # the context window it may pass or stop at)
    context_window: NotRequired[int]  # the model's max_position_embeddings
    strategy: NotRequired[StrategyInfo]  # absent in older traces (one sequence, greedy or sampled)
    batch: NotRequired[BatchNote]  # the call was one prompt of a list
    # backend="transformers": the decoding mode generate() chose, and whether explain traces its steps (greedy
    # search and sampling of one sequence, beam search and greedy prompt lookup of one prompt); other assisted
    # decoding runs untraced, with the reason
    generation_mode: NotRequired[str]
    steps_traced: NotRequired[bool]
    why_not_traced: NotRequired[str]


class GenerationPrefill(TypedDict):
    prompt_tokens: int
    tokens_per_s: float
    kv_cache: CacheSize
    branch: int


class ProcessorStep(TypedDict):
    """What one logits processor did at one step."""

    name: str  # the knob that turned it on, e.g. "top_p"; "logits_processor" for one of the call's own
    title: NotRequired[str]  # the panel title in the step view, e.g. "top-p (nucleus)" (absent in older traces)
    args: dict[str, Any]
    removed: int  # tokens it made impossible (-inf)
    changed: int  # scores it changed
    kept: int  # tokens still possible after it
    top: Top | None  # the top scores after it, when it changed any
    token_score: NotRequired[float]  # the chosen token's score after it (present even when outside the top)
    token_rank: NotRequired[int]  # the chosen token's rank by those scores (1 = the highest); the step view shows
    # the chosen token in every panel with them. NotRequired: version-1 traces do not have them


class GenerationStep(TypedDict):
    step: int  # 0 for the first new token
    position: int  # its position in the sequence (prompt length + step)
    branch: int  # 0 for the run itself, n for the n-th forced branch of the run
    logits_top: Top  # the model's raw logits
    processors: list[ProcessorStep]
    probs_top: Top  # the distribution the token was picked from
    token_id: int
    token: str
    text: str | None  # the text this step completed (None for a forced token)
    method: Literal["greedy", "sample"]
    prob: float
    raw_prob: float
    logit: float
    rank: int  # 1 = the model's most likely token
    entropy_bits: float
    kv_cache: CacheSize
    forward: Literal["prefill", "decode"]
    forward_time: float | None
    token_texts: dict[str, str]  # token id (as JSON keys are strings) -> its text, for every id shown
    stop_reason: NotRequired[str | None]
    stopped_by: NotRequired[list[str]]  # backend="transformers": the stopping criteria (classes) that fired
    warnings: NotRequired[list[str]]  # the context window passed here (rotary positions go on, as in transformers)
    # or reached (learned positions: stop_reason "context_window")
    forced: NotRequired[bool]
    rows: NotRequired[dict[str, str]]  # trace_top="all": "logits", each processor, "probs" -> the whole row as
    # base64 of little-endian float32 (explain.generation.rows.decode_row)
    sequence: NotRequired[int]  # several sequences (samples, a batch): the row of the output (absent: 0, the only
    # one); generate()'s order: prompt b's sample s is row b * num_return_sequences + s
    batch_row: NotRequired[int]  # a batch of prompts: the row's prompt's index in the call's list (its "position"
    # is then the row's own: its prompt's length + step, the position id the model gives it, pads not counted)
    round: NotRequired[int]  # assisted decoding: the draft-and-check round that produced the token
    drafted: NotRequired[bool]  # assisted decoding: a drafted token the model accepted (False: the model's own)


class BeamState(TypedDict):
    beam: int  # its slot among the running beams
    score: float  # its summed log-probability before this step
    top: Top  # its best next tokens and their (processed) log-probabilities: enough to show every pick


class BeamCandidate(TypedDict):
    """One of the K best (beam, token) pairs of a step, and what became of it."""

    beam: int  # the running beam it extends
    token_id: int
    score: float  # the summed log-probability with this token
    finished: str | None  # the stopping criterion it met (eos, max_length, stop_string, ...), or None
    kept: int | None  # the slot it runs in next (unfinished and among the num_beams best), or None: pruned
    added: bool  # it entered the list of finished sequences
    normalized: NotRequired[float]  # finished: score / generated_length ** length_penalty


class RunningBeam(TypedDict):
    parent: int  # the slot of the beam it continues
    token_id: int
    score: float


class FinishedBeam(TypedDict):
    score: float  # length-penalised
    length: int  # new tokens


class GenerationBeams(TypedDict):
    """One step of beam search: every beam advanced by one token."""

    step: int
    position: int  # where the new tokens go (the running length before the step)
    method: Literal["beam_search", "beam_sample"]
    beams: list[BeamState]  # the running beams (at step 0 only the first: the others are copies, held back)
    candidates: list[BeamCandidate]  # the K best pairs over all beams, best first
    running: list[RunningBeam]  # the beams after the step
    finished: list[FinishedBeam]  # the finished list after the step
    length_penalty: float
    generated_length: int  # new tokens after this step (the length the penalty uses)
    kv_cache: CacheSize
    forward: Literal["prefill", "decode"]
    forward_time: float | None
    token_texts: dict[str, str]
    done: NotRequired[str]  # why beam search stops after this step


class Hypothesis(TypedDict):
    rank: int
    ids: list[int]  # new tokens
    text: str
    score: float  # log_prob / length ** length_penalty: generate()'s sequences_scores
    log_prob: float
    length: int
    path: list[int]  # the slot of the running beam it came from at each step (transformers' beam_indices)
    returned: bool  # among the num_return_sequences the call returns


class GenerationRanking(TypedDict):
    """The end of beam search: the finished sequences, best first."""

    hypotheses: list[Hypothesis]
    num_return_sequences: int
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    reason: str
    steps: int


class Rejection(TypedDict):
    index: int  # which drafted token (0 = the first)
    drafted_id: int
    target_id: int  # the token the model put there instead
    target_prob: float  # the model's probability of its own token
    drafted_prob: float  # the model's probability of the drafted token
    draft_prob: NotRequired[float]  # speculative sampling: the assistant's probability of it (q)
    ratio: NotRequired[float]  # speculative sampling: p / q, the chance of keeping it
    random: NotRequired[float]  # speculative sampling: the uniform draw compared with the ratio
    reason: str


class GenerationDraft(TypedDict):
    """One round of assisted decoding: draft, check in one forward pass, keep."""

    round: int
    position: int  # the sequence length before the round
    source: Literal["assistant", "prompt_lookup"]
    drafted: list[int]
    draft_probs: list[float] | None  # the assistant's probability of each drafted token (None: prompt lookup)
    draft_stop: str  # why the draft ended there
    budget: int  # the most tokens this draft could hold
    target_ids: list[int]  # what the model picked at each checked position
    target_probs: list[float]  # the model's probability of each drafted token
    accepted: int
    new_ids: list[int]  # the tokens this round added: the accepted ones and the model's own
    rejection: Rejection | None
    method: Literal["greedy", "sample"]
    draft_time: float
    verify_time: float
    token_texts: dict[str, str]
    lookup: NotRequired[dict[str, Any]]  # prompt lookup: the n-gram matched, where, where the copy starts


class LensLayer(TypedDict):
    layer: int  # 0 = the embeddings (the input of the first layer), n = the output of layer n
    ids: list[int]  # the top tokens if the model stopped here
    probs: list[float]
    chosen_prob: float  # the probability this layer's reading gives the token the step picked
    chosen_rank: int


class Lens(TypedDict):
    layers: list[LensLayer]
    last_layer_difference: float  # max |last layer's reading - the step's logits|: 0 when the replay is exact
    note: str


class Attention(TypedDict):
    heads: list[list[list[float]]]  # (layers, heads, positions): the new position's weights over the context,
    mean: list[list[float]]  # (layers, positions), heads averaged; both to 6 decimals
    layers: int
    num_heads: int
    positions: int
    first_token_share: float  # mean weight on position 0, over layers and heads
    uniform_share: float  # 1 / positions: what an even spread would give each position
    sink: bool  # the first position takes more than twice the even share (an attention sink)
    note: str


class Attribution(TypedDict):
    method: str  # gradient_x_input or integrated_gradients
    captum: str  # the Captum class that computed it
    target: int
    scores: list[float]  # per context position, summed over the embedding dimension
    shares: list[float]  # |score| / sum |score|
    steps: int
    completeness_gap: float | None  # integrated gradients: sum(scores) - (log p(token) - log p(token | baseline))
    seconds: float
    note: str


class GenerationInspect(TypedDict):
    """What happened inside the model at one step (generation.inspect or capture="inside")."""

    step: int
    position: int
    branch: int
    token_id: int
    token: str
    context_ids: list[int]
    context_tokens: list[str]
    token_texts: NotRequired[dict[str, str]]  # the text of every token id the lens shows
    lens: NotRequired[Lens]
    attention: NotRequired[Attention]
    attribution: NotRequired[Attribution]
    seconds: float


class GenerationForce(TypedDict):
    step: int
    position: int
    token_id: int
    token: str
    replaced: int
    from_branch: int
    branch: int


class GenerationEnd(TypedDict):
    stop_reason: str | None
    interrupted: bool
    new_tokens: int
    prompt_tokens: int
    prefill_time: float | None
    decode_tokens_per_s: float | None
    tokens_per_s: float | None
    branch: NotRequired[int]
    sequences: NotRequired[int]  # how many sequences the call returns
    stopping_criteria: NotRequired[list[str]]  # backend="transformers": the criteria generate() checked each token
    steps_traced: NotRequired[bool]  # backend="transformers": False for a mode whose steps are not traced


class DecodedSequence(TypedDict):
    ids: list[int]
    text: str
    batch_row: NotRequired[int]  # a batch of prompts: the row's prompt's index in the call's list


class CompareStep(TypedDict):
    step: int
    token_a: int  # the token A chose
    text_a: str
    top1_a: int
    top1_b: int  # B's most likely token on A's context
    text_b: str
    agree: bool
    kl: float  # KL(P_A || P_B), nats
    p_a: float  # A's probability of its token
    p_b: float  # B's probability of A's token


class CompareSummary(TypedDict):
    agreement: float
    agreeing_steps: int
    steps: int
    mean_kl: float
    max_kl: float
    max_kl_step: int
    weight_bytes: list[int | None]
    decode_tokens_per_s: list[float | None]
    prompt_tokens: int
    identical_texts: bool


class GenerationCompare(TypedDict):
    """explain.compare(pipe_a, pipe_b, prompt): emitted into B's trace, in B's run of the prompt."""

    prompt: Any
    labels: list[str]
    steps: list[CompareStep]
    texts: list[str]
    ids: list[list[int]]
    first_divergence: dict[str, Any] | None  # {"step", "character", "token_a", "token_b"}; None: identical texts
    summary: CompareSummary


class DecodingDecode(TypedDict):
    ids: list[int]
    text: str
    text_with_special: str
    stop_reason: str | None
    interrupted: bool
    skip_special_tokens: bool
    branch: NotRequired[int]
    sequences: NotRequired[list[DecodedSequence]]  # several returned sequences: each one (the first is ids/text)
    batch_row: NotRequired[int]  # backend="transformers", a batch: the prompt (index in the list) this decode is of
    # backend="transformers": what the pipeline's postprocess returned, and the options that shaped it
    output: NotRequired[list[dict[str, Any]]]
    return_full_text: NotRequired[bool]
    return_tensors: NotRequired[bool]


# -- one line per event ---------------------------------------------------------------------------------
def _registry_lookup(d: dict) -> str:
    return (
        f"task {d['task']!r} -> {d['pipeline_class']} + {d['model_class']}; transformers' default "
        f"{d['default_model']}@{d['default_revision']}, explain uses {d['model_used']}"
    )


def _config_file(d: dict) -> str:
    if d.get("absent"):
        return f"{d['filename']}: not in {d['repo']} (optional)"
    commit = (d["commit"] or "")[:7]
    return (
        f"{d['filename']}: {d['cache']}{' @' + commit if commit else ''}, {size_text(d['size'])}"
        f"{' (offline)' if d['offline'] else ''}"
    )


def _config_config(d: dict) -> str:
    h = d["hyperparameters"]
    common = common_config(h)  # GPT-2's n_layer, n_embd... under the common names
    kv = f", {h['num_key_value_heads']} kv heads" if "num_key_value_heads" in h else ""
    return (
        f"{d['architecture']} ({d['model_type']}): {common['num_hidden_layers']} layers, hidden "
        f"{common['hidden_size']}, {common['num_attention_heads']} heads{kv}, vocab {common['vocab_size']}, "
        f"tied embeddings {h.get('tie_word_embeddings', False)}"
    )


def _tokenizer_load(d: dict) -> str:
    special = ", ".join(
        f"{name.replace('_token', '')}={value['token']!r}" for name, value in d["special_tokens"].items()
    )
    return (
        f"{d['model']} from {d['source']}: {d['vocab_size']} tokens, {d['num_merges']} merges; {special}; "
        f"chat template: {'yes' if d['has_chat_template'] else 'no'}"
    )


def _weights_progress(d: dict) -> str:
    return f"{d['file']}: {d['done']}/{d['total']}"


def _weights_load(d: dict) -> str:
    kinds = ", ".join(f"{n} x {k}" for k, n in (d.get("quantization_types") or d["stored_dtypes"]).items())
    tied = f"; tied {', '.join(d['tied'])}" if d["tied"] else ""
    return (
        f"{d['format']}: {d['tensors']} tensors ({kinds}) -> {d['dtype']}, {d['parameters'] / 1e6:.1f} M "
        f"parameters, {size_text(d['bytes'])}{tied}; missing {len(d['missing'])}, "
        f"unexpected {d['unexpected_count']}"
    )


def _weights_quantize(d: dict) -> str:
    kept = ", ".join(f"{c['tensors']} x {c['from']} -> {c['to'].split(':')[0]}" for c in d["conversions"])
    memory = d["process_memory"]
    process = (
        f"; process {size_text(memory['rss_bytes'])} (peak {size_text(memory['peak_rss_bytes'])})"
        if memory["rss_bytes"]
        else ""
    )
    ratio = f"{d['ratio_to_float32']:.2f}x, " if d["ratio_to_float32"] is not None else ""
    bits = f"{d['bits_per_parameter']:.1f} bits per parameter" if d["bits_per_parameter"] is not None else ""
    return (
        f"quantization {d['method']} ({d['form']}, {d['compute_dtype']} activations): {kept}; "
        f"{size_text(d['float32_bytes'])} in float32 -> {size_text(d['total_after'])} ({ratio}{bits}){process}"
    )


def _weights_adapter(d: dict) -> str:
    return (
        f"LoRA adapter {d['adapter']!r}: r={d['r']}, alpha={d['lora_alpha']} on {d['layers']} layers; "
        f"{d['adapter_parameters'] / 1e6:.2f} M parameters, {d['share_of_base']:.2%} of the base's "
        f"{d['base_parameters'] / 1e6:.1f} M; applied with {d['applied_with']}"
    )


def _weights_adapter_merge(d: dict) -> str:
    return (
        f"adapter {d['adapter']!r} {'merged: W + (alpha / r) B A' if d['merged'] else 'unmerged: W back'} "
        f"in {d['layers']} layers"
    )


def _generation_compare(d: dict) -> str:
    summary, first = d["summary"], d["first_divergence"]
    return (
        f"compare {d['labels'][0]} vs {d['labels'][1]}: top-1 agreement {summary['agreement']:.0%} over "
        f"{summary['steps']} steps, mean KL {summary['mean_kl']:.4f} nats; "
        + (f"texts first differ at step {first['step']}" if first else "identical texts")
    )


def _placement_place(d: dict) -> str:
    per = ", ".join(f"{k}: {size_text(v)}" for k, v in d["bytes_per_device"].items())
    return f"{d['strategy']} -> {', '.join(d['devices'])} ({per}); {d['reason']}"


# one line wherever a plain string met a model that has a chat template (tokenization/encode chat_template_skipped)
TEMPLATE_SKIPPED = (
    "a plain string skips the chat template, so the model continues the text; to have it answer, "
    'pass [{"role": "user", "content": ...}]'
)


def _tokenization_encode(d: dict) -> str:
    how = "a chat, through the chat template" if d["kind_of_input"] == "chat" else "plain text"
    return f"{d['count']} tokens from {how}" + (f"; {TEMPLATE_SKIPPED}" if d.get("chat_template_skipped") else "")


def _tokenization_pad(d: dict) -> str:
    pads = ", ".join(str(row["pads"]) for row in d["rows"])
    return (
        f"{len(d['rows'])} prompts padded on the {d['side']} to {d['width']} tokens with "
        f"{d['pad_token']!r} (id {d['pad_token_id']}); pads per row: {pads}"
    )


def _generation_settings(d: dict) -> str:
    s = d["settings"]
    how = d["strategy"]["label"] if "strategy" in d else "sampling" if s.get("do_sample") else "greedy"
    names = ", ".join(p["name"] for p in d["processors"]) or "none"
    batch = ""
    if "batch" in d and "rows" in d["batch"]:
        rows = d["batch"]["rows"]
        batch = f" (prompts {rows[0] + 1}..{rows[-1] + 1} of {d['batch']['size']}, one batch)"
    elif "batch" in d:
        batch = f" (prompt {d['batch']['index'] + 1} of {d['batch']['size']})"
    warned = "".join(f"; warning: {warning}" for warning in d.get("warnings", []))
    return f"{how}, up to {s.get('max_new_tokens_effective')} new tokens; logits processors: {names}{batch}{warned}"


def _generation_prefill(d: dict) -> str:
    return f"prefill: {d['prompt_tokens']} tokens, {_rate(d['tokens_per_s'])} tokens/s"


def _generation_step(d: dict) -> str:
    how = "forced" if d.get("forced") else d["method"]
    sequence = f"sequence {d['sequence']} " if "sequence" in d else ""
    sequence += f"(prompt {d['batch_row']}) " if "batch_row" in d else ""
    warned = "".join(f"; {warning}" for warning in d.get("warnings", []))
    return f"{sequence}step {d['step']}: {d['token']!r} ({how}, p {_number(d['prob'])}, rank {d['rank']}){warned}"


def _generation_beams(d: dict) -> str:
    texts = d["token_texts"]
    live = [b for b in d["running"] if b["score"] > -1e8]  # -1e9 marks a slot no unfinished candidate filled
    beams = (
        "running " + ", ".join(f"{texts.get(str(b['token_id']), '?')!r} {b['score']:.2f}" for b in live)
        if live
        else "no beam running (every candidate finished)"
    )
    added = sum(c["added"] for c in d["candidates"])
    finished = (
        (
            f"; {len(d['finished'])} finished"
            + (f" ({added} new)" if added else "")
            + f", best {max(f['score'] for f in d['finished']):.3f}"
        )
        if d["finished"]
        else ""
    )
    done = f"; done: {d['done']}" if "done" in d else ""
    return f"beam step {d['step']}: {beams}{finished}{done}"


def _generation_ranking(d: dict) -> str:
    best = d["hypotheses"][0] if d["hypotheses"] else None
    head = f"best {best['text']!r} (score {best['score']:.3f})" if best else "no finished sequence"
    return f"beam search ranked {len(d['hypotheses'])} finished sequences; {head}; {d['reason']}"


def _generation_draft(d: dict) -> str:
    drafted, new = len(d["drafted"]), len(d["new_ids"])
    head = f"round {d['round']} ({d['source'].replace('_', ' ')}): "
    if not drafted:
        return head + f"nothing drafted ({d['draft_stop']}); the model's own token"
    why = f"; {d['rejection']['reason']}" if d["rejection"] else ""
    return f"{head}{d['accepted']}/{drafted} drafted tokens accepted, +{new} token{'s' if new > 1 else ''}{why}"


def _generation_force(d: dict) -> str:
    return (
        f"branch {d['branch']}: forced {d['token']!r} (id {d['token_id']}) at step {d['step']} "
        f"instead of id {d['replaced']}"
    )


def _generation_inspect(d: dict) -> str:
    parts = []
    if "lens" in d:
        first = next((layer["layer"] for layer in d["lens"]["layers"] if layer["chosen_rank"] == 1), None)
        parts.append(
            f"lens: {d['token']!r} is the top reading from layer {first}"
            if first is not None
            else f"lens: {d['token']!r} is never the top reading"
        )
    if "attention" in d:
        parts.append(f"attention: {d['attention']['first_token_share']:.0%} on the first token")
    if "attribution" in d:
        shares = d["attribution"]["shares"]
        top = max(range(len(shares)), key=shares.__getitem__) if shares else None
        parts.append(
            f"attribution: {d['context_tokens'][top]!r} weighs most ({shares[top]:.0%})"
            if top is not None
            else "attribution: empty context"
        )
    return f"inside step {d['step']}: " + "; ".join(parts)


def _generation_end(d: dict) -> str:
    rate = d["decode_tokens_per_s"]
    return (
        f"{d['new_tokens']} new tokens, stopped by {d['stop_reason']}"
        f"{f', decode {_rate(rate)} tokens/s' if rate is not None else ''}"
    )


def _decoding_decode(d: dict) -> str:
    more = f" (and {len(d['sequences']) - 1} more sequences)" if "sequences" in d else ""
    return f"{len(d['ids'])} ids -> {len(d['text'])} characters{more}"


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def _rate(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else str(value)


BOTH = ("explain", "transformers")  # the backends: every kind is emitted by both unless its declaration says why not
EXPLAIN_ONLY = ("explain",)


class Kind:
    """One (stage, kind): the declaration of its data, its one-line description and the backends that emit it
    (tests/test_events.py runs the explain backend, tests/test_transformers_backend.py the transformers backend, and
    each fails on a kind it should emit and does not)."""

    def __init__(
        self, stage: str, kind: str, fields: type, describe: Callable[[dict], str], backends: tuple[str, ...] = BOTH
    ):
        self.stage, self.kind, self.fields, self.describe, self.backends = stage, kind, fields, describe, backends

    def __repr__(self) -> str:
        return f"Kind({self.stage}/{self.kind}: {self.fields.__name__})"


KINDS: dict[tuple[str, str], Kind] = {
    (k.stage, k.kind): k
    for k in (
        Kind("registry", "lookup", RegistryLookup, _registry_lookup),
        Kind("config", "file", ConfigFile, _config_file),
        Kind("config", "config", ConfigConfig, _config_config),
        Kind("tokenizer", "load", TokenizerLoad, _tokenizer_load),
        Kind("weights", "progress", WeightsProgress, _weights_progress),
        Kind("weights", "load", WeightsLoad, _weights_load),
        Kind("weights", "quantize", WeightsQuantize, _weights_quantize),
        Kind("weights", "adapter", WeightsAdapter, _weights_adapter),
        Kind(
            "weights", "adapter_merge", WeightsAdapterMerge, _weights_adapter_merge, EXPLAIN_ONLY
        ),  # explain's merge()
        Kind("placement", "place", PlacementPlace, _placement_place),
        Kind("tokenization", "encode", TokenizationEncode, _tokenization_encode),
        Kind("tokenization", "pad", TokenizationPad, _tokenization_pad),
        Kind("generation", "settings", GenerationSettings, _generation_settings),
        Kind("generation", "prefill", GenerationPrefill, _generation_prefill),
        Kind("generation", "step", GenerationStep, _generation_step),
        # beam search and assisted decoding: the explain backend's strategies trace them (issue 11);
        # backend="transformers" reads the same events from transformers' _beam_search and, for greedy assisted
        # decoding (prompt lookup or an assistant model), _assisted_decoding (backends/transformers/beams.py); sampling
        # with a draft runs untraced there, with the reason in the settings event
        Kind("generation", "beams", GenerationBeams, _generation_beams),
        Kind("generation", "ranking", GenerationRanking, _generation_ranking),
        Kind("generation", "draft", GenerationDraft, _generation_draft),
        Kind("generation", "force", GenerationForce, _generation_force),
        Kind("generation", "inspect", GenerationInspect, _generation_inspect),
        Kind("generation", "end", GenerationEnd, _generation_end),
        Kind("generation", "compare", GenerationCompare, _generation_compare),
        Kind("decoding", "decode", DecodingDecode, _decoding_decode),
    )
}
