package platform

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// The Files API (https://platform.openai.com/docs/api-reference/files, as encoded by openai-go
// v3 FileObject, FileNewParams, FileDeleted): multipart upload with a purpose, kept in the
// store (a BLOB in SQLite, BYTEA in PostgreSQL) and owned by the uploader's tenant (ownerOf).

// File purposes of the OpenAI API.
var filePurposes = []string{"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}

// Accepted file types by purpose, by extension. Documents are what vector stores ingest
// (text, Markdown, HTML, JSON, PDF) plus plain-text formats; batch, fine-tune and evals take
// JSON Lines; vision takes images.
var (
	docExtensions   = []string{".txt", ".md", ".markdown", ".html", ".htm", ".json", ".jsonl", ".pdf", ".csv", ".xml", ".yaml", ".yml", ".tex", ".c", ".cpp", ".h", ".go", ".py", ".js", ".ts", ".java", ".rb", ".rs", ".sh", ".css", ".php"}
	jsonlExtensions = []string{".jsonl"}
	imageExtensions = []string{".png", ".jpg", ".jpeg", ".gif", ".webp"}
)

// Bounds of expires_after.seconds (one hour to 30 days), as OpenAI sets them.
const (
	minExpirySeconds = 3600
	maxExpirySeconds = 30 * 24 * 3600
	maxFilenameBytes = 512
)

// fileObject is the File object (object "file").
type fileObject struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     *int64  `json:"expires_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"` // "processed": the content is stored as uploaded
	StatusDetails *string `json:"status_details"`
}

func renderFile(f *store.File) *fileObject {
	o := &fileObject{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt.Unix(), Filename: f.Filename,
		Purpose: f.Purpose, Status: "processed"}
	if !f.ExpiresAt.IsZero() {
		e := f.ExpiresAt.Unix()
		o.ExpiresAt = &e
	}
	return o
}

// upload is a checked multipart body of POST /v1/files.
type upload struct {
	filename string
	purpose  string
	content  []byte
	expires  time.Duration // 0 = never
}

// errFileTooLarge answers an upload over the limit.
func errFileTooLarge(limit int64) *openai.Error {
	return &openai.Error{Status: http.StatusRequestEntityTooLarge, Type: openai.TypeInvalidRequest, Param: "file",
		Code: openai.CodeBodyTooLarge, Message: fmt.Sprintf("File is too large: the maximum size is %d bytes.", limit)}
}

