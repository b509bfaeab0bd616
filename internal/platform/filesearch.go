package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/strata-inference/strata/internal/openai"
)

// The file_search tool of /v1/responses, run server-side: the model is offered a function
// "file_search" with a query; the loop runs the query against the request's vector stores
// (keyword search) and gives the model the chunks found. The client sees a file_search_call
// item (openai-go responses.ResponseFileSearchToolCall), with its results when the request
// includes "file_search_call.results".

const fileSearchName = "file_search"

// fileSearchTool is a request's file_search tool, echoed in Response.tools (FileSearchTool).
type fileSearchTool struct {
	Type           string          `json:"type"` // "file_search"
	VectorStoreIDs []string        `json:"vector_store_ids"`
	MaxNumResults  int64           `json:"max_num_results"`
	Filters        json.RawMessage `json:"filters"` // always null: filters are not supported yet
	RankingOptions rankingOptions  `json:"ranking_options"`
}

type rankingOptions struct {
	Ranker         string  `json:"ranker"`
	ScoreThreshold float64 `json:"score_threshold"`
}

// parseFileSearchTool checks a file_search tool: vector_store_ids (1..16 ids) required,
// max_num_results 1..50 (default 10), ranking_options {ranker auto | default-2024-11-15,
// score_threshold 0..1}; filters must be null.
func parseFileSearchTool(param string, fields map[string]json.RawMessage) (*fileSearchTool, error) {
	fs := &fileSearchTool{Type: fileSearchName, MaxNumResults: defaultSearchResults, Filters: json.RawMessage("null"),
		RankingOptions: rankingOptions{Ranker: "auto"}}
	for k, v := range fields {
		switch k {
		case "type":
		case "vector_store_ids":
			if json.Unmarshal(v, &fs.VectorStoreIDs) != nil {
				return nil, invalidType(param+".vector_store_ids", "an array of strings", v)
			}
		case "max_num_results":
			n, err := integer(param+".max_num_results", v)
			if err != nil {
				return nil, err
			}
			if n != nil {
				if *n < 1 || *n > maxSearchResults {
					return nil, openai.InvalidRequest(param+".max_num_results", codeInvalidValue, "Invalid '%s.max_num_results': expected an integer between 1 and %d, but got %d.", param, maxSearchResults, *n)
				}
				fs.MaxNumResults = *n
			}
		case "filters":
			if !isNull(v) {
				return nil, unsupported(param+".filters", "Attribute filters of file_search are not supported yet.")
			}
		case "ranking_options":
			if isNull(v) {
				continue
			}
			var ro struct {
				Ranker         *string  `json:"ranker"`
				ScoreThreshold *float64 `json:"score_threshold"`
			}
			if json.Unmarshal(v, &ro) != nil {
				return nil, invalidType(param+".ranking_options", "an object", v)
			}
			if ro.Ranker != nil {
				if *ro.Ranker != "auto" && *ro.Ranker != "default-2024-11-15" {
					return nil, invalidValue(param+".ranking_options.ranker", *ro.Ranker, "'auto' and 'default-2024-11-15'")
				}
				fs.RankingOptions.Ranker = *ro.Ranker
			}
			if ro.ScoreThreshold != nil {
				if *ro.ScoreThreshold < 0 || *ro.ScoreThreshold > 1 {
					return nil, openai.InvalidRequest(param+".ranking_options.score_threshold", codeInvalidValue, "Invalid '%s.ranking_options.score_threshold': expected a number between 0 and 1.", param)
				}
				fs.RankingOptions.ScoreThreshold = *ro.ScoreThreshold
			}
		default:
			return nil, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
		}
	}
	if len(fs.VectorStoreIDs) == 0 {
		return nil, openai.MissingParam(param + ".vector_store_ids")
	}
	if len(fs.VectorStoreIDs) > 16 {
		return nil, openai.InvalidRequest(param+".vector_store_ids", codeInvalidValue, "Invalid '%s.vector_store_ids': at most 16 vector stores.", param)
	}
	return fs, nil
}

// fileSearchCall is a file_search_call output item.
type fileSearchCall struct {
	Type    string             `json:"type"` // "file_search_call"
	ID      string             `json:"id"`
	Status  string             `json:"status"` // in_progress, searching, completed, failed
	Queries []string           `json:"queries"`
	Results []fileSearchResult `json:"results"` // null unless the request includes them
}

func (c *fileSearchCall) itemID() string { return c.ID }

type fileSearchResult struct {
	FileID     string          `json:"file_id"`
	Filename   string          `json:"filename"`
	Score      float64         `json:"score"`
	Text       string          `json:"text"`
	Attributes json.RawMessage `json:"attributes"`
}

// fileSearch is the server-side tool of one request.
type fileSearch struct {
	p       *Platform
	owner   string
	tool    *fileSearchTool
	include bool // include results in the item
}

var (
	_ serverTool       = (*fileSearch)(nil)
	_ progressReporter = (*fileSearch)(nil)
)

func (f *fileSearch) definition() functionTool {
	desc := "Search the user's uploaded files for passages relevant to a query. Use it to answer questions about their documents."
	return functionTool{Type: "function", Name: fileSearchName, Description: &desc,
		Parameters: json.RawMessage(`{"type":"object","properties":{"query":{"type":"string","description":"Keywords to search the files for."}},"required":["query"]}`)}
}

func (f *fileSearch) pending(chatToolCall) outputItem {
	return &fileSearchCall{Type: "file_search_call", ID: newID("fs_"), Status: statusInProgress, Queries: []string{}}
}

func (f *fileSearch) progress() ([]string, string) {
	return []string{"response.file_search_call.in_progress", "response.file_search_call.searching"}, "response.file_search_call.completed"
}

// run searches for the query of call. A call whose arguments carry no query fails: the model
// is told so and may try again.
func (f *fileSearch) run(ctx context.Context, call chatToolCall, started outputItem) (outputItem, string) {
	done := *started.(*fileSearchCall)
	var args struct {
		Query   string   `json:"query"`
		Queries []string `json:"queries"`
	}
	_ = json.Unmarshal([]byte(call.Function.Arguments), &args)
	queries := slices.DeleteFunc(append([]string{args.Query}, args.Queries...), func(q string) bool { return strings.TrimSpace(q) == "" })
	if len(queries) == 0 {
		done.Status = statusFailed
		return &done, `Error: file_search needs arguments {"query": "<keywords>"}.`
	}
	done.Queries = queries
	hits, err := f.p.search(ctx, f.owner, f.tool.VectorStoreIDs, &searchQuery{queries: queries,
		maxResults: int(f.tool.MaxNumResults), scoreThreshold: f.tool.RankingOptions.ScoreThreshold})
	if err != nil {
		if ctx.Err() == nil {
			f.p.log.Warn("file_search failed", "err", err)
		}
		done.Status = statusFailed
		return &done, "Error: the search failed."
	}
	done.Status = statusCompleted
	if f.include {
		done.Results = make([]fileSearchResult, len(hits))
		for i, h := range hits {
			done.Results[i] = fileSearchResult{FileID: h.FileID, Filename: h.Filename, Score: h.Score, Text: h.Content[0].Text, Attributes: h.Attributes}
		}
	}
	if len(hits) == 0 {
		return &done, "No results found."
	}
	var b strings.Builder
	for i, h := range hits {
		fmt.Fprintf(&b, "[%d] file: %s (score %.3f)\n%s\n\n", i+1, h.Filename, h.Score, h.Content[0].Text)
	}
	return &done, strings.TrimSpace(b.String())
}
