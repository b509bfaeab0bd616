package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// The usage ledger's group-commit write path and its export outbox (owner: the gateway's metering).
//
// WriteUsageBatch writes the records of many concurrent requests in one transaction, and with
// each newly stored record the CloudEvent that exports it, into usage_outbox: the record and its
// event are durable together or not at all (the transactional outbox pattern). The exporter
// (internal/gateway/export.go) delivers due events at least once and deletes them, or
// dead-letters an event after its last attempt.

// ErrLedgerKeyTaken is returned for a record whose request id and its re-keyed id are both held
// by other, different records (a SHA-256 prefix collision: not expected in practice).
var ErrLedgerKeyTaken = errors.New("store: usage ledger key taken by another record")

// UsageOutcome is what WriteUsageBatch did with one record.
type UsageOutcome struct {
	// StoredID is the ledger key the record is stored under: its RequestID, or, when a different
	// record already held that id (a client reusing X-Request-Id across requests), RequestID +
	// "~" + 16 hex digits of the SHA-256 of the record's content (UsageContentHash), so no
	// request's usage is ever dropped.
	StoredID string
	// Inserted is false when an identical record (same id, same content) was already stored: a
	// replay, nothing written.
	Inserted bool
	// Rekeyed says StoredID is the re-keyed id.
	Rekeyed bool
}

// UsageEventFunc builds the outbox payload of a record as stored (RequestID = its StoredID).
// nil, or a nil payload, writes no outbox row.
type UsageEventFunc func(*UsageRecord) ([]byte, error)

// WriteUsageBatch writes recs in one transaction, in order: each as an immutable ledger row keyed
// by its request id (see UsageOutcome for replays and re-keying), and for each row inserted the
// outbox event that event returns. It returns one outcome per record, or an error (and nothing
// written) when any statement fails. The caller's records are not modified.
func (s *Store) WriteUsageBatch(ctx context.Context, recs []*UsageRecord, event UsageEventFunc) ([]UsageOutcome, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: write usage: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	out := make([]UsageOutcome, len(recs))
	for i, r := range recs {
		o, err := s.writeUsageTx(ctx, tx, r)
		if err != nil {
			return nil, fmt.Errorf("store: write usage %s: %w", r.RequestID, err)
		}
		out[i] = o
		if !o.Inserted || event == nil {
			continue
		}
		stored := *r
		stored.RequestID = o.StoredID
		payload, err := event(&stored)
		if err != nil {
			return nil, fmt.Errorf("store: usage event %s: %w", o.StoredID, err)
		}
		if payload == nil {
			continue
		}
		now := gwMillis(r.CreatedAt)
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO usage_outbox (id, payload, created_at, attempts, next_attempt_at, last_error)
			VALUES (?, ?, ?, 0, ?, '') ON CONFLICT (id) DO NOTHING`), o.StoredID, payload, now, now); err != nil {
			return nil, fmt.Errorf("store: usage outbox %s: %w", o.StoredID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: write usage: commit: %w", err)
	}
	return out, nil
}

func (s *Store) writeUsageTx(ctx context.Context, tx *sql.Tx, r *UsageRecord) (UsageOutcome, error) {
	id := r.RequestID
	for attempt := 0; attempt < 2; attempt++ {
		ok, err := s.insertUsageTx(ctx, tx, r, id)
		if err != nil {
			return UsageOutcome{}, err
		}
		if ok {
			return UsageOutcome{StoredID: id, Inserted: true, Rekeyed: attempt > 0}, nil
		}
		held, err := s.usageTx(ctx, tx, id)
		if err != nil {
			return UsageOutcome{}, err
		}
		if UsageContentHash(held) == UsageContentHash(r) {
			return UsageOutcome{StoredID: id, Rekeyed: attempt > 0}, nil // a replay of a stored record
		}
		id = RekeyedUsageID(r)
	}
	return UsageOutcome{}, ErrLedgerKeyTaken
}

// ledgerStmts are the prepared statements of the metering hot path, per open Store: parsing the
// SQL was most of the cost of a usage write or lookup on SQLite (BenchmarkGatewayOverhead
// profile). Kept beside the Store rather than in it so this file stays self-contained; a closed
// Store's statements fail and are dropped with it.
var ledgerStmts sync.Map // *Store -> *ledgerStatements

type ledgerStatements struct {
	once          sync.Once
	err           error
	insert, exist *sql.Stmt
}

func (s *Store) ledgerStatements(ctx context.Context) (*ledgerStatements, error) {
	v, _ := ledgerStmts.LoadOrStore(s, &ledgerStatements{})
	ls := v.(*ledgerStatements)
	ls.once.Do(func() {
		if ls.insert, ls.err = s.db.PrepareContext(ctx, s.q(`INSERT INTO usage (`+usageColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING`)); ls.err != nil {
			return
		}
		ls.exist, ls.err = s.db.PrepareContext(ctx, s.q(`SELECT 1 FROM usage WHERE request_id = ?`))
	})
	if ls.err != nil {
		ledgerStmts.CompareAndDelete(s, ls) // retry the preparation next time
		return nil, ls.err
	}
	return ls, nil
}

