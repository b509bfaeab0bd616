package platform

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"
)

// minimalPDF renders a one-page PDF showing text in Helvetica, with a correct xref table.
func minimalPDF(text string) []byte {
	content := "BT /F1 12 Tf 72 720 Td (" + text + ") Tj ET"
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(content), content),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	offsets := make([]int, len(objs))
	for i, o := range objs {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}

func TestExtractText(t *testing.T) {
	for _, tc := range []struct {
		name, file, content, want, bad string
	}{
		{"markdown", "a.md", "# Title\n\nbody", "# Title\n\nbody", ""},
		{"html", "a.html", "<html><head><style>p{}</style><script>alert(1)</script></head><body><p>Hello</p><div>router <b>picks</b></div></body></html>", "Hello\nrouter\npicks\n", ""},
		{"json", "a.json", `{"k":"v"}`, `{"k":"v"}`, ""},
		{"bad json", "a.json", `{"k":`, "", "The file is not valid JSON."},
		{"not utf-8", "a.txt", "\xff\xfe", "", "The file is not UTF-8 text."},
		{"pdf", "a.pdf", string(minimalPDF("Hello PDF world")), "Hello PDF world", ""},
		{"corrupt pdf", "a.pdf", "%PDF-1.4\nthis is not a pdf", "", "The PDF could not be read."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := extractText(tc.file, []byte(tc.content))
			if tc.bad != "" {
				var bad *errInvalidFile
				require.ErrorAs(t, err, &bad)
				require.Equal(t, tc.bad, bad.msg)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, strings.TrimSpace(got)+map[bool]string{true: "\n", false: ""}[strings.HasSuffix(tc.want, "\n")])
		})
	}
}

func TestChunkText(t *testing.T) {
	var words []string
	for i := range 1000 {
		words = append(words, fmt.Sprintf("w%d", i))
	}
	text := strings.Join(words, " ")
	enc, err := codec()
	require.NoError(t, err)
	ids, _, err := enc.Encode(text)
	require.NoError(t, err)

	chunks, err := chunkText(text, chunking{MaxChunkSizeTokens: 100, ChunkOverlapTokens: 50})
	require.NoError(t, err)
	require.Len(t, chunks, (len(ids)-100+49)/50+1, "windows of 100 tokens every 50 cover the text")
	for i, c := range chunks {
		n, _, _ := enc.Encode(c)
		require.LessOrEqual(t, len(n), 100, "chunk %d", i)
	}
	require.True(t, strings.HasPrefix(text, chunks[0]))
	require.True(t, strings.HasSuffix(text, chunks[len(chunks)-1]))
	// Consecutive chunks overlap: the second half of one is the first half of the next.
	tail := chunks[0][len(chunks[0])/2+5:]
	require.Contains(t, chunks[1], tail)

	one, err := chunkText("short text", chunking{MaxChunkSizeTokens: 800, ChunkOverlapTokens: 400})
	require.NoError(t, err)
	require.Equal(t, []string{"short text"}, one)
	none, err := chunkText("  ", chunking{MaxChunkSizeTokens: 800, ChunkOverlapTokens: 400})
	require.NoError(t, err)
	require.Empty(t, none)
}

func uploadFile(t *testing.T, c *oai.Client, name, content string) string {
	t.Helper()
	f, err := c.Files.New(t.Context(), oai.FileNewParams{File: oai.File(strings.NewReader(content), name, "text/plain"),
		Purpose: oai.FilePurposeAssistants})
	require.NoError(t, err)
	return f.ID
}

