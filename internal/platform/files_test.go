package platform

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

func TestFilesRoundTrip(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	content := "# Notes\n\nStrata keeps files in the store.\n"
	f, err := c.Files.New(ctx, oai.FileNewParams{File: oai.File(strings.NewReader(content), "notes.md", "text/markdown"),
		Purpose: oai.FilePurposeAssistants})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(f.ID, "file-"), f.ID)
	require.Equal(t, "file", string(f.Object))
	require.Equal(t, int64(len(content)), f.Bytes)
	require.Equal(t, "notes.md", f.Filename)
	require.Equal(t, oai.FileObjectPurposeAssistants, f.Purpose)
	require.Equal(t, testNow.Unix(), f.CreatedAt)
	require.Zero(t, f.ExpiresAt)
	require.Contains(t, f.RawJSON(), `"expires_at":null`)

	got, err := c.Files.Get(ctx, f.ID)
	require.NoError(t, err)
	require.Equal(t, f.ID, got.ID)

	resp, err := c.Files.Content(ctx, f.ID)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, content, string(b))
	require.Equal(t, `attachment; filename=notes.md`, resp.Header.Get("Content-Disposition"))

	env.clk.Step(time.Second)
	data, err := c.Files.New(ctx, oai.FileNewParams{File: oai.File(strings.NewReader(`{"a":1}`+"\n"), "b.jsonl", "application/jsonl"),
		Purpose: oai.FilePurposeBatch, ExpiresAfter: oai.FileNewParamsExpiresAfter{Seconds: 3600}})
	require.NoError(t, err)
	require.Equal(t, testNow.Add(time.Second+time.Hour).Unix(), data.ExpiresAt)

	page, err := c.Files.List(ctx, oai.FileListParams{})
	require.NoError(t, err)
	require.Len(t, page.Data, 2)
	require.Equal(t, data.ID, page.Data[0].ID, "newest first")
	page, err = c.Files.List(ctx, oai.FileListParams{Purpose: oai.String("assistants")})
	require.NoError(t, err)
	require.Len(t, page.Data, 1)
	page, err = c.Files.List(ctx, oai.FileListParams{Order: oai.FileListParamsOrderAsc, Limit: oai.Int(1)})
	require.NoError(t, err)
	require.Equal(t, f.ID, page.Data[0].ID)
	require.True(t, page.HasMore)

	// Expired files are gone for every route.
	env.clk.Step(time.Hour)
	_, err = c.Files.Get(ctx, data.ID)
	requireAPIError(t, err, 404, "not_found")
	page, err = c.Files.List(ctx, oai.FileListParams{})
	require.NoError(t, err)
	require.Len(t, page.Data, 1)

	del, err := c.Files.Delete(ctx, f.ID)
	require.NoError(t, err)
	require.True(t, del.Deleted)
	_, err = c.Files.Get(ctx, f.ID)
	requireAPIError(t, err, 404, "not_found")
}

// multipartBody builds an upload body from fields; a field named "file" is a file part with
// filename fname.
func multipartBody(t *testing.T, fname string, fields ...[2]string) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		if f[0] == "file" {
			w, err := mw.CreateFormFile("file", fname)
			require.NoError(t, err)
			_, _ = io.WriteString(w, f[1])
			continue
		}
		require.NoError(t, mw.WriteField(f[0], f[1]))
	}
	require.NoError(t, mw.Close())
	return mw.FormDataContentType(), &buf
}

func TestFilesBadInput(t *testing.T) {
	env := newTestEnvConfig(t, config.Platform{MaxFileBytes: 16})
	file := func(s string) [2]string { return [2]string{"file", s} }
	purpose := func(s string) [2]string { return [2]string{"purpose", s} }
	for _, tc := range []struct {
		name   string
		fname  string
		fields [][2]string
		status int
		param  any
		code   string
	}{
		{"over the size limit", "a.txt", [][2]string{purpose("assistants"), file(strings.Repeat("x", 17))}, 413, "file", openai.CodeBodyTooLarge},
		{"at the size limit", "a.txt", [][2]string{purpose("assistants"), file(strings.Repeat("x", 16))}, 200, nil, ""},
		{"unsupported type", "a.exe", [][2]string{purpose("assistants"), file("MZ")}, 400, "file", "unsupported_file"},
		{"batch needs jsonl", "a.txt", [][2]string{purpose("batch"), file("x")}, 400, "file", "unsupported_file"},
		{"unknown purpose", "a.txt", [][2]string{purpose("fun"), file("x")}, 400, "purpose", codeInvalidValue},
		{"no purpose", "a.txt", [][2]string{file("x")}, 400, "purpose", openai.CodeMissingParam},
		{"no file", "a.txt", [][2]string{purpose("assistants")}, 400, "file", openai.CodeMissingParam},
		{"empty file", "a.txt", [][2]string{purpose("assistants"), file("")}, 400, "file", codeInvalidValue},
		{"unknown field", "a.txt", [][2]string{purpose("assistants"), file("x"), {"colour", "red"}}, 400, "colour", codeUnknownParameter},
		{"expiry too short", "a.txt", [][2]string{purpose("assistants"), file("x"), {"expires_after[anchor]", "created_at"}, {"expires_after[seconds]", "60"}}, 400, "expires_after.seconds", codeInvalidValue},
		{"expiry anchor", "a.txt", [][2]string{purpose("assistants"), file("x"), {"expires_after[anchor]", "now"}}, 400, "expires_after.anchor", codeInvalidValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := multipartBody(t, tc.fname, tc.fields...)
			req, err := http.NewRequestWithContext(t.Context(), "POST", env.srv.URL+"/v1/files", body)
			require.NoError(t, err)
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Authorization", "Bearer sk-alice")
			resp, err := env.srv.Client().Do(req)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode, string(b))
			if tc.status != 200 {
				e := envelope(t, b)
				require.Equal(t, tc.param, e["param"])
				require.Equal(t, tc.code, e["code"])
			}
		})
	}
	status, _, body := env.do(t, "POST", "/v1/files", "sk-alice", `{"purpose":"assistants"}`)
	require.Equal(t, 400, status, string(body))
	require.Contains(t, envelope(t, body)["message"], "multipart/form-data")
}

func TestFilesOwnership(t *testing.T) {
	env := newTestEnv(t)
	f, err := env.client("sk-alice").Files.New(t.Context(), oai.FileNewParams{
		File: oai.File(strings.NewReader("secret"), "s.txt", "text/plain"), Purpose: oai.FilePurposeUserData})
	require.NoError(t, err)
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/files/" + f.ID}, {"GET", "/v1/files/" + f.ID + "/content"}, {"DELETE", "/v1/files/" + f.ID},
	} {
		status, _, body := env.do(t, r.method, r.path, "sk-bob", "")
		require.Equal(t, 404, status, "%s %s: %s", r.method, r.path, body)
		status, _, _ = env.do(t, r.method, r.path, "", "")
		require.Equal(t, 401, status)
	}
	page, err := env.client("sk-bob").Files.List(t.Context(), oai.FileListParams{})
	require.NoError(t, err)
	require.Empty(t, page.Data)
	status, _, body := env.do(t, "GET", "/v1/files?after="+f.ID, "sk-bob", "")
	require.Equal(t, 400, status, string(body))
}