func (s *Store) insertUsageTx(ctx context.Context, tx *sql.Tx, u *UsageRecord, id string) (bool, error) {
	stream := 0
	if u.Stream {
		stream = 1
	}
	ls, err := s.ledgerStatements(ctx)
	if err != nil {
		return false, err
	}
	res, err := tx.StmtContext(ctx, ls.insert).ExecContext(ctx,
		id, u.TenantID, u.KeyID, u.Model, u.Endpoint, u.GPU, u.PromptTokens, u.CachedTokens,
		u.CompletionTokens, u.TTFT.Milliseconds(), u.Duration.Milliseconds(), u.Status, stream, u.Source,
		gwMillis(u.CreatedAt), u.BilledReason, u.Adapter)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (s *Store) usageTx(ctx context.Context, tx *sql.Tx, id string) (*UsageRecord, error) {
	var u UsageRecord
	var ttft, dur, created, stream int64
	err := tx.QueryRowContext(ctx, s.q(`SELECT `+usageColumns+` FROM usage WHERE request_id = ?`), id).Scan(
		&u.RequestID, &u.TenantID, &u.KeyID, &u.Model, &u.Endpoint, &u.GPU, &u.PromptTokens,
		&u.CachedTokens, &u.CompletionTokens, &ttft, &dur, &u.Status, &stream, &u.Source, &created, &u.BilledReason, &u.Adapter)
	if err != nil {
		return nil, err
	}
	u.TTFT, u.Duration = time.Duration(ttft)*time.Millisecond, time.Duration(dur)*time.Millisecond
	u.Stream, u.CreatedAt = stream != 0, gwFromMillis(created)
	return &u, nil
}

// UsageContentHash is the SHA-256 of a record's content as stored (every field but RequestID;
// times at their stored millisecond precision), hex encoded: two records with the same hash
// are the same metered event.
func UsageContentHash(u *UsageRecord) string {
	h := sha256.New()
	var b [8]byte
	for _, s := range []string{u.TenantID, u.KeyID, u.Model, u.Adapter, u.Endpoint, u.GPU, u.Source, u.BilledReason} {
		binary.BigEndian.PutUint64(b[:], uint64(len(s)))
		h.Write(b[:])
		h.Write([]byte(s))
	}
	stream := int64(0)
	if u.Stream {
		stream = 1
	}
	for _, n := range []int64{u.PromptTokens, u.CachedTokens, u.CompletionTokens, u.TTFT.Milliseconds(),
		u.Duration.Milliseconds(), int64(u.Status), stream, gwMillis(u.CreatedAt)} {
		binary.BigEndian.PutUint64(b[:], uint64(n))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RekeyedUsageID is the ledger key of a record whose request id another record holds:
// RequestID + "~" + the first 16 hex digits of UsageContentHash. It is deterministic, so a
// replay of a re-keyed record finds it (the approach of LiteLLM PR #28396 for reused ids).
func RekeyedUsageID(u *UsageRecord) string {
	return u.RequestID + "~" + UsageContentHash(u)[:16]
}

// UsageExists reports whether a usage record is stored under requestID.
func (s *Store) UsageExists(ctx context.Context, requestID string) (bool, error) {
	ls, err := s.ledgerStatements(ctx)
	if err != nil {
		return false, fmt.Errorf("store: usage exists: %w", err)
	}
	var one int
	err = ls.exist.QueryRowContext(ctx, requestID).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: usage exists: %w", err)
	}
	return true, nil
}

// usageOutboxMigrations are the versioned migrations of component "gateway_export" (the usage
// export outbox), applied like the gateway's (one transaction per version with its
// schema_migrations row). Never edit a shipped version; append.
var usageOutboxMigrations = [][]string{
	// 1: usage_outbox holds the CloudEvents of stored usage records until they are delivered
	// (then deleted) or dead-lettered (dead_at set, kept for an operator).
	{
		`CREATE TABLE usage_outbox (
			id              TEXT PRIMARY KEY,
			payload         BLOB NOT NULL,
			created_at      BIGINT NOT NULL,
			attempts        BIGINT NOT NULL,
			next_attempt_at BIGINT NOT NULL,
			last_error      TEXT NOT NULL,
			dead_at         BIGINT
		)`,
		`CREATE INDEX usage_outbox_due ON usage_outbox (next_attempt_at)`,
	},
}

var _ = addMigrator((*Store).migrateUsageOutbox)

func (s *Store) migrateUsageOutbox(ctx context.Context) error {
	for i, stmts := range usageOutboxMigrations {
		if err := s.applyComponentMigration(ctx, "gateway_export", i+1, stmts); err != nil {
			return fmt.Errorf("store: gateway_export migration %d: %w", i+1, err)
		}
	}
	return nil
}

// applyComponentMigration applies one version of a component's migrations once, serialized
// across processes as MigrateGateway's are.
func (s *Store) applyComponentMigration(ctx context.Context, component string, version int, stmts []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(5357524154410002)`); err != nil {
			return err
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM schema_migrations WHERE component = ? AND version = ?`), component, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	for _, stmt := range stmts {
		if s.dialect == Postgres {
			stmt = strings.ReplaceAll(stmt, " BLOB", " BYTEA")
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)`),
		component, version, time.Now().UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

// UsageEvent is one outbox row: the exported CloudEvent of a stored usage record.
type UsageEvent struct {
	ID            string // the CloudEvent id: the record's stored request id
	Payload       []byte // the structured-mode CloudEvent JSON
	CreatedAt     time.Time
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
	DeadAt        time.Time // zero unless dead-lettered
}

const usageEventColumns = `id, payload, created_at, attempts, next_attempt_at, last_error, dead_at`

// DueUsageEvents returns up to limit events that are not dead-lettered and due at now (their
// next attempt time has come), oldest first.
func (s *Store) DueUsageEvents(ctx context.Context, now time.Time, limit int) ([]UsageEvent, error) {
	return s.queryUsageEvents(ctx, `SELECT `+usageEventColumns+` FROM usage_outbox
		WHERE dead_at IS NULL AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?`, gwMillis(now), limit)
}

// DeadUsageEvents returns up to limit dead-lettered events, oldest first.
func (s *Store) DeadUsageEvents(ctx context.Context, limit int) ([]UsageEvent, error) {
	return s.queryUsageEvents(ctx, `SELECT `+usageEventColumns+` FROM usage_outbox
		WHERE dead_at IS NOT NULL ORDER BY dead_at, id LIMIT ?`, limit)
}

// PendingUsageEvents counts the events not yet delivered nor dead-lettered.
func (s *Store) PendingUsageEvents(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM usage_outbox WHERE dead_at IS NULL`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: pending usage events: %w", err)
	}
	return n, nil
}

func (s *Store) queryUsageEvents(ctx context.Context, query string, args ...any) ([]UsageEvent, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: usage events: %w", err)
	}
	defer rows.Close()
	var out []UsageEvent
	for rows.Next() {
		var e UsageEvent
		var created, next int64
		var dead sql.NullInt64
		if err := rows.Scan(&e.ID, &e.Payload, &created, &e.Attempts, &next, &e.LastError, &dead); err != nil {
			return nil, fmt.Errorf("store: scan usage event: %w", err)
		}
		e.CreatedAt, e.NextAttemptAt = gwFromMillis(created), gwFromMillis(next)
		if dead.Valid {
			e.DeadAt = gwFromMillis(dead.Int64)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: usage events: %w", err)
	}
	return out, nil
}

// AckUsageEvents deletes delivered events.
func (s *Store) AckUsageEvents(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: ack usage events: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM usage_outbox WHERE id = ?`), id); err != nil {
			return fmt.Errorf("store: ack usage event %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: ack usage events: %w", err)
	}
	return nil
}

// FailUsageEvent records a failed delivery of event id: its attempt count and last error, and
// either its next attempt time or, when dead is true, its dead-letter time (it is then never
// due again).
func (s *Store) FailUsageEvent(ctx context.Context, id string, attempts int, lastErr string, next time.Time, dead bool) error {
	var deadAt any
	if dead {
		deadAt = gwMillis(next)
	}
	if len(lastErr) > 1024 {
		lastErr = lastErr[:1024]
	}
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE usage_outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, dead_at = ?
		WHERE id = ?`), attempts, lastErr, gwMillis(next), deadAt, id); err != nil {
		return fmt.Errorf("store: fail usage event %s: %w", id, err)
	}
	return nil
}
