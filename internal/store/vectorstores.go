package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// VectorStore is one vector store of the OpenAI Vector Stores API (internal/platform).
type VectorStore struct {
	// ID is the vector store id ("vs_...").
	ID string
	// Owner scopes the store, its files and chunks, as ResponseRecord.Owner does.
	Owner string
	// Name is the client's name for it ("" when none).
	Name string
	// CreatedAt is the creation time (millisecond precision).
	CreatedAt time.Time
	// Metadata is the JSON object of string pairs, opaque to the store.
	Metadata json.RawMessage
}

// VectorStoreFile is a file attached to a vector store, with the state of its ingestion.
type VectorStoreFile struct {
	VectorStoreID string
	FileID        string
	// Filename is the file's name when attached, returned with search results.
	Filename  string
	CreatedAt time.Time
	// Status is "in_progress", "completed", "cancelled" or "failed" (OpenAI's values).
	Status string
	// ErrorCode and ErrorMessage are last_error of a failed file ("" otherwise).
	ErrorCode, ErrorMessage string
	// UsageBytes is the size of the file's chunks' text, in bytes.
	UsageBytes int64
	// Attributes is the JSON object of attributes used by search filters, opaque to the store.
	Attributes json.RawMessage
}

// FileCounts counts a vector store's files by status.
type FileCounts struct {
	InProgress, Completed, Failed, Cancelled, Total int64
	// UsageBytes sums the files' UsageBytes.
	UsageBytes int64
}

// ChunkHit is one chunk found by SearchChunks.
type ChunkHit struct {
	VectorStoreID, FileID, Filename string
	Seq                             int64
	Text                            string
	// Score is the keyword relevance in (0, 1), higher is better: BM25 (SQLite FTS5) or
	// ts_rank (PostgreSQL) mapped by s/(1+s).
	Score float64
	// Attributes are the file's attributes.
	Attributes json.RawMessage
}

var _ = addMigrator((*Store).vectorSearchSchema)

// vectorSearchSchema creates the keyword index at Open: an FTS5 table in SQLite, a GIN expression
// index in PostgreSQL. Idempotent across processes (IF NOT EXISTS).
func (s *Store) vectorSearchSchema(ctx context.Context) error {
	stmt := `CREATE VIRTUAL TABLE IF NOT EXISTS vector_store_chunks_fts USING fts5(
		text, vector_store_id UNINDEXED, file_id UNINDEXED, seq UNINDEXED)`
	if s.dialect == Postgres {
		stmt = `CREATE INDEX IF NOT EXISTS vector_store_chunks_tsv ON vector_store_chunks
			USING GIN (to_tsvector('simple', text))`
	}
	if _, err := s.db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("store: vector search schema: %w", err)
	}
	return nil
}

// CreateVectorStore inserts v. Errors: ErrExists when the id is taken.
func (s *Store) CreateVectorStore(ctx context.Context, v *VectorStore) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO vector_stores (id, owner, name, created_at, metadata)
		VALUES (?, ?, ?, ?, ?)`), v.ID, v.Owner, v.Name, v.CreatedAt.UnixMilli(), string(v.Metadata))
	if isUniqueViolation(err) {
		return fmt.Errorf("store: vector store %s: %w", v.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store: create vector store: %w", err)
	}
	return nil
}

// GetVectorStore returns the vector store id owned by owner. Errors: ErrNotFound if it does
// not exist or belongs to another owner.
func (s *Store) GetVectorStore(ctx context.Context, owner, id string) (*VectorStore, error) {
	var (
		v       VectorStore
		created int64
		meta    string
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, owner, name, created_at, metadata FROM vector_stores
		WHERE id = ? AND owner = ?`), id, owner).Scan(&v.ID, &v.Owner, &v.Name, &created, &meta)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: vector store %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get vector store: %w", err)
	}
	v.CreatedAt, v.Metadata = time.UnixMilli(created).UTC(), json.RawMessage(meta)
	return &v, nil
}

// ListVectorStores returns owner's vector stores, newest first, at most limit.
func (s *Store) ListVectorStores(ctx context.Context, owner string, limit int) ([]VectorStore, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, owner, name, created_at, metadata FROM vector_stores
		WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?`), owner, max(limit, 1))
	if err != nil {
		return nil, fmt.Errorf("store: list vector stores: %w", err)
	}
	defer rows.Close()
	var out []VectorStore
	for rows.Next() {
		var (
			v       VectorStore
			created int64
			meta    string
		)
		if err := rows.Scan(&v.ID, &v.Owner, &v.Name, &created, &meta); err != nil {
			return nil, fmt.Errorf("store: list vector stores: %w", err)
		}
		v.CreatedAt, v.Metadata = time.UnixMilli(created).UTC(), json.RawMessage(meta)
		out = append(out, v)
	}
	return out, rows.Err()
}

// DeleteVectorStore deletes a vector store with its files and chunks (the uploaded files
// stay). Errors: ErrNotFound as GetVectorStore.
func (s *Store) DeleteVectorStore(ctx context.Context, owner, id string) error {
	return s.platformTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM vector_stores WHERE id = ? AND owner = ?`), id, owner)
		if err != nil {
			return fmt.Errorf("store: delete vector store: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("store: vector store %s: %w", id, ErrNotFound), err)
		}
		return s.deleteChunks(ctx, tx, id, "", true)
	})
}

