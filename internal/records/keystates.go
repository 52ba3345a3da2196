package records

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
)

// Key states live in keypool_key_states, one row per key ID: the upstream
// (for whoever reads the table), the keypool.KeyState as JSON, and when
// that state was made (Updated, by the pool's clock), which decides whether
// a save replaces the row. A KeyState holds no secret, so neither does a
// row.

// SaveKeyStates upserts states in one transaction. Of two states of one key
// (in states, or one in states and the stored one) the later Updated wins;
// at equal times the one saved last. A state whose ID is not a key's
// ("kp_…") names no key and is left out.
func (s *store) SaveKeyStates(ctx context.Context, states []keypool.KeyState) error {
	states = latestByID(states)
	if len(states) == 0 {
		return nil
	}
	rows := make([][]any, 0, len(states))
	for i := range states {
		st := &states[i]
		data, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("records: key state %s: %w", st.ID, err)
		}
		rows = append(rows, []any{s.d.text(string(st.ID)), s.d.text(st.Upstream), s.d.text(string(data)),
			s.d.timeArg(st.Updated.UTC().Truncate(time.Microsecond))})
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	return s.fail("save key states", s.saveKeyStates(ctx, rows))
}

func (s *store) saveKeyStates(ctx context.Context, rows [][]any) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for chunk := range slices.Chunk(rows, s.d.rowsPerInsert) {
		args := make([]any, 0, 4*len(chunk))
		for _, r := range chunk {
			args = append(args, r...)
		}
		if _, err := tx.ExecContext(ctx, s.d.bind(upsertKeyStatesSQL(len(chunk))), args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// upsertKeyStatesSQL is the upsert of n key states, with ? placeholders.
// SQLite and PostgreSQL both speak it. The WHERE keeps a stored state that
// is newer than the one saved.
func upsertKeyStatesSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO keypool_key_states (key_id, upstream, state, updated) VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?)")
	}
	b.WriteString(` ON CONFLICT (key_id) DO UPDATE SET
	upstream = excluded.upstream, state = excluded.state, updated = excluded.updated
	WHERE keypool_key_states.updated <= excluded.updated`)
	return b.String()
}

// latestByID returns the states with a key's ID, one per ID (the latest Updated;
// at equal times the later in states), in ID order: PostgreSQL refuses an
// upsert that names one row twice, and writers that take rows in one order
// cannot deadlock each other. It does not change states.
func latestByID(states []keypool.KeyState) []keypool.KeyState {
	out := make([]keypool.KeyState, 0, len(states))
	for _, st := range states {
		if keystates.ValidID(string(st.ID)) {
			out = append(out, st)
		}
	}
	// Stable: of equal IDs and times, the later stays later.
	slices.SortStableFunc(out, func(a, b keypool.KeyState) int {
		return cmp.Or(strings.Compare(string(a.ID), string(b.ID)), a.Updated.Compare(b.Updated))
	})
	// Keep the last of each run of one ID.
	kept := out[:0]
	for i, st := range out {
		if i+1 < len(out) && out[i+1].ID == st.ID {
			continue
		}
		kept = append(kept, st)
	}
	return kept
}

func (s *store) LoadKeyStates(ctx context.Context) ([]keypool.KeyState, []error, error) {
	if err := s.ready(ctx); err != nil {
		return nil, nil, err
	}
	states, skipped, err := s.loadKeyStates(ctx)
	return states, skipped, s.fail("load key states", err)
}

func (s *store) loadKeyStates(ctx context.Context) ([]keypool.KeyState, []error, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key_id, state FROM keypool_key_states ORDER BY key_id`)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		states  []keypool.KeyState
		skipped []error
	)
	for rows.Next() {
		var id, data string
		if err := rows.Scan(&id, &data); err != nil {
			return nil, nil, err
		}
		st, err := decodeKeyState(id, []byte(data))
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		states = append(states, st)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	return states, skipped, nil
}

// decodeKeyState decodes the JSON of the key_states row of key id. It fails,
// with an error that names the row by its key ID (never by anything else the
// row holds, which might be another program's secret), when the row is not
// a key state this keypool knows: not JSON of a KeyState, an ID that is not
// a key's or not id, a state name it does not know (or cooling, which is
// never stored), or no Updated time.
func decodeKeyState(id string, data []byte) (keypool.KeyState, error) {
	name := "a row whose key_id is not a key ID"
	if keystates.ValidID(id) {
		name = "key state " + id
	}
	bad := func(why string, args ...any) (keypool.KeyState, error) {
		return keypool.KeyState{}, fmt.Errorf("records: %s: %s", name, fmt.Sprintf(why, args...))
	}
	if !keystates.ValidID(id) {
		return bad("skipped")
	}
	var stored keystates.Stored
	if err := json.Unmarshal(data, &stored); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return bad("not JSON (at byte %d)", syntax.Offset)
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return bad("%s: want %s", strings.TrimPrefix(typ.Field, "KeyState."), typ.Type)
		}
		if errors.As(err, &typ) {
			return bad("not a JSON object")
		}
		return bad("does not decode")
	}
	if string(stored.ID) != id {
		return bad("holds the state of another ID")
	}
	st, err := stored.Check()
	if err != nil {
		return keypool.KeyState{}, fmt.Errorf("records: %s: %w", name, err)
	}
	return st, nil
}
