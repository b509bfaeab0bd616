package platform

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ledongthuc/pdf"
	"github.com/tiktoken-go/tokenizer"
	"golang.org/x/net/html"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// The Vector Stores API (https://platform.openai.com/docs/api-reference/vector-stores, as
// encoded by openai-go v3 VectorStore, VectorStoreFile, VectorStoreSearchResponse): files are
// attached to a vector store, their text extracted (plain text, Markdown, HTML, JSON, PDF) and
// cut into chunks of tokens, and the chunks searched by keyword (FTS5 in SQLite, tsvector in
// PostgreSQL). Ingestion runs synchronously inside the attaching request. Vector search with
// embeddings, hybrid ranking, attribute filters and file batches are not built yet.

// Static chunking defaults and bounds (OpenAI's: 800 tokens with 400 overlap; size 100..4096,
// overlap at most half the size). Tokens are cl100k_base tokens.
const (
	defaultChunkTokens   = 800
	defaultChunkOverlap  = 400
	minChunkTokens       = 100
	maxChunkTokens       = 4096
	maxSearchResults     = 50
	defaultSearchResults = 10
)

// chunking is a static chunking strategy.
type chunking struct {
	MaxChunkSizeTokens int `json:"max_chunk_size_tokens"`
	ChunkOverlapTokens int `json:"chunk_overlap_tokens"`
}

// codec is the tokenizer chunk sizes are counted in, loaded once.
var codec = sync.OnceValues(func() (tokenizer.Codec, error) { return tokenizer.Get(tokenizer.Cl100kBase) })

// chunkText cuts text into windows of c.MaxChunkSizeTokens tokens, each starting
// MaxChunkSize-ChunkOverlap tokens after the previous one. Token boundaries that split a
// character are repaired by dropping the broken bytes.
func chunkText(text string, c chunking) ([]string, error) {
	enc, err := codec()
	if err != nil {
		return nil, fmt.Errorf("platform: tokenizer: %w", err)
	}
	ids, _, err := enc.Encode(text)
	if err != nil {
		return nil, fmt.Errorf("platform: tokenize: %w", err)
	}
	step := c.MaxChunkSizeTokens - c.ChunkOverlapTokens
	var out []string
	for start := 0; start < len(ids); start += step {
		end := min(start+c.MaxChunkSizeTokens, len(ids))
		s, err := enc.Decode(ids[start:end])
		if err != nil {
			return nil, fmt.Errorf("platform: detokenize: %w", err)
		}
		if s = strings.TrimSpace(strings.ToValidUTF8(s, "")); s != "" {
			out = append(out, s)
		}
		if end == len(ids) {
			break
		}
	}
	return out, nil
}

// errInvalidFile is the last_error of a file whose text cannot be extracted.
type errInvalidFile struct{ msg string }

func (e *errInvalidFile) Error() string { return e.msg }

// extractText returns the text of a file by its extension: PDF text (extractPDF),
// the text nodes of HTML outside script and style (golang.org/x/net/html), JSON as written
// (checked), anything else as UTF-8 text. Errors: *errInvalidFile for content that is not
// what its name says.
func extractText(filename string, b []byte) (text string, err error) {
	switch strings.ToLower(path.Ext(filename)) {
	case ".pdf":
		return extractPDF(b)
	case ".html", ".htm":
		doc, err := html.Parse(bytes.NewReader(b))
		if err != nil {
			return "", &errInvalidFile{"The HTML could not be parsed."}
		}
		var sb strings.Builder
		var walk func(n *html.Node)
		walk = func(n *html.Node) {
			if n.Type == html.ElementNode && (n.Data == "script" || n.Data == "style") {
				return
			}
			if n.Type == html.TextNode {
				if t := strings.TrimSpace(n.Data); t != "" {
					sb.WriteString(t)
					sb.WriteByte('\n')
				}
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				walk(c)
			}
		}
		walk(doc)
		return sb.String(), nil
	case ".json":
		if !json.Valid(b) {
			return "", &errInvalidFile{"The file is not valid JSON."}
		}
	}
	if !utf8.Valid(b) {
		return "", &errInvalidFile{"The file is not UTF-8 text."}
	}
	return string(b), nil
}

