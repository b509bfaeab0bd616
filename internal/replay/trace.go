package replay

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MooncakeBlockTokens is the number of tokens one Mooncake hash id stands for (kvcache-ai/Mooncake
// FAST25-release/traces: "hash_ids", one id per 512-token block).
const MooncakeBlockTokens = 512

// Row is one request of a trace.
type Row struct {
	// Arrival is the request's time from the start of the trace.
	Arrival time.Duration
	// InputTokens and OutputTokens are the prompt and generated lengths in tokens.
	InputTokens, OutputTokens int
	// HashIDs are Mooncake's prefix block ids, one per MooncakeBlockTokens tokens of the prompt
	// (the last block may be partial); equal ids mean identical block content, so two requests
	// share exactly the leading blocks their id lists share. Nil for traces without prefix data
	// (Azure): every prompt is then unique.
	HashIDs []int64
	// OutputHashIDs (an extension of the Mooncake format, "output_hash_ids", written by
	// Synthesize) continue HashIDs past the prompt: the answer is the content that follows the
	// prompt in the same block stream (a partial last prompt block continues first), so a later
	// turn whose prompt holds this answer shares it block for block, as a conversation's history
	// does. Nil: the answer is unique to the request.
	OutputHashIDs []int64
	// Session is the conversation or agent-loop id (extension "session_id"), "" when unknown;
	// replay passes it to the scheduler as the X-Strata-Session hint.
	Session string
}

// Formats of ReadTrace.
const (
	FormatMooncake = "mooncake"
	FormatAzure    = "azure"
)

// ReadTrace reads at most limit rows (0: all) of a trace in format (FormatMooncake or FormatAzure),
// sorted by arrival as the files are. Errors name the line.
func ReadTrace(r io.Reader, format string, limit int) ([]Row, error) {
	switch format {
	case FormatMooncake:
		return readMooncake(r, limit)
	case FormatAzure:
		return readAzure(r, limit)
	}
	return nil, fmt.Errorf("trace format %q: want %s or %s", format, FormatMooncake, FormatAzure)
}

// readMooncake reads JSON lines {"timestamp": ms, "input_length", "output_length", "hash_ids"}
// (Mooncake FAST25-release/traces/*.jsonl). len(hash_ids) must be ceil(input_length / 512).
// Strata's extensions "output_hash_ids" and "session_id" (see Row) are optional; when
// output_hash_ids is present, hash_ids and output_hash_ids together must count
// ceil((input_length + output_length) / 512) ids.
func readMooncake(r io.Reader, limit int) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for line := 1; sc.Scan() && (limit <= 0 || len(rows) < limit); line++ {
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		var v struct {
			Timestamp    *float64 `json:"timestamp"`
			InputLength  *int     `json:"input_length"`
			OutputLength *int     `json:"output_length"`
			HashIDs      []int64  `json:"hash_ids"`
			OutputIDs    []int64  `json:"output_hash_ids"`
			Session      string   `json:"session_id"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		switch {
		case v.Timestamp == nil || v.InputLength == nil || v.OutputLength == nil:
			return nil, fmt.Errorf("line %d: timestamp, input_length and output_length are required", line)
		case *v.Timestamp < 0 || *v.InputLength < 1 || *v.OutputLength < 0:
			return nil, fmt.Errorf("line %d: negative timestamp or output_length, or input_length < 1", line)
		case len(v.HashIDs) != (*v.InputLength+MooncakeBlockTokens-1)/MooncakeBlockTokens:
			return nil, fmt.Errorf("line %d: %d hash_ids for input_length %d, want ceil(input_length/%d)",
				line, len(v.HashIDs), *v.InputLength, MooncakeBlockTokens)
		case len(v.OutputIDs) > 0 && len(v.HashIDs)+len(v.OutputIDs) != (*v.InputLength+*v.OutputLength+MooncakeBlockTokens-1)/MooncakeBlockTokens:
			return nil, fmt.Errorf("line %d: %d hash_ids and %d output_hash_ids for %d tokens, want ceil((input_length+output_length)/%d) in all",
				line, len(v.HashIDs), len(v.OutputIDs), *v.InputLength+*v.OutputLength, MooncakeBlockTokens)
		}
		rows = append(rows, Row{Arrival: time.Duration(*v.Timestamp * float64(time.Millisecond)),
			InputTokens: *v.InputLength, OutputTokens: *v.OutputLength, HashIDs: v.HashIDs, OutputHashIDs: v.OutputIDs,
			Session: v.Session})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rows, nil
}

// azureTime is the TIMESTAMP layout of AzurePublicDataset's AzureLLMInferenceTrace_*.csv
// ("2023-11-16 18:15:46.6805900"; fractional digits vary).
const azureTime = "2006-01-02 15:04:05.999999999"

// readAzure reads AzurePublicDataset CSV rows TIMESTAMP,ContextTokens,GeneratedTokens; arrivals
// are relative to the first row.
func readAzure(r io.Reader, limit int) ([]Row, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 3
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if header[0] != "TIMESTAMP" {
		return nil, errors.New("header: want TIMESTAMP,ContextTokens,GeneratedTokens")
	}
	var rows []Row
	var start time.Time
	for line := 2; limit <= 0 || len(rows) < limit; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		ts, err := time.Parse(azureTime, rec[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: TIMESTAMP: %w", line, err)
		}
		in, err1 := strconv.Atoi(rec[1])
		out, err2 := strconv.Atoi(rec[2])
		if err1 != nil || err2 != nil || in < 1 || out < 0 {
			return nil, fmt.Errorf("line %d: ContextTokens must be >= 1 and GeneratedTokens >= 0, got %q, %q", line, rec[1], rec[2])
		}
		if len(rows) == 0 {
			start = ts
		}
		rows = append(rows, Row{Arrival: max(0, ts.Sub(start)), InputTokens: in, OutputTokens: out})
	}
	return rows, nil
}