func TestVectorStoreRAG(t *testing.T) {
	env := newToolEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	md := uploadFile(t, c, "kv.md", "# KV cache\n\nThe KV cache holds the attention keys and values of earlier tokens.")
	page := uploadFile(t, c, "router.html", "<html><script>alert('router')</script><body><h1>Router</h1><p>The router picks a replica by prefix.</p></body></html>")
	doc := uploadFile(t, c, "spec.pdf", string(minimalPDF("Speculative decoding drafts tokens")))
	broken := uploadFile(t, c, "broken.pdf", "%PDF-1.4 nothing else")

	vs, err := c.VectorStores.New(ctx, oai.VectorStoreNewParams{Name: oai.String("docs"), FileIDs: []string{md},
		Metadata: map[string]string{"team": "infra"}})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(vs.ID, "vs_"), vs.ID)
	require.Equal(t, "docs", vs.Name)
	require.Equal(t, int64(1), vs.FileCounts.Completed)
	require.Equal(t, "completed", string(vs.Status))

	f, err := c.VectorStores.Files.New(ctx, vs.ID, oai.VectorStoreFileNewParams{FileID: page,
		Attributes: map[string]oai.VectorStoreFileNewParamsAttributeUnion{"kind": {OfString: oai.String("web")}}})
	require.NoError(t, err)
	require.Equal(t, "completed", string(f.Status))
	require.Equal(t, page, f.ID)
	require.Equal(t, int64(800), f.ChunkingStrategy.Static.MaxChunkSizeTokens)
	f, err = c.VectorStores.Files.New(ctx, vs.ID, oai.VectorStoreFileNewParams{FileID: doc})
	require.NoError(t, err)
	require.Equal(t, "completed", string(f.Status))
	f, err = c.VectorStores.Files.New(ctx, vs.ID, oai.VectorStoreFileNewParams{FileID: broken})
	require.NoError(t, err, "a corrupt file is attached as failed")
	require.Equal(t, "failed", string(f.Status))
	require.Equal(t, "invalid_file", string(f.LastError.Code))

	got, err := c.VectorStores.Get(ctx, vs.ID)
	require.NoError(t, err)
	require.Equal(t, int64(4), got.FileCounts.Total)
	require.Equal(t, int64(1), got.FileCounts.Failed)
	require.Positive(t, got.UsageBytes)

	search := func(q string, opts ...func(*oai.VectorStoreSearchParams)) []oai.VectorStoreSearchResponse {
		t.Helper()
		params := oai.VectorStoreSearchParams{Query: oai.VectorStoreSearchParamsQueryUnion{OfString: oai.String(q)}}
		for _, o := range opts {
			o(&params)
		}
		res, err := c.VectorStores.Search(ctx, vs.ID, params)
		require.NoError(t, err, "the store keeps serving after a failed file")
		return res.Data
	}
	hits := search("What does the KV cache hold?")
	require.NotEmpty(t, hits)
	require.Equal(t, "kv.md", hits[0].Filename)
	require.Equal(t, md, hits[0].FileID)
	require.Contains(t, hits[0].Content[0].Text, "attention keys")
	hits = search("router")
	require.Len(t, hits, 1)
	require.Equal(t, "web", hits[0].Attributes["kind"].OfString)
	require.NotContains(t, hits[0].Content[0].Text, "alert", "script text is not indexed")
	hits = search("speculative decoding")
	require.Len(t, hits, 1, "PDF text is extracted")
	require.Equal(t, "spec.pdf", hits[0].Filename)
	require.Empty(t, search("the", func(p *oai.VectorStoreSearchParams) {
		p.RankingOptions = oai.VectorStoreSearchParamsRankingOptions{ScoreThreshold: oai.Float(0.99)}
	}))
	require.Len(t, search("the", func(p *oai.VectorStoreSearchParams) { p.MaxNumResults = oai.Int(1) }), 1)

	// file_search through /v1/responses: the loop searches and the model answers from it.
	res, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("KV cache"),
		Include: []responses.ResponseIncludable{responses.ResponseIncludableFileSearchCallResults},
		Tools:   []responses.ToolUnionParam{{OfFileSearch: &responses.FileSearchToolParam{VectorStoreIDs: []string{vs.ID}}}}})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCompleted, res.Status)
	require.Len(t, res.Output, 2)
	fs := res.Output[0]
	require.Equal(t, "file_search_call", fs.Type)
	require.Equal(t, "completed", string(fs.Status))
	require.Equal(t, []string{"KV cache"}, fs.Queries)
	require.NotEmpty(t, fs.Results)
	require.Equal(t, "kv.md", fs.Results[0].Filename)
	require.Contains(t, res.OutputText(), "attention keys", "the model saw the chunk")
	require.Equal(t, "file_search", res.Tools[0].Type)
	require.Equal(t, []string{vs.ID}, res.Tools[0].VectorStoreIDs)
	calls := env.eng.recorded()
	require.Contains(t, string(calls[len(calls)-2].Body), `"name":"file_search"`, "the model is offered file_search as a function")

	evs := collect(t, c, responses.ResponseNewParams{Model: "m", Input: stringInput("router"),
		Tools: []responses.ToolUnionParam{{OfFileSearch: &responses.FileSearchToolParam{VectorStoreIDs: []string{vs.ID}}}}})
	requireSequenced(t, evs)
	var types []string
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "response.file_search_call") || (strings.HasPrefix(e.Type, "response.output_item") && e.Item.Type == "file_search_call") {
			types = append(types, e.Type)
		}
	}
	require.Equal(t, []string{"response.output_item.added", "response.file_search_call.in_progress", "response.file_search_call.searching",
		"response.file_search_call.completed", "response.output_item.done"}, types)
	final := evs[len(evs)-1].Response
	require.Nil(t, final.Output[0].Results, "results only when included")
	require.Contains(t, final.OutputText(), "picks a replica")

	t.Run("another owner", func(t *testing.T) {
		bob := env.client("sk-bob")
		_, err := bob.VectorStores.Get(ctx, vs.ID)
		requireAPIError(t, err, 404, "not_found")
		_, err = bob.VectorStores.Search(ctx, vs.ID, oai.VectorStoreSearchParams{Query: oai.VectorStoreSearchParamsQueryUnion{OfString: oai.String("KV")}})
		requireAPIError(t, err, 404, "not_found")
		_, err = bob.VectorStores.Files.New(ctx, vs.ID, oai.VectorStoreFileNewParams{FileID: md})
		requireAPIError(t, err, 404, "not_found")
		_, err = bob.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("KV"),
			Tools: []responses.ToolUnionParam{{OfFileSearch: &responses.FileSearchToolParam{VectorStoreIDs: []string{vs.ID}}}}})
		apiErr := requireAPIError(t, err, 404, "not_found")
		require.Equal(t, "tools", apiErr.Param)
		// Bob cannot attach Alice's file to his own store either.
		own, err := bob.VectorStores.New(ctx, oai.VectorStoreNewParams{})
		require.NoError(t, err)
		_, err = bob.VectorStores.Files.New(ctx, own.ID, oai.VectorStoreFileNewParams{FileID: md})
		requireAPIError(t, err, 400, codeInvalidValue)
		for _, path := range []string{"/v1/vector_stores/" + vs.ID, "/v1/vector_stores/" + vs.ID + "/files", "/v1/vector_stores/" + vs.ID + "/files/" + md} {
			status, _, body := env.do(t, "GET", path, "sk-bob", "")
			require.Equal(t, 404, status, "%s: %s", path, body)
			status, _, body = env.do(t, "DELETE", path, "sk-bob", "")
			if !strings.HasSuffix(path, "/files") {
				require.Equal(t, 404, status, "%s: %s", path, body)
			}
		}
	})

	list, err := c.VectorStores.Files.List(ctx, vs.ID, oai.VectorStoreFileListParams{})
	require.NoError(t, err)
	require.Len(t, list.Data, 4)
	_, err = c.VectorStores.Files.Delete(ctx, vs.ID, md)
	require.NoError(t, err)
	require.Empty(t, search("KV cache attention"))
	stores, err := c.VectorStores.List(ctx, oai.VectorStoreListParams{})
	require.NoError(t, err)
	require.Len(t, stores.Data, 1)
	del, err := c.VectorStores.Delete(ctx, vs.ID)
	require.NoError(t, err)
	require.True(t, del.Deleted)
	_, err = c.VectorStores.Get(ctx, vs.ID)
	requireAPIError(t, err, 404, "not_found")
}