// pdfTimeout bounds the reading of one PDF; pdfSlots bounds the PDFs read at once.
var (
	pdfTimeout = 10 * time.Second
	pdfSlots   = make(chan struct{}, 4)
)

// extractPDF returns the text of a PDF (github.com/ledongthuc/pdf), in page order.
//
// That reader trusts its input: it loops forever on a page tree whose Kids refer back to an
// ancestor, or an xref chain whose /Prev refers back (both found by FuzzExtractText). Both
// are refused before it runs (pdfPages, pdfPrevCycle). For loops not yet known, the reading
// runs in its own goroutine under pdfTimeout: on expiry the file fails and the goroutine is
// abandoned still holding its slot, so at most cap(pdfSlots) can ever spin; after that PDFs
// fail with "busy" until a restart. Its panics are recovered as invalid files.
func extractPDF(b []byte) (string, error) {
	if pdfPrevCycle(b) {
		return "", &errInvalidFile{"The PDF's cross-reference chain is malformed."}
	}
	select {
	case pdfSlots <- struct{}{}:
	default:
		return "", &errInvalidFile{"Too many PDFs are being read; try again later."}
	}
	type result struct {
		text string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if recover() != nil { // the reader panics on some corrupt files
				r = result{"", &errInvalidFile{"The PDF could not be read."}}
			}
			<-pdfSlots
			ch <- r
		}()
		r.text, r.err = readPDF(b)
	}()
	t := time.NewTimer(pdfTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.text, r.err
	case <-t.C:
		return "", &errInvalidFile{"The PDF took too long to read."}
	}
}

func readPDF(b []byte) (string, error) {
	r, err := pdf.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return "", &errInvalidFile{"The PDF could not be read."}
	}
	pages, ok := pdfPages(r.Trailer().Key("Root").Key("Pages"))
	if !ok {
		return "", &errInvalidFile{"The PDF's page tree is malformed."}
	}
	var sb strings.Builder
	for _, pg := range pages {
		t, err := pg.GetPlainText(nil)
		if err != nil {
			return "", &errInvalidFile{"The PDF's text could not be extracted."}
		}
		sb.WriteString(t)
		sb.WriteByte('\n')
	}
	return sb.String(), nil
}

// pdfPrevCycle reports whether the xref chain of a PDF may loop: a /Prev offset that repeats,
// or that equals the startxref offset. Any cycle of the chain from startxref shows as one of
// the two (scanning every /Prev of the file over-approximates the chain, which only refuses
// files with duplicated /Prev entries, malformed anyway).
func pdfPrevCycle(b []byte) bool {
	num := func(rest []byte) (string, bool) {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		return string(rest[:n]), n > 0
	}
	seen := map[string]bool{}
	if i := bytes.LastIndex(b, []byte("startxref")); i >= 0 {
		if n, ok := num(b[i+len("startxref"):]); ok {
			seen[strings.TrimLeft(n, "0")] = true
		}
	}
	for rest := b; ; {
		i := bytes.Index(rest, []byte("/Prev"))
		if i < 0 {
			return false
		}
		rest = rest[i+len("/Prev"):]
		n, ok := num(rest)
		if !ok {
			continue
		}
		n = strings.TrimLeft(n, "0")
		if seen[n] {
			return true
		}
		seen[n] = true
	}
}

// PDF page tree bounds: deeper trees, more nodes or more pages are refused as malformed.
const (
	maxPDFTreeDepth = 32
	maxPDFNodes     = 20000
)

// pdfPages returns the pages of a PDF page tree in order, walking it with bounded depth and
// node count. The library's own walk (Reader.Page, GetPlainText) loops forever on a tree whose
// Kids refer back to an ancestor, and walks Count times however large Count claims to be: a
// crafted upload would hang ingestion (found by FuzzExtractText).
func pdfPages(root pdf.Value) ([]pdf.Page, bool) {
	var pages []pdf.Page
	nodes := 0
	var walk func(v pdf.Value, depth int) bool
	walk = func(v pdf.Value, depth int) bool {
		nodes++
		if depth > maxPDFTreeDepth || nodes > maxPDFNodes {
			return false
		}
		switch v.Key("Type").Name() {
		case "Pages":
			kids := v.Key("Kids")
			for i := 0; i < kids.Len(); i++ {
				if !walk(kids.Index(i), depth+1) {
					return false
				}
			}
		case "Page":
			pages = append(pages, pdf.Page{V: v})
		}
		return true
	}
	return pages, walk(root, 0)
}

