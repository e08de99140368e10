"""Span attribute names, from the OpenTelemetry semantic conventions of one pinned version."""

from __future__ import annotations

# The GenAI conventions are still in development: names are those of this version, and the
# schema URL tells a collector which version they are.
SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_OPENAI_REQUEST_SERVICE_TIER = "gen_ai.openai.request.service_tier"

SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
SERVICE_NAME = "service.name"

# `gen_ai.operation.name` of the completions route (the chat route's is "chat").
TEXT_COMPLETION = "text_completion"

# The gateway's own attributes (no convention covers routing).
TENANT = "gateway.tenant"
TIER = "gateway.tier"
BACKEND = "gateway.backend"
ATTEMPTS = "gateway.attempts"
ATTEMPT = "gateway.attempt"
ATTEMPT_RESULT = "gateway.attempt.result"
ADMITTED = "gateway.admission.allowed"
ADMISSION_REASON = "gateway.admission.reason"
POLICY = "gateway.routing.policy"
CANDIDATES = "gateway.routing.candidates"
RANKING = "gateway.routing.ranking"
PREFIX_BLOCKS = "gateway.prefix.blocks"
MATCHED_BLOCKS = "gateway.prefix.matched_blocks"
REQUEST_ID = "gateway.request_id"
