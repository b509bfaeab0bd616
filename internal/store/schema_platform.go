package store

// Schema of the workflow layer (internal/platform): stored Responses API objects.
//
// One row per stored response. Besides the Response object as the client saw it, a row carries
// the whole conversation up to and including this response's output, twice over: as Responses
// API input items (for GET /v1/responses/{id}/input_items) and as chat messages (what the next
// turn sends to /v1/chat/completions). Storing the conversation with every turn makes a
// continuation with previous_response_id one read by primary key, at the cost of space that
// grows with the square of the chain length; issue 6's conversations may replace it with
// an item table. Times are BIGINT Unix milliseconds (UTC), as in schema_gateway.go.
var _ = addSchema(
	`CREATE TABLE IF NOT EXISTS responses (
		id                   TEXT PRIMARY KEY,
		owner                TEXT NOT NULL,
		previous_response_id TEXT NOT NULL DEFAULT '',
		session_id           TEXT NOT NULL,
		model                TEXT NOT NULL,
		created_at           BIGINT NOT NULL,
		response             TEXT NOT NULL,
		input_items          TEXT NOT NULL,
		messages             TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS responses_owner_time ON responses (owner, created_at)`,
)