// parseChunking decodes chunking_strategy: null or {"type":"auto"} (the defaults), or
// {"type":"static","static":{max_chunk_size_tokens, chunk_overlap_tokens}}.
func parseChunking(raw json.RawMessage) (chunking, error) {
	def := chunking{MaxChunkSizeTokens: defaultChunkTokens, ChunkOverlapTokens: defaultChunkOverlap}
	if isNull(raw) {
		return def, nil
	}
	var cs struct {
		Type   string    `json:"type"`
		Static *chunking `json:"static"`
	}
	if json.Unmarshal(raw, &cs) != nil {
		return def, invalidType("chunking_strategy", "an object", raw)
	}
	switch cs.Type {
	case "auto":
		return def, nil
	case "static":
	default:
		return def, invalidValue("chunking_strategy.type", cs.Type, "'auto' and 'static'")
	}
	if cs.Static == nil {
		return def, openai.MissingParam("chunking_strategy.static")
	}
	c := *cs.Static
	if c.MaxChunkSizeTokens < minChunkTokens || c.MaxChunkSizeTokens > maxChunkTokens {
		return def, openai.InvalidRequest("chunking_strategy.static.max_chunk_size_tokens", codeInvalidValue,
			"Invalid 'chunking_strategy.static.max_chunk_size_tokens': expected an integer between %d and %d, but got %d.", minChunkTokens, maxChunkTokens, c.MaxChunkSizeTokens)
	}
	if c.ChunkOverlapTokens < 0 || c.ChunkOverlapTokens > c.MaxChunkSizeTokens/2 {
		return def, openai.InvalidRequest("chunking_strategy.static.chunk_overlap_tokens", codeInvalidValue,
			"Invalid 'chunking_strategy.static.chunk_overlap_tokens': expected an integer between 0 and half of max_chunk_size_tokens (%d), but got %d.", c.MaxChunkSizeTokens/2, c.ChunkOverlapTokens)
	}
	return c, nil
}

// Wire objects.

type vectorStoreObject struct {
	ID           string          `json:"id"`
	Object       string          `json:"object"` // "vector_store"
	CreatedAt    int64           `json:"created_at"`
	Name         string          `json:"name"`
	UsageBytes   int64           `json:"usage_bytes"`
	FileCounts   fileCounts      `json:"file_counts"`
	Status       string          `json:"status"` // "completed": ingestion is synchronous
	ExpiresAfter *struct{}       `json:"expires_after"`
	ExpiresAt    *int64          `json:"expires_at"`
	LastActiveAt int64           `json:"last_active_at"`
	Metadata     json.RawMessage `json:"metadata"`
}

type fileCounts struct {
	InProgress int64 `json:"in_progress"`
	Completed  int64 `json:"completed"`
	Failed     int64 `json:"failed"`
	Cancelled  int64 `json:"cancelled"`
	Total      int64 `json:"total"`
}

type vectorStoreFileObject struct {
	ID               string           `json:"id"`
	Object           string           `json:"object"` // "vector_store.file"
	UsageBytes       int64            `json:"usage_bytes"`
	CreatedAt        int64            `json:"created_at"`
	VectorStoreID    string           `json:"vector_store_id"`
	Status           string           `json:"status"`
	LastError        *responseError   `json:"last_error"`
	ChunkingStrategy chunkingStrategy `json:"chunking_strategy"`
	Attributes       json.RawMessage  `json:"attributes"`
}

type chunkingStrategy struct {
	Type   string   `json:"type"` // "static"
	Static chunking `json:"static"`
}

type searchPage struct {
	Object      string         `json:"object"` // "vector_store.search_results.page"
	SearchQuery []string       `json:"search_query"`
	Data        []searchResult `json:"data"`
	HasMore     bool           `json:"has_more"`
	NextPage    *string        `json:"next_page"`
}

