from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_FP16: _ClassVar[Encoding]
    ENCODING_FP32: _ClassVar[Encoding]
    ENCODING_INT8: _ClassVar[Encoding]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_INT8: _ClassVar[DType]

class FeatureVector(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_VECTOR_UNSPECIFIED: _ClassVar[FeatureVector]
    FEATURE_VECTOR_LAST: _ClassVar[FeatureVector]
    FEATURE_VECTOR_MEAN: _ClassVar[FeatureVector]
    FEATURE_VECTOR_EMBEDDING_MEAN: _ClassVar[FeatureVector]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_EOS: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
ENCODING_UNSPECIFIED: Encoding
ENCODING_FP16: Encoding
ENCODING_FP32: Encoding
ENCODING_INT8: Encoding
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT16: DType
DTYPE_FLOAT32: DType
DTYPE_INT8: DType
FEATURE_VECTOR_UNSPECIFIED: FeatureVector
FEATURE_VECTOR_LAST: FeatureVector
FEATURE_VECTOR_MEAN: FeatureVector
FEATURE_VECTOR_EMBEDDING_MEAN: FeatureVector
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_EOS: FinishReason
FINISH_REASON_LENGTH: FinishReason

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data", "scales")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    scales: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., scales: _Optional[_Iterable[float]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Chat(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("text", "chat", "raw")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    text: str
    chat: Chat
    raw: bool
    def __init__(self, text: _Optional[str] = ..., chat: _Optional[_Union[Chat, _Mapping]] = ..., raw: _Optional[bool] = ...) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("layer_fraction", "layer_index", "encoding", "vectors", "mean_entropy")
    LAYER_FRACTION_FIELD_NUMBER: _ClassVar[int]
    LAYER_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MEAN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    layer_fraction: float
    layer_index: int
    encoding: Encoding
    vectors: _containers.RepeatedScalarFieldContainer[FeatureVector]
    mean_entropy: bool
    def __init__(self, layer_fraction: _Optional[float] = ..., layer_index: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., vectors: _Optional[_Iterable[_Union[FeatureVector, str]]] = ..., mean_entropy: _Optional[bool] = ...) -> None: ...

class TokenFeatureSpec(_message.Message):
    __slots__ = ("enabled", "layers", "encoding", "top_logprobs", "all_layers")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    ALL_LAYERS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    layers: _containers.RepeatedScalarFieldContainer[int]
    encoding: Encoding
    top_logprobs: int
    all_layers: bool
    def __init__(self, enabled: _Optional[bool] = ..., layers: _Optional[_Iterable[int]] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., top_logprobs: _Optional[int] = ..., all_layers: _Optional[bool] = ...) -> None: ...

class TokenFeatureLayout(_message.Message):
    __slots__ = ("layers", "top_logprobs", "feature_size")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SIZE_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[int]
    top_logprobs: int
    feature_size: int
    def __init__(self, layers: _Optional[_Iterable[int]] = ..., top_logprobs: _Optional[int] = ..., feature_size: _Optional[int] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "max_new_tokens", "seed", "greedy_first")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GREEDY_FIRST_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: int
    greedy_first: bool
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., greedy_first: _Optional[bool] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "k", "sampling", "features", "token_features")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    prompt: Prompt
    k: int
    sampling: SamplingParams
    features: FeatureSpec
    token_features: TokenFeatureSpec
    def __init__(self, prompt: _Optional[_Union[Prompt, _Mapping]] = ..., k: _Optional[int] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., features: _Optional[_Union[FeatureSpec, _Mapping]] = ..., token_features: _Optional[_Union[TokenFeatureSpec, _Mapping]] = ...) -> None: ...

