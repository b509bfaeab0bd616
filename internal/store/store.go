// Package store is Strata's SQL persistence: SQLite (modernc.org/sqlite, pure Go, the embedded
// default) and PostgreSQL (pgx). Queries are written once with "?" placeholders and rebound for
// PostgreSQL; one test suite runs against both.
//
// Each concern keeps its schema and queries in its own file (schema_*.go registers DDL with
// addSchema), so the tenant plane and the platform do not edit the same code.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver

	"github.com/strata-inference/strata/internal/config"
)

// Sentinel errors of the store contract.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
)

// Dialect is the SQL dialect of an open store.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

// Store is an open database with its schema applied. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	dialect Dialect
}

// schemas holds, per concern, DDL statements written for both dialects ("?" placeholders are
// not used in DDL). Types: use TEXT, BIGINT, BLOB (rewritten to BYTEA for PostgreSQL).
var schemas [][]string

// addSchema registers DDL statements; called from package-level vars in schema_*.go files.
func addSchema(stmts ...string) int {
	schemas = append(schemas, stmts)
	return len(schemas)
}

// migrators run after the schemas, in registration order, each time a store is opened: versioned
// migrations of a concern (for example the tenant plane's). Each must be idempotent.
var migrators []func(*Store, context.Context) error

// addMigrator registers a migrator; called from package-level vars.
func addMigrator(m func(*Store, context.Context) error) int {
	migrators = append(migrators, m)
	return len(migrators)
}

// Open opens the database of cfg and applies the schema (idempotent: CREATE ... IF NOT EXISTS).
// For SQLite it creates the file's directory (0700) and turns on WAL and a busy timeout, so
// concurrent writers wait instead of failing with SQLITE_BUSY.
func Open(ctx context.Context, cfg config.Store) (*Store, error) {
	var s Store
	switch cfg.Driver {
	case "sqlite":
		if err := os.MkdirAll(filepath.Dir(cfg.DSN), 0o700); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		db, err := sql.Open("sqlite", "file:"+cfg.DSN+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate")
		if err != nil {
			return nil, fmt.Errorf("store: open sqlite: %w", err)
		}
		// database/sql keeps 2 idle connections by default: concurrent readers then open and
		// close connections constantly (each a file open plus pragmas), which stalls writers.
		db.SetMaxIdleConns(16)
		s = Store{db: db, dialect: SQLite}
	case "postgres":
		db, err := sql.Open("pgx", cfg.DSN)
		if err != nil {
			return nil, fmt.Errorf("store: open postgres: %w", err)
		}
		db.SetMaxOpenConns(20)
		s = Store{db: db, dialect: Postgres}
	default:
		return nil, fmt.Errorf("store: unknown driver %q", cfg.Driver)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return &s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Dialect returns the SQL dialect.
func (s *Store) Dialect() Dialect { return s.dialect }

func (s *Store) migrate(ctx context.Context) error {
	for _, stmts := range schemas {
		for _, stmt := range stmts {
			if s.dialect == Postgres {
				stmt = strings.ReplaceAll(stmt, " BLOB", " BYTEA")
			}
			if _, err := s.db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("store: migrate: %w", err)
			}
		}
	}
	for _, m := range migrators {
		if err := m(s, ctx); err != nil {
			return err
		}
	}
	return nil
}

// q rebinds a query written with "?" placeholders for the store's dialect.
func (s *Store) q(query string) string {
	if s.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// isUniqueViolation reports a UNIQUE / PRIMARY KEY conflict in either dialect.
func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "SQLSTATE 23505")
}