// parseUpload reads a multipart/form-data upload: the part "file" (with a filename), "purpose",
// and optionally "expires_after[anchor]" (only "created_at") and "expires_after[seconds]"
// (3600..2592000). The file's content is read up to limit bytes. Errors: 413 for a file over
// limit, 400 for anything else wrong, naming the field.
func parseUpload(contentType string, body io.Reader, limit int64) (*upload, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, openai.InvalidRequest("", codeInvalidValue, "Expected a multipart/form-data body with the fields 'file' and 'purpose'.")
	}
	mr := multipart.NewReader(body, params["boundary"])
	up := &upload{}
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return nil, err
			}
			return nil, openai.InvalidRequest("", codeInvalidValue, "The multipart body could not be parsed.")
		}
		name := part.FormName()
		if seen[name] {
			return nil, openai.InvalidRequest(name, codeInvalidValue, "Field '%s' is given twice.", name)
		}
		seen[name] = true
		if name == "file" {
			up.filename = path.Base(strings.ReplaceAll(part.FileName(), `\`, "/"))
			if part.FileName() == "" || up.filename == "." || up.filename == "/" {
				return nil, openai.InvalidRequest("file", codeInvalidValue, "The 'file' field must be a file with a filename.")
			}
			if len(up.filename) > maxFilenameBytes || !utf8.ValidString(up.filename) {
				return nil, openai.InvalidRequest("file", codeInvalidValue, "The filename must be valid UTF-8 of at most %d bytes.", maxFilenameBytes)
			}
			up.content, err = io.ReadAll(io.LimitReader(part, limit+1))
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					return nil, errFileTooLarge(limit)
				}
				return nil, openai.InvalidRequest("file", codeInvalidValue, "The multipart body could not be parsed.")
			}
			if int64(len(up.content)) > limit {
				return nil, errFileTooLarge(limit)
			}
			continue
		}
		v, err := io.ReadAll(io.LimitReader(part, 257))
		if err != nil || len(v) > 256 {
			return nil, openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': expected a short text value.", name)
		}
		val := string(v)
		switch name {
		case "purpose":
			up.purpose = val
		case "expires_after[anchor]", "expires_after.anchor":
			if val != "created_at" {
				return nil, invalidValue("expires_after.anchor", val, "'created_at'")
			}
		case "expires_after[seconds]", "expires_after.seconds":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < minExpirySeconds || n > maxExpirySeconds {
				return nil, openai.InvalidRequest("expires_after.seconds", codeInvalidValue,
					"Invalid 'expires_after.seconds': expected an integer between %d and %d, but got '%s'.", minExpirySeconds, maxExpirySeconds, val)
			}
			up.expires = time.Duration(n) * time.Second
		default:
			return nil, openai.InvalidRequest(name, codeUnknownParameter, "Unknown parameter: '%s'.", name)
		}
	}
	if !seen["file"] {
		return nil, openai.MissingParam("file")
	}
	if up.purpose == "" {
		return nil, openai.MissingParam("purpose")
	}
	if !slices.Contains(filePurposes, up.purpose) {
		return nil, invalidValue("purpose", up.purpose, "'assistants', 'batch', 'fine-tune', 'vision', 'user_data' and 'evals'")
	}
	exts := docExtensions
	switch up.purpose {
	case "batch", "fine-tune", "evals":
		exts = jsonlExtensions
	case "vision":
		exts = imageExtensions
	}
	if ext := strings.ToLower(path.Ext(up.filename)); !slices.Contains(exts, ext) {
		return nil, openai.InvalidRequest("file", "unsupported_file",
			"Invalid file format for purpose '%s': '%s'. Supported formats: %s.", up.purpose, ext, strings.Join(exts, ", "))
	}
	if len(up.content) == 0 {
		return nil, openai.InvalidRequest("file", codeInvalidValue, "The file is empty.")
	}
	return up, nil
}

func (p *Platform) routeFiles() {
	p.routeOwned("POST /v1/files", "/v1/files", p.createFile)
	p.routeOwned("GET /v1/files", "/v1/files", p.listFiles)
	p.route("GET /v1/files/{id}", "/v1/files/{id}", p.getFile)
	p.route("DELETE /v1/files/{id}", "/v1/files/{id}", p.deleteFile)
	p.route("GET /v1/files/{id}/content", "/v1/files/{id}/content", p.fileContent)
}

// createFile answers POST /v1/files with the File object.
func (p *Platform) createFile(w http.ResponseWriter, r *http.Request, owner string) {
	up, err := parseUpload(r.Header.Get("Content-Type"), r.Body, p.cfg.FileBytes())
	if err != nil {
		p.fail(w, err)
		return
	}
	now := p.clk.Now()
	f := &store.File{ID: "file-" + newID("")[:32], Owner: owner, Filename: up.filename, Purpose: up.purpose, CreatedAt: now}
	if up.expires > 0 {
		f.ExpiresAt = now.Add(up.expires)
	}
	if err := p.st.PutFile(r.Context(), f, up.content); err != nil {
		p.fail(w, fmt.Errorf("platform: store file: %w", err))
		return
	}
	writeValue(w, renderFile(f))
}

// ownedFile reads the file named by the path for the caller. Errors: 401 without a key, 404
// when it does not exist, has expired, or belongs to another owner.
func (p *Platform) ownedFile(r *http.Request) (string, *store.File, error) {
	owner, err := p.ownerOf(r)
	if err != nil {
		return "", nil, err
	}
	id := r.PathValue("id")
	f, err := p.st.GetFile(r.Context(), owner, id)
	if err == nil && p.expired(f) {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		return "", nil, openai.NotFound("No such File object: %s", id)
	}
	return owner, f, err
}

func (p *Platform) expired(f *store.File) bool {
	return !f.ExpiresAt.IsZero() && !p.clk.Now().Before(f.ExpiresAt)
}

// getFile answers GET /v1/files/{id}.
func (p *Platform) getFile(w http.ResponseWriter, r *http.Request) {
	_, f, err := p.ownedFile(r)
	if err != nil {
		p.fail(w, err)
		return
	}
	writeValue(w, renderFile(f))
}

// fileContent answers GET /v1/files/{id}/content with the bytes as uploaded.
func (p *Platform) fileContent(w http.ResponseWriter, r *http.Request) {
	owner, f, err := p.ownedFile(r)
	if err != nil {
		p.fail(w, err)
		return
	}
	b, err := p.st.FileContent(r.Context(), owner, f.ID)
	if err != nil {
		p.fail(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": f.Filename}))
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// deleteFile answers DELETE /v1/files/{id} with {id, object:"file", deleted:true}.
func (p *Platform) deleteFile(w http.ResponseWriter, r *http.Request) {
	owner, f, err := p.ownedFile(r)
	if err != nil {
		p.fail(w, err)
		return
	}
	if err := p.st.DeleteFile(r.Context(), owner, f.ID); err != nil {
		p.fail(w, err)
		return
	}
	writeValue(w, deletedResponse{ID: f.ID, Object: "file", Deleted: true})
}

// fileList is the page answered by GET /v1/files.
type fileList struct {
	Object  string        `json:"object"`
	Data    []*fileObject `json:"data"`
	FirstID *string       `json:"first_id"`
	LastID  *string       `json:"last_id"`
	HasMore bool          `json:"has_more"`
}

// listFiles answers GET /v1/files with purpose, limit (1..10000, default 10000), order (asc |
// desc, default desc) and after (a file id). Expired files are left out.
func (p *Platform) listFiles(w http.ResponseWriter, r *http.Request, owner string) {
	q := r.URL.Query()
	page := store.FilePage{Purpose: q.Get("purpose"), After: q.Get("after"), Desc: true, Limit: 10000}
	if page.Purpose != "" && !slices.Contains(filePurposes, page.Purpose) {
		p.fail(w, invalidValue("purpose", page.Purpose, "'assistants', 'batch', 'fine-tune', 'vision', 'user_data' and 'evals'"))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			p.fail(w, openai.InvalidRequest("limit", codeInvalidValue, "Invalid 'limit': expected an integer between 1 and 10000, but got '%s'.", v))
			return
		}
		page.Limit = n
	}
	switch o := q.Get("order"); o {
	case "", "desc":
	case "asc":
		page.Desc = false
	default:
		p.fail(w, invalidValue("order", o, "'asc' and 'desc'"))
		return
	}
	files, more, err := p.st.ListFiles(r.Context(), owner, page)
	if errors.Is(err, store.ErrNotFound) {
		p.fail(w, openai.InvalidRequest("after", codeInvalidValue, "Invalid 'after': no file with id '%s'.", page.After))
		return
	}
	if err != nil {
		p.fail(w, err)
		return
	}
	out := fileList{Object: "list", Data: make([]*fileObject, 0, len(files)), HasMore: more}
	for i := range files {
		if !p.expired(&files[i]) {
			out.Data = append(out.Data, renderFile(&files[i]))
		}
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	writeValue(w, out)
}