class InstructionFeature(_message.Message):
    __slots__ = ("feature", "layer_index", "prompt_tokens", "token_features")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    LAYER_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    feature: Tensor
    layer_index: int
    prompt_tokens: int
    token_features: TokenFeatureLayout
    def __init__(self, feature: _Optional[_Union[Tensor, _Mapping]] = ..., layer_index: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., token_features: _Optional[_Union[TokenFeatureLayout, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("index", "text", "token_ids", "num_tokens", "finish_reason", "cumulative_logprob", "feature", "mean_feature", "mean_entropy", "embedding_mean_feature")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FEATURE_FIELD_NUMBER: _ClassVar[int]
    MEAN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MEAN_FEATURE_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    num_tokens: int
    finish_reason: FinishReason
    cumulative_logprob: float
    feature: Tensor
    mean_feature: Tensor
    mean_entropy: float
    embedding_mean_feature: Tensor
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., num_tokens: _Optional[int] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., cumulative_logprob: _Optional[float] = ..., feature: _Optional[_Union[Tensor, _Mapping]] = ..., mean_feature: _Optional[_Union[Tensor, _Mapping]] = ..., mean_entropy: _Optional[float] = ..., embedding_mean_feature: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class TokenFeatures(_message.Message):
    __slots__ = ("index", "token_offset", "features", "last_chunk")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LAST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    index: int
    token_offset: int
    features: Tensor
    last_chunk: bool
    def __init__(self, index: _Optional[int] = ..., token_offset: _Optional[int] = ..., features: _Optional[_Union[Tensor, _Mapping]] = ..., last_chunk: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "generated_tokens", "seconds")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    generated_tokens: int
    seconds: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("instruction", "candidate", "usage", "token_features")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    instruction: InstructionFeature
    candidate: Candidate
    usage: Usage
    token_features: TokenFeatures
    def __init__(self, instruction: _Optional[_Union[InstructionFeature, _Mapping]] = ..., candidate: _Optional[_Union[Candidate, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., token_features: _Optional[_Union[TokenFeatures, _Mapping]] = ...) -> None: ...

class FeaturesRequest(_message.Message):
    __slots__ = ("prompt", "responses", "features")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    prompt: Prompt
    responses: _containers.RepeatedScalarFieldContainer[str]
    features: FeatureSpec
    def __init__(self, prompt: _Optional[_Union[Prompt, _Mapping]] = ..., responses: _Optional[_Iterable[str]] = ..., features: _Optional[_Union[FeatureSpec, _Mapping]] = ...) -> None: ...

class FeaturesResponse(_message.Message):
    __slots__ = ("instruction", "features", "mean_features", "mean_entropies", "embedding_mean_features")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MEAN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    MEAN_ENTROPIES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MEAN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    instruction: InstructionFeature
    features: _containers.RepeatedCompositeFieldContainer[Tensor]
    mean_features: _containers.RepeatedCompositeFieldContainer[Tensor]
    mean_entropies: _containers.RepeatedScalarFieldContainer[float]
    embedding_mean_features: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, instruction: _Optional[_Union[InstructionFeature, _Mapping]] = ..., features: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., mean_features: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., mean_entropies: _Optional[_Iterable[float]] = ..., embedding_mean_features: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_name", "num_layers", "hidden_size", "encodings", "context_length", "max_k", "default_layer_index", "has_chat_template", "max_new_tokens_limit", "default_token_layers", "max_top_logprobs", "feature_vectors", "mean_entropy", "model_sha256", "greedy_first", "weights_format")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYER_INDEX_FIELD_NUMBER: _ClassVar[int]
    HAS_CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TOKEN_LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    MEAN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    GREEDY_FIRST_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FORMAT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    num_layers: int
    hidden_size: int
    encodings: _containers.RepeatedScalarFieldContainer[Encoding]
    context_length: int
    max_k: int
    default_layer_index: int
    has_chat_template: bool
    max_new_tokens_limit: int
    default_token_layers: _containers.RepeatedScalarFieldContainer[int]
    max_top_logprobs: int
    feature_vectors: _containers.RepeatedScalarFieldContainer[FeatureVector]
    mean_entropy: bool
    model_sha256: str
    greedy_first: bool
    weights_format: str
    def __init__(self, model_name: _Optional[str] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., encodings: _Optional[_Iterable[_Union[Encoding, str]]] = ..., context_length: _Optional[int] = ..., max_k: _Optional[int] = ..., default_layer_index: _Optional[int] = ..., has_chat_template: _Optional[bool] = ..., max_new_tokens_limit: _Optional[int] = ..., default_token_layers: _Optional[_Iterable[int]] = ..., max_top_logprobs: _Optional[int] = ..., feature_vectors: _Optional[_Iterable[_Union[FeatureVector, str]]] = ..., mean_entropy: _Optional[bool] = ..., model_sha256: _Optional[str] = ..., greedy_first: _Optional[bool] = ..., weights_format: _Optional[str] = ...) -> None: ...