type searchResult struct {
	FileID     string          `json:"file_id"`
	Filename   string          `json:"filename"`
	Score      float64         `json:"score"`
	Attributes json.RawMessage `json:"attributes"`
	Content    []searchContent `json:"content"`
}

type searchContent struct {
	Type string `json:"type"` // "text"
	Text string `json:"text"`
}

func (p *Platform) routeVectorStores() {
	const base = "/v1/vector_stores"
	p.routeOwned("POST "+base, base, p.createVectorStore)
	p.routeOwned("GET "+base, base, p.listVectorStores)
	p.routeOwned("GET "+base+"/{id}", base+"/{id}", p.getVectorStore)
	p.routeOwned("DELETE "+base+"/{id}", base+"/{id}", p.deleteVectorStore)
	p.routeOwned("POST "+base+"/{id}/files", base+"/{id}/files", p.createVectorStoreFile)
	p.routeOwned("GET "+base+"/{id}/files", base+"/{id}/files", p.listVectorStoreFiles)
	p.routeOwned("GET "+base+"/{id}/files/{file}", base+"/{id}/files/{file}", p.getVectorStoreFile)
	p.routeOwned("DELETE "+base+"/{id}/files/{file}", base+"/{id}/files/{file}", p.deleteVectorStoreFile)
	p.routeOwned("POST "+base+"/{id}/search", base+"/{id}/search", p.searchVectorStore)
}

func vsNotFound(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return openai.NotFound("Vector store with id '%s' not found.", id)
	}
	return err
}

func (p *Platform) renderVectorStore(r *http.Request, v *store.VectorStore) (*vectorStoreObject, error) {
	c, err := p.st.VectorStoreFileCounts(r.Context(), v.ID)
	if err != nil {
		return nil, err
	}
	return &vectorStoreObject{ID: v.ID, Object: "vector_store", CreatedAt: v.CreatedAt.Unix(), Name: v.Name,
		UsageBytes: c.UsageBytes, FileCounts: fileCounts{InProgress: c.InProgress, Completed: c.Completed, Failed: c.Failed,
			Cancelled: c.Cancelled, Total: c.Total}, Status: "completed", LastActiveAt: v.CreatedAt.Unix(), Metadata: v.Metadata}, nil
}

func renderVectorStoreFile(f *store.VectorStoreFile, c chunking) *vectorStoreFileObject {
	o := &vectorStoreFileObject{ID: f.FileID, Object: "vector_store.file", UsageBytes: f.UsageBytes, CreatedAt: f.CreatedAt.Unix(),
		VectorStoreID: f.VectorStoreID, Status: f.Status, ChunkingStrategy: chunkingStrategy{Type: "static", Static: c},
		Attributes: f.Attributes}
	if f.ErrorCode != "" {
		o.LastError = &responseError{Code: f.ErrorCode, Message: f.ErrorMessage}
	}
	return o
}

// ingest attaches file id of owner to vector store vs: reads it, extracts its text, chunks it
// and stores the chunks. A file whose text cannot be extracted is attached with status failed
// and last_error; the vector store keeps serving. Errors: 404 for an unknown file, store
// errors.
func (p *Platform) ingest(r *http.Request, owner, vs, fileID string, c chunking, attrs json.RawMessage) (*store.VectorStoreFile, error) {
	ctx := r.Context()
	f, err := p.st.GetFile(ctx, owner, fileID)
	if err == nil && p.expired(f) {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, openai.InvalidRequest("file_id", codeInvalidValue, "No such File object: %s", fileID)
	}
	if err != nil {
		return nil, err
	}
	b, err := p.st.FileContent(ctx, owner, fileID)
	if err != nil {
		return nil, err
	}
	vf := &store.VectorStoreFile{VectorStoreID: vs, FileID: fileID, Filename: f.Filename, CreatedAt: p.clk.Now(),
		Status: "completed", Attributes: attrs}
	var chunks []string
	text, err := extractText(f.Filename, b)
	if err == nil {
		chunks, err = chunkText(text, c)
	}
	var bad *errInvalidFile
	switch {
	case errors.As(err, &bad):
		vf.Status, vf.ErrorCode, vf.ErrorMessage = "failed", "invalid_file", bad.msg
	case err != nil:
		p.log.Error("vector store ingestion failed", "file", fileID, "err", err)
		vf.Status, vf.ErrorCode, vf.ErrorMessage = "failed", failedCodeServer, "The file could not be processed."
	}
	if err := p.st.PutVectorStoreFile(ctx, owner, vf, chunks); err != nil {
		return nil, vsNotFound(vs, err)
	}
	return vf, nil
}