func TestVectorStoreBadInput(t *testing.T) {
	env := newTestEnv(t)
	vs, err := env.client("sk-alice").VectorStores.New(t.Context(), oai.VectorStoreNewParams{})
	require.NoError(t, err)
	base := "/v1/vector_stores/" + vs.ID
	for _, tc := range []struct {
		name, path, body string
		status           int
		param            any
		code             string
	}{
		{"unknown file", "/v1/vector_stores", `{"file_ids":["file-nope"]}`, 400, "file_id", codeInvalidValue},
		{"chunk size", "/v1/vector_stores", `{"chunking_strategy":{"type":"static","static":{"max_chunk_size_tokens":50,"chunk_overlap_tokens":0}}}`, 400, "chunking_strategy.static.max_chunk_size_tokens", codeInvalidValue},
		{"chunk overlap", "/v1/vector_stores", `{"chunking_strategy":{"type":"static","static":{"max_chunk_size_tokens":200,"chunk_overlap_tokens":101}}}`, 400, "chunking_strategy.static.chunk_overlap_tokens", codeInvalidValue},
		{"chunk type", "/v1/vector_stores", `{"chunking_strategy":{"type":"semantic"}}`, 400, "chunking_strategy.type", codeInvalidValue},
		{"unknown field", "/v1/vector_stores", `{"nam":"x"}`, 400, "nam", codeUnknownParameter},
		{"file without id", base + "/files", `{}`, 400, "file_id", "missing_required_parameter"},
		{"search without query", base + "/search", `{}`, 400, "query", "missing_required_parameter"},
		{"search filters", base + "/search", `{"query":"x","filters":{"type":"eq","key":"a","value":"b"}}`, 400, "filters", codeUnsupportedParameter},
		{"search results", base + "/search", `{"query":"x","max_num_results":0}`, 400, "max_num_results", codeInvalidValue},
		{"search threshold", base + "/search", `{"query":"x","ranking_options":{"score_threshold":2}}`, 400, "ranking_options.score_threshold", codeInvalidValue},
		{"search unknown store", "/v1/vector_stores/vs_nope/search", `{"query":"x"}`, 404, nil, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := env.do(t, "POST", tc.path, "sk-alice", tc.body)
			require.Equal(t, tc.status, status, string(body))
			e := envelope(t, body)
			require.Equal(t, tc.param, e["param"])
			require.Equal(t, tc.code, e["code"])
		})
	}
	stores, err := env.client("sk-alice").VectorStores.List(t.Context(), oai.VectorStoreListParams{})
	require.NoError(t, err)
	require.Len(t, stores.Data, 1, "a store whose files could not be attached is not left behind")
}