// deleteChunks removes the chunks of one file (or, with all, of every file) of a vector store,
// and with all its file rows.
func (s *Store) deleteChunks(ctx context.Context, tx *sql.Tx, vs, file string, all bool) error {
	where, args := `vector_store_id = ? AND file_id = ?`, []any{vs, file}
	if all {
		where, args = `vector_store_id = ?`, []any{vs}
	}
	stmts := []string{`DELETE FROM vector_store_chunks WHERE ` + where, `DELETE FROM vector_store_files WHERE ` + where}
	if s.dialect == SQLite {
		stmts = append(stmts, `DELETE FROM vector_store_chunks_fts WHERE `+where)
	}
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, s.q(stmt), args...); err != nil {
			return fmt.Errorf("store: delete vector store chunks: %w", err)
		}
	}
	return nil
}

// PutVectorStoreFile attaches (or re-attaches, replacing) a file to a vector store owned by
// owner, with its chunks' texts in order, in one transaction. Errors: ErrNotFound when the
// vector store does not exist for owner.
func (s *Store) PutVectorStoreFile(ctx context.Context, owner string, f *VectorStoreFile, chunks []string) error {
	if _, err := s.GetVectorStore(ctx, owner, f.VectorStoreID); err != nil {
		return err
	}
	f.UsageBytes = 0
	for _, c := range chunks {
		f.UsageBytes += int64(len(c))
	}
	if len(f.Attributes) == 0 {
		f.Attributes = json.RawMessage(`{}`)
	}
	return s.platformTx(ctx, func(tx *sql.Tx) error {
		if err := s.deleteChunks(ctx, tx, f.VectorStoreID, f.FileID, false); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO vector_store_files (vector_store_id, file_id, filename,
			created_at, status, error_code, error_message, usage_bytes, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			f.VectorStoreID, f.FileID, f.Filename, f.CreatedAt.UnixMilli(), f.Status, f.ErrorCode, f.ErrorMessage,
			f.UsageBytes, string(f.Attributes)); err != nil {
			return fmt.Errorf("store: put vector store file: %w", err)
		}
		for i, c := range chunks {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO vector_store_chunks (vector_store_id, file_id, seq, text)
				VALUES (?, ?, ?, ?)`), f.VectorStoreID, f.FileID, i, c); err != nil {
				return fmt.Errorf("store: put chunk: %w", err)
			}
			if s.dialect == SQLite {
				if _, err := tx.ExecContext(ctx, `INSERT INTO vector_store_chunks_fts (text, vector_store_id, file_id, seq)
					VALUES (?, ?, ?, ?)`, c, f.VectorStoreID, f.FileID, i); err != nil {
					return fmt.Errorf("store: index chunk: %w", err)
				}
			}
		}
		return nil
	})
}

const vsFileColumns = `f.vector_store_id, f.file_id, f.filename, f.created_at, f.status, f.error_code, f.error_message,
	f.usage_bytes, f.attributes`

func scanVSFile(row interface{ Scan(...any) error }) (*VectorStoreFile, error) {
	var (
		f       VectorStoreFile
		created int64
		attrs   string
	)
	if err := row.Scan(&f.VectorStoreID, &f.FileID, &f.Filename, &created, &f.Status, &f.ErrorCode, &f.ErrorMessage,
		&f.UsageBytes, &attrs); err != nil {
		return nil, err
	}
	f.CreatedAt, f.Attributes = time.UnixMilli(created).UTC(), json.RawMessage(attrs)
	return &f, nil
}

// GetVectorStoreFile returns one attached file. Errors: ErrNotFound when the vector store
// does not exist for owner or the file is not attached to it.
func (s *Store) GetVectorStoreFile(ctx context.Context, owner, vs, file string) (*VectorStoreFile, error) {
	f, err := scanVSFile(s.db.QueryRowContext(ctx, s.q(`SELECT `+vsFileColumns+` FROM vector_store_files f
		JOIN vector_stores v ON v.id = f.vector_store_id WHERE v.id = ? AND v.owner = ? AND f.file_id = ?`), vs, owner, file))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: vector store file %s: %w", file, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get vector store file: %w", err)
	}
	return f, nil
}

// ListVectorStoreFiles returns the files of a vector store, oldest first. Errors: ErrNotFound
// as GetVectorStore.
func (s *Store) ListVectorStoreFiles(ctx context.Context, owner, vs string) ([]VectorStoreFile, error) {
	if _, err := s.GetVectorStore(ctx, owner, vs); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+vsFileColumns+` FROM vector_store_files f
		WHERE f.vector_store_id = ? ORDER BY f.created_at, f.file_id`), vs)
	if err != nil {
		return nil, fmt.Errorf("store: list vector store files: %w", err)
	}
	defer rows.Close()
	var out []VectorStoreFile
	for rows.Next() {
		f, err := scanVSFile(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list vector store files: %w", err)
		}
		out = append(out, *f)
	}
	return out, rows.Err()
}

// VectorStoreFileCounts counts the files of a vector store by status.
func (s *Store) VectorStoreFileCounts(ctx context.Context, vs string) (FileCounts, error) {
	var c FileCounts
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT status, COUNT(*), COALESCE(SUM(usage_bytes), 0)
		FROM vector_store_files WHERE vector_store_id = ? GROUP BY status`), vs)
	if err != nil {
		return c, fmt.Errorf("store: count vector store files: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			status  string
			n, used int64
		)
		if err := rows.Scan(&status, &n, &used); err != nil {
			return c, fmt.Errorf("store: count vector store files: %w", err)
		}
		switch status {
		case "in_progress":
			c.InProgress += n
		case "completed":
			c.Completed += n
		case "failed":
			c.Failed += n
		case "cancelled":
			c.Cancelled += n
		}
		c.Total += n
		c.UsageBytes += used
	}
	return c, rows.Err()
}

// DeleteVectorStoreFile detaches a file and drops its chunks (the uploaded file stays).
// Errors: ErrNotFound as GetVectorStoreFile.
func (s *Store) DeleteVectorStoreFile(ctx context.Context, owner, vs, file string) error {
	if _, err := s.GetVectorStoreFile(ctx, owner, vs, file); err != nil {
		return err
	}
	return s.platformTx(ctx, func(tx *sql.Tx) error { return s.deleteChunks(ctx, tx, vs, file, false) })
}

// KeywordTerms splits a search query into the terms keyword search matches: runs of letters
// and digits, lowercased, at most 32. Any query is safe: terms are quoted for FTS5 and
// tsquery by SearchChunks.
func KeywordTerms(query string) []string {
	fields := strings.FieldsFunc(strings.ToLower(query), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
	if len(fields) > 32 {
		fields = fields[:32]
	}
	return fields
}

// SearchChunks finds the chunks of the given vector stores (owned by owner; others are
// ignored) that match any term of query, best first, at most limit. A query without terms
// finds nothing.
func (s *Store) SearchChunks(ctx context.Context, owner string, vectorStores []string, query string, limit int) ([]ChunkHit, error) {
	terms := KeywordTerms(query)
	if len(terms) == 0 || len(vectorStores) == 0 {
		return nil, nil
	}
	marks := strings.TrimSuffix(strings.Repeat("?,", len(vectorStores)), ",")
	args := []any{}
	var stmt string
	if s.dialect == SQLite {
		quoted := make([]string, len(terms))
		for i, t := range terms {
			quoted[i] = `"` + t + `"` // terms are letters and digits only: no quote to escape
		}
		args = append(args, strings.Join(quoted, " OR "), owner)
		// FTS5 takes MATCH and bm25() on the table's own name, not an alias.
		stmt = `SELECT vector_store_chunks_fts.vector_store_id, vector_store_chunks_fts.file_id, f.filename,
				vector_store_chunks_fts.seq, vector_store_chunks_fts.text, -bm25(vector_store_chunks_fts) AS score, f.attributes
			FROM vector_store_chunks_fts
			JOIN vector_store_files f ON f.vector_store_id = vector_store_chunks_fts.vector_store_id
				AND f.file_id = vector_store_chunks_fts.file_id
			JOIN vector_stores v ON v.id = vector_store_chunks_fts.vector_store_id
			WHERE vector_store_chunks_fts MATCH ? AND v.owner = ? AND vector_store_chunks_fts.vector_store_id IN (` + marks + `)
			ORDER BY score DESC LIMIT ?`
	} else {
		args = append(args, strings.Join(terms, " | "), owner)
		stmt = `SELECT c.vector_store_id, c.file_id, f.filename, c.seq, c.text,
				ts_rank(to_tsvector('simple', c.text), q) AS score, f.attributes
			FROM vector_store_chunks c
			JOIN vector_store_files f ON f.vector_store_id = c.vector_store_id AND f.file_id = c.file_id
			JOIN vector_stores v ON v.id = c.vector_store_id,
			to_tsquery('simple', ?) q
			WHERE to_tsvector('simple', c.text) @@ q AND v.owner = ? AND c.vector_store_id IN (` + marks + `)
			ORDER BY score DESC LIMIT ?`
	}
	for _, v := range vectorStores {
		args = append(args, v)
	}
	args = append(args, max(limit, 1))
	rows, err := s.db.QueryContext(ctx, s.q(stmt), args...)
	if err != nil {
		return nil, fmt.Errorf("store: search chunks: %w", err)
	}
	defer rows.Close()
	var out []ChunkHit
	for rows.Next() {
		var (
			h     ChunkHit
			attrs string
		)
		if err := rows.Scan(&h.VectorStoreID, &h.FileID, &h.Filename, &h.Seq, &h.Text, &h.Score, &attrs); err != nil {
			return nil, fmt.Errorf("store: search chunks: %w", err)
		}
		h.Attributes = json.RawMessage(attrs)
		if h.Score < 0 {
			h.Score = 0
		}
		h.Score /= 1 + h.Score
		out = append(out, h)
	}
	return out, rows.Err()
}