// createVectorStore answers POST /v1/vector_stores {name?, file_ids?, metadata?,
// chunking_strategy?}; the files are ingested before the answer.
func (p *Platform) createVectorStore(w http.ResponseWriter, r *http.Request, owner string) {
	fields, err := readObject(r, "name", "file_ids", "metadata", "chunking_strategy", "expires_after", "description")
	if err != nil {
		p.fail(w, err)
		return
	}
	name, err := str("name", fields["name"])
	if err == nil && !isNull(fields["expires_after"]) {
		err = unsupported("expires_after", "'expires_after' is not supported yet for vector stores.")
	}
	var fileIDs []string
	if err == nil && !isNull(fields["file_ids"]) && json.Unmarshal(fields["file_ids"], &fileIDs) != nil {
		err = invalidType("file_ids", "an array of strings", fields["file_ids"])
	}
	var meta json.RawMessage
	if err == nil {
		meta, err = metadataJSON(fields["metadata"])
	}
	var c chunking
	if err == nil {
		c, err = parseChunking(fields["chunking_strategy"])
	}
	if err != nil {
		p.fail(w, err)
		return
	}
	v := &store.VectorStore{ID: newID("vs_"), Owner: owner, CreatedAt: p.clk.Now(), Metadata: meta}
	if name != nil {
		v.Name = *name
	}
	if err := p.st.CreateVectorStore(r.Context(), v); err != nil {
		p.fail(w, err)
		return
	}
	for _, id := range fileIDs {
		if _, err := p.ingest(r, owner, v.ID, id, c, nil); err != nil {
			_ = p.st.DeleteVectorStore(r.Context(), owner, v.ID)
			p.fail(w, err)
			return
		}
	}
	o, err := p.renderVectorStore(r, v)
	if err != nil {
		p.fail(w, err)
		return
	}
	writeValue(w, o)
}

func (p *Platform) getVectorStore(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	v, err := p.st.GetVectorStore(r.Context(), owner, id)
	if err != nil {
		p.fail(w, vsNotFound(id, err))
		return
	}
	o, err := p.renderVectorStore(r, v)
	if err != nil {
		p.fail(w, err)
		return
	}
	writeValue(w, o)
}

// listVectorStores answers GET /v1/vector_stores: newest first, limit 1..100 (default 20).
// Cursor paging (after, before) is not supported yet.
func (p *Platform) listVectorStores(w http.ResponseWriter, r *http.Request, owner string) {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			p.fail(w, openai.InvalidRequest("limit", codeInvalidValue, "Invalid 'limit': expected an integer between 1 and 100, but got '%s'.", v))
			return
		}
		limit = n
	}
	vs, err := p.st.ListVectorStores(r.Context(), owner, limit+1)
	if err != nil {
		p.fail(w, err)
		return
	}
	out := struct {
		Object  string               `json:"object"`
		Data    []*vectorStoreObject `json:"data"`
		FirstID *string              `json:"first_id"`
		LastID  *string              `json:"last_id"`
		HasMore bool                 `json:"has_more"`
	}{Object: "list", Data: []*vectorStoreObject{}, HasMore: len(vs) > limit}
	for i := range vs[:min(len(vs), limit)] {
		o, err := p.renderVectorStore(r, &vs[i])
		if err != nil {
			p.fail(w, err)
			return
		}
		out.Data = append(out.Data, o)
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	writeValue(w, out)
}

func (p *Platform) deleteVectorStore(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	if err := p.st.DeleteVectorStore(r.Context(), owner, id); err != nil {
		p.fail(w, vsNotFound(id, err))
		return
	}
	writeValue(w, deletedResponse{ID: id, Object: "vector_store.deleted", Deleted: true})
}