// Crafted PDFs that make the PDF reader loop forever fail as invalid files instead.
func TestExtractPDFLoops(t *testing.T) {
	b := minimalPDF("Hello")
	selfKids := bytes.Replace(b, []byte("/Kids [3 0 R]"), []byte("/Kids [2 0 R]"), 1)
	i := bytes.LastIndex(b, []byte("/Root 1 0 R"))
	x := bytes.LastIndex(b, []byte("startxref\n"))
	xref := strings.TrimSpace(string(b[x+len("startxref\n") : len(b)-len("%%EOF\n")]))
	selfPrev := slices.Concat(b[:i], []byte("/Prev "+xref+" "), b[i:])
	for name, in := range map[string][]byte{"page tree cycle": selfKids, "xref /Prev cycle": selfPrev} {
		t.Run(name, func(t *testing.T) {
			_, err := extractText("a.pdf", in)
			var bad *errInvalidFile
			require.ErrorAs(t, err, &bad)
		})
	}
	require.False(t, pdfPrevCycle(b))
}

// BenchmarkChunkText measures static chunking (800/400 cl100k tokens) of a 100 KB text.
func BenchmarkChunkText(b *testing.B) {
	text := strings.Repeat("The router keeps every iteration of an agent loop on a warm replica. ", 1500)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := chunkText(text, chunking{MaxChunkSizeTokens: 800, ChunkOverlapTokens: 400}); err != nil {
			b.Fatal(err)
		}
	}
}
