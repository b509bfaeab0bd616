package openai

// Headers that cross layers (../shared/ARCHITECTURE.md, "Headers that cross layers"). Where the
// Gateway API Inference Extension has a name, it is used, so the router also works behind Envoy.
const (
	// HeaderRequestID is the idempotency key for metering, set by the first layer that lacks one
	// and echoed to the client.
	HeaderRequestID = "X-Request-Id"
	// HeaderObjective names the tier's inference objective; the router maps it to a priority.
	HeaderObjective = "x-gateway-inference-objective"
	// HeaderFairnessID is an opaque, non-reversible tenant token for fair queueing.
	HeaderFairnessID = "x-gateway-inference-fairness-id"
	// HeaderSession is the conversation / agent-loop id set by the platform: a KV-affinity hint.
	HeaderSession = "X-Strata-Session"
	// HeaderEndpointServed names the replica that served the request, set by the router on the
	// response and read by the gateway for metering. Its value is "name" or "name;gpu=TYPE".
	HeaderEndpointServed = "x-gateway-destination-endpoint-served"
)

// Rate-limit response headers, as OpenAI sends them
// (https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers).
const (
	HeaderLimitRequests     = "x-ratelimit-limit-requests"
	HeaderLimitTokens       = "x-ratelimit-limit-tokens"
	HeaderRemainingRequests = "x-ratelimit-remaining-requests"
	HeaderRemainingTokens   = "x-ratelimit-remaining-tokens"
	HeaderResetRequests     = "x-ratelimit-reset-requests"
	HeaderResetTokens       = "x-ratelimit-reset-tokens"
	HeaderRetryAfter        = "retry-after"
)