// createVectorStoreFile answers POST /v1/vector_stores/{id}/files {file_id, attributes?,
// chunking_strategy?} with the vector store file, completed or failed.
func (p *Platform) createVectorStoreFile(w http.ResponseWriter, r *http.Request, owner string) {
	fields, err := readObject(r, "file_id", "attributes", "chunking_strategy")
	if err != nil {
		p.fail(w, err)
		return
	}
	id := r.PathValue("id")
	if _, err := p.st.GetVectorStore(r.Context(), owner, id); err != nil {
		p.fail(w, vsNotFound(id, err))
		return
	}
	fileID, err := str("file_id", fields["file_id"])
	if err == nil && (fileID == nil || *fileID == "") {
		err = openai.MissingParam("file_id")
	}
	attrs := json.RawMessage(`{}`)
	if err == nil && !isNull(fields["attributes"]) {
		var m map[string]json.RawMessage
		if json.Unmarshal(fields["attributes"], &m) != nil || m == nil {
			err = invalidType("attributes", "an object", fields["attributes"])
		} else if len(m) > maxMetadataPairs {
			err = openai.InvalidRequest("attributes", codeInvalidValue, "Invalid 'attributes': at most %d pairs.", maxMetadataPairs)
		} else {
			attrs = fields["attributes"]
		}
	}
	var c chunking
	if err == nil {
		c, err = parseChunking(fields["chunking_strategy"])
	}
	if err != nil {
		p.fail(w, err)
		return
	}
	vf, err := p.ingest(r, owner, id, *fileID, c, attrs)
	if err != nil {
		p.fail(w, err)
		return
	}
	writeValue(w, renderVectorStoreFile(vf, c))
}

