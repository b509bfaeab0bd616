package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// AuditEntry is one line of the audit log: an administrative action (tenant, key, policy and
// price changes). The log is append-only and hash-chained: Hash = SHA-256(PrevHash ||
// encoding of Seq, At, Actor, Action, Target, Detail), PrevHash the previous entry's Hash (32
// zero bytes for the first). Changing, removing or reordering any entry breaks the chain from
// there on, which VerifyAudit reports. (Truncating the newest entries is not detectable from the
// log alone: keep the latest hash elsewhere, e.g. in the operator's logs, to detect that.)
type AuditEntry struct {
	// Seq numbers entries from 1, without gaps.
	Seq int64
	// At has millisecond precision.
	At time.Time
	// Actor is who acted ("cli", an admin token's name); Action what ("tenant.create",
	// "key.revoke", ...); Target on what (a tenant name, a key id, a model); Detail a JSON
	// object with the new values. None holds a secret.
	Actor, Action, Target, Detail string
	PrevHash, Hash                []byte
}

// ErrAuditBroken is returned by VerifyAudit for a log whose chain does not verify.
var ErrAuditBroken = errors.New("store: audit log chain broken")

// auditHash is the chained hash of e (its Hash field ignored).
func auditHash(e *AuditEntry) []byte {
	h := sha256.New()
	h.Write(e.PrevHash)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(e.Seq))
	h.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(gwMillis(e.At)))
	h.Write(n[:])
	for _, f := range []string{e.Actor, e.Action, e.Target, e.Detail} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f))) // length-prefixed: no two field lists encode alike
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return h.Sum(nil)
}

// AppendAudit appends e to the audit log, setting its Seq, PrevHash and Hash. Appends are
// serialized (SQLite's write lock; a PostgreSQL advisory lock), so the chain never forks.
func (s *Store) AppendAudit(ctx context.Context, e *AuditEntry) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: audit: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(5357524154410002)`); err != nil {
			return fmt.Errorf("store: audit: %w", err)
		}
	}
	var seq int64
	prev := make([]byte, sha256.Size)
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: audit: %w", err)
	}
	e.Seq, e.PrevHash, e.At = seq+1, prev, e.At.UTC().Truncate(time.Millisecond)
	e.Hash = auditHash(e)
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		e.Seq, gwMillis(e.At), e.Actor, e.Action, e.Target, e.Detail, e.PrevHash, e.Hash); err != nil {
		return fmt.Errorf("store: audit: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: audit: %w", err)
	}
	return nil
}

// ListAudit returns the audit log in order.
func (s *Store) ListAudit(ctx context.Context) ([]AuditEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("store: audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("store: audit: %w", err)
		}
		e.At = gwFromMillis(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// VerifyAudit checks the whole chain: sequence numbers 1, 2, ... without gaps, each PrevHash the
// previous Hash, each Hash recomputed. It returns the number of entries verified and, for a
// broken chain, an error wrapping ErrAuditBroken that names the first bad entry.
func (s *Store) VerifyAudit(ctx context.Context) (int, error) {
	entries, err := s.ListAudit(ctx)
	if err != nil {
		return 0, err
	}
	prev := make([]byte, sha256.Size)
	for i := range entries {
		e := &entries[i]
		switch {
		case e.Seq != int64(i+1):
			return i, fmt.Errorf("%w: entry %d has sequence number %d", ErrAuditBroken, i+1, e.Seq)
		case !bytes.Equal(e.PrevHash, prev):
			return i, fmt.Errorf("%w: entry %d does not follow entry %d", ErrAuditBroken, e.Seq, e.Seq-1)
		case !bytes.Equal(e.Hash, auditHash(e)):
			return i, fmt.Errorf("%w: entry %d was altered", ErrAuditBroken, e.Seq)
		}
		prev = e.Hash
	}
	return len(entries), nil
}