func (p *Platform) listVectorStoreFiles(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	files, err := p.st.ListVectorStoreFiles(r.Context(), owner, id)
	if err != nil {
		p.fail(w, vsNotFound(id, err))
		return
	}
	filter := r.URL.Query().Get("filter")
	out := struct {
		Object  string                   `json:"object"`
		Data    []*vectorStoreFileObject `json:"data"`
		FirstID *string                  `json:"first_id"`
		LastID  *string                  `json:"last_id"`
		HasMore bool                     `json:"has_more"`
	}{Object: "list", Data: []*vectorStoreFileObject{}}
	def := chunking{MaxChunkSizeTokens: defaultChunkTokens, ChunkOverlapTokens: defaultChunkOverlap}
	for i := range files {
		if filter == "" || files[i].Status == filter {
			out.Data = append(out.Data, renderVectorStoreFile(&files[i], def))
		}
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	writeValue(w, out)
}

func (p *Platform) getVectorStoreFile(w http.ResponseWriter, r *http.Request, owner string) {
	id, file := r.PathValue("id"), r.PathValue("file")
	f, err := p.st.GetVectorStoreFile(r.Context(), owner, id, file)
	if err != nil {
		p.fail(w, p.vsFileNotFound(r, owner, id, file, err))
		return
	}
	writeValue(w, renderVectorStoreFile(f, chunking{MaxChunkSizeTokens: defaultChunkTokens, ChunkOverlapTokens: defaultChunkOverlap}))
}

func (p *Platform) deleteVectorStoreFile(w http.ResponseWriter, r *http.Request, owner string) {
	id, file := r.PathValue("id"), r.PathValue("file")
	if err := p.st.DeleteVectorStoreFile(r.Context(), owner, id, file); err != nil {
		p.fail(w, p.vsFileNotFound(r, owner, id, file, err))
		return
	}
	writeValue(w, deletedResponse{ID: file, Object: "vector_store.file.deleted", Deleted: true})
}

func (p *Platform) vsFileNotFound(r *http.Request, owner, vs, file string, err error) error {
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, verr := p.st.GetVectorStore(r.Context(), owner, vs); verr != nil {
		return vsNotFound(vs, verr)
	}
	return openai.NotFound("File '%s' is not in vector store '%s'.", file, vs)
}

// searchQuery is a checked body of POST /v1/vector_stores/{id}/search.
type searchQuery struct {
	queries        []string
	maxResults     int
	scoreThreshold float64
}

// parseSearch decodes {query (a string or strings), max_num_results (1..50, default 10),
// ranking_options {ranker, score_threshold 0..1}, rewrite_query (false only), filters (null
// only: attribute filters are not supported yet)}.
func parseSearch(fields map[string]json.RawMessage) (*searchQuery, error) {
	q := &searchQuery{maxResults: defaultSearchResults}
	raw := fields["query"]
	if isNull(raw) {
		return nil, openai.MissingParam("query")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		q.queries = []string{s}
	} else if json.Unmarshal(raw, &q.queries) != nil {
		return nil, invalidType("query", "a string or an array of strings", raw)
	}
	if n, err := integer("max_num_results", fields["max_num_results"]); err != nil {
		return nil, err
	} else if n != nil {
		if *n < 1 || *n > maxSearchResults {
			return nil, openai.InvalidRequest("max_num_results", codeInvalidValue, "Invalid 'max_num_results': expected an integer between 1 and %d, but got %d.", maxSearchResults, *n)
		}
		q.maxResults = int(*n)
	}
	if b, err := boolean("rewrite_query", fields["rewrite_query"]); err != nil {
		return nil, err
	} else if b != nil && *b {
		return nil, unsupported("rewrite_query", "Query rewriting is not supported yet.")
	}
	if !isNull(fields["filters"]) {
		return nil, unsupported("filters", "Attribute filters are not supported yet; send the search without 'filters'.")
	}
	if raw := fields["ranking_options"]; !isNull(raw) {
		var ro struct {
			Ranker         *string  `json:"ranker"`
			ScoreThreshold *float64 `json:"score_threshold"`
		}
		if json.Unmarshal(raw, &ro) != nil {
			return nil, invalidType("ranking_options", "an object", raw)
		}
		if ro.ScoreThreshold != nil {
			if *ro.ScoreThreshold < 0 || *ro.ScoreThreshold > 1 {
				return nil, openai.InvalidRequest("ranking_options.score_threshold", codeInvalidValue, "Invalid 'ranking_options.score_threshold': expected a number between 0 and 1.")
			}
			q.scoreThreshold = *ro.ScoreThreshold
		}
	}
	return q, nil
}

// search runs q over the vector stores for owner: the hits of every query, best first, above
// the threshold, at most q.maxResults, each chunk once.
func (p *Platform) search(ctx context.Context, owner string, vs []string, q *searchQuery) ([]searchResult, error) {
	out := []searchResult{}
	seen := map[string]bool{}
	var hits []store.ChunkHit
	for _, text := range q.queries {
		h, err := p.st.SearchChunks(ctx, owner, vs, text, q.maxResults)
		if err != nil {
			return nil, err
		}
		hits = append(hits, h...)
	}
	slicesSortHits(hits)
	for _, h := range hits {
		key := h.VectorStoreID + "\x00" + h.FileID + "\x00" + strconv.FormatInt(h.Seq, 10)
		if seen[key] || h.Score < q.scoreThreshold || len(out) == q.maxResults {
			continue
		}
		seen[key] = true
		out = append(out, searchResult{FileID: h.FileID, Filename: h.Filename, Score: h.Score, Attributes: h.Attributes,
			Content: []searchContent{{Type: "text", Text: h.Text}}})
	}
	return out, nil
}

// searchVectorStore answers POST /v1/vector_stores/{id}/search (keyword search).
func (p *Platform) searchVectorStore(w http.ResponseWriter, r *http.Request, owner string) {
	fields, err := readObject(r, "query", "max_num_results", "filters", "ranking_options", "rewrite_query")
	if err != nil {
		p.fail(w, err)
		return
	}
	id := r.PathValue("id")
	if _, err := p.st.GetVectorStore(r.Context(), owner, id); err != nil {
		p.fail(w, vsNotFound(id, err))
		return
	}
	q, err := parseSearch(fields)
	if err != nil {
		p.fail(w, err)
		return
	}
	data, err := p.search(r.Context(), owner, []string{id}, q)
	if err != nil {
		p.fail(w, err)
		return
	}
	writeValue(w, searchPage{Object: "vector_store.search_results.page", SearchQuery: q.queries, Data: data})
}

// slicesSortHits orders hits best first (stable, so equal scores keep the store's order).
func slicesSortHits(hits []store.ChunkHit) {
	slices.SortStableFunc(hits, func(a, b store.ChunkHit) int { return cmp.Compare(b.Score, a.Score) })
}
