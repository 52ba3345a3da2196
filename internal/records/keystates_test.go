package records

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
)

// Key IDs of the tests: the form of a keypool.KeyID.
const (
	idA keypool.KeyID = "kp_00000000000000aa"
	idB keypool.KeyID = "kp_00000000000000bb"
	idC keypool.KeyID = "kp_00000000000000cc"
)

// ks is a key state of id in state, made at updated.
func ks(id keypool.KeyID, state keypool.State, updated time.Time) keypool.KeyState {
	return keypool.KeyState{ID: id, Upstream: "openai", State: state, Updated: updated}
}

// full is a key state with every field set.
func full(id keypool.KeyID) keypool.KeyState {
	return keypool.KeyState{
		ID: id, Upstream: "openai", State: keypool.StateOverQuota, Reason: "insufficient_quota",
		Since: at("2026-11-22T01:00:00Z"), Checked: at("2026-11-22T00:59:00Z"),
		Trial: true, Organization: "org-acme", Scope: "acme/proj_1",
		Models: []string{"gpt-4o", "gpt-4o-mini"}, NoStream: []string{"o3"},
		Cooldown: at("2026-11-22T01:05:00Z"), Clones: []string{"org-other"}, OrgsKnown: true,
		Updated: time.Date(2026, 11, 22, 1, 0, 0, 123456789, time.FixedZone("UTC+1", 3600)),
	}
}

// jsonOf is the JSON of v: states compare by it, as times with other
// locations or monotonic readings are the same time.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func saveStates(t *testing.T, st Store, states ...keypool.KeyState) {
	t.Helper()
	if err := st.SaveKeyStates(t.Context(), states); err != nil {
		t.Fatalf("SaveKeyStates: %v", err)
	}
}

func loadStates(t *testing.T, st Store) []keypool.KeyState {
	t.Helper()
	states, skipped, err := st.LoadKeyStates(t.Context())
	if err != nil {
		t.Fatalf("LoadKeyStates: %v", err)
	}
	if len(skipped) > 0 {
		t.Fatalf("LoadKeyStates skipped %v", skipped)
	}
	return states
}

// stateOf returns the loaded state of id, as "state@updated".
func stateOf(t *testing.T, st Store, id keypool.KeyID) string {
	t.Helper()
	for _, s := range loadStates(t, st) {
		if s.ID == id {
			return s.State.String() + "@" + s.Updated.UTC().Format("15:04:05.000000")
		}
	}
	return "none"
}

func TestKeyStates(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testKeyStates(t, b) })
	}
}

// testKeyStates is the key-state suite every backend passes.
func testKeyStates(t *testing.T, b backend) {
	t0 := at("2026-11-22T00:00:00Z")
	t1, t2, t3 := t0.Add(time.Second), t0.Add(2*time.Second), t0.Add(3*time.Second)

	t.Run("round trip", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		if got := loadStates(t, st); len(got) != 0 {
			t.Fatalf("a new store holds %d states", len(got))
		}
		want := []keypool.KeyState{full(idA), ks(idB, keypool.StateRevoked, t1)}
		saveStates(t, st, want[1], want[0]) // stored by ID, whatever the order given
		if got := loadStates(t, st); jsonOf(t, got) != jsonOf(t, want) {
			t.Fatalf("loaded\n%s\nwant\n%s", jsonOf(t, got), jsonOf(t, want))
		}
	})

	t.Run("the later state wins", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		saveStates(t, st, ks(idA, keypool.StateRevoked, t2))
		for _, tt := range []struct {
			name string
			save []keypool.KeyState
			want string
		}{
			{"older", []keypool.KeyState{ks(idA, keypool.StateReady, t1)}, "revoked@00:00:02.000000"},
			{"same time, saved later", []keypool.KeyState{ks(idA, keypool.StateOverQuota, t2)}, "over_quota@00:00:02.000000"},
			{"newer", []keypool.KeyState{ks(idA, keypool.StateReady, t3)}, "ready@00:00:03.000000"},
			{"a batch naming the key twice, newest first",
				[]keypool.KeyState{ks(idA, keypool.StateDisabled, t3.Add(2*time.Microsecond)), ks(idA, keypool.StateRevoked, t3.Add(time.Microsecond))},
				"disabled@00:00:03.000002"},
			{"older, by a microsecond", []keypool.KeyState{ks(idA, keypool.StateReady, t3.Add(time.Microsecond))}, "disabled@00:00:03.000002"},
		} {
			saveStates(t, st, tt.save...)
			if got := stateOf(t, st, idA); got != tt.want {
				t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
			}
		}
	})

	t.Run("many, across statements", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		n := 2*st.(*store).d.rowsPerInsert + 3
		var states []keypool.KeyState
		for i := range n {
			states = append(states, ks(keypool.KeyID(fmt.Sprintf("kp_%016x", i)), keypool.StateReady, t1))
		}
		saveStates(t, st, states...)
		states[n-1].State = keypool.StateRevoked
		states[n-1].Updated = t2
		saveStates(t, st, states...) // all again: one row each, the newer kept
		got := loadStates(t, st)
		if len(got) != n || got[n-1].State != keypool.StateRevoked || got[0].State != keypool.StateReady {
			t.Fatalf("%d states loaded (want %d), last %v", len(got), n, got[len(got)-1].State)
		}
	})

	t.Run("not a key's ID", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		saveStates(t, st, ks("", keypool.StateRevoked, t1), ks("sk-not-an-id", keypool.StateRevoked, t1), ks(idA, keypool.StateRevoked, t1))
		if got := loadStates(t, st); len(got) != 1 || got[0].ID != idA {
			t.Fatalf("loaded %s, want only %s", jsonOf(t, got), idA)
		}
	})

	t.Run("text a column cannot hold", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		s := ks(idA, keypool.StateRevoked, t1)
		s.Upstream, s.Reason = "up\x00stream\xff", "nul \x00 here"
		saveStates(t, st, s)
		got := loadStates(t, st)
		if len(got) != 1 || got[0].Reason != s.Reason {
			t.Fatalf("loaded %s", jsonOf(t, got))
		}
	})

	t.Run("rows that do not decode are skipped", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		saveStates(t, st, ks(idA, keypool.StateRevoked, t1)) // creates the table
		const secret = "sk-proj-AnotherProgramsSecret0123456789"
		good := jsonOf(t, ks(idB, keypool.StateOverQuota, t1))
		for _, row := range []struct{ id, state string }{
			{string(idB), good},
			{secret, `{"id":"` + secret + `","state":"revoked","updated":"2026-11-22T00:00:00Z"}`},
			{"kp_00000000000000c1", `not json ` + secret},
			{"kp_00000000000000c2", `{"id":"kp_00000000000000c2","state":"` + secret + `","updated":"2026-11-22T00:00:00Z"}`},
			{"kp_00000000000000c3", `{"id":"kp_00000000000000c3","state":"cooling","updated":"2026-11-22T00:00:00Z"}`},
			{"kp_00000000000000c4", `{"id":"kp_00000000000000c4","state":"revoked"}`},
			{"kp_00000000000000c5", `{"id":"kp_00000000000000c4","state":"revoked","updated":"2026-11-22T00:00:00Z"}`},
			{"kp_00000000000000c6", `{"id":"kp_00000000000000c6","state":"revoked","updated":"` + secret + `"}`},
			{"kp_00000000000000c7", `{"id":"kp_00000000000000c7","state":"revoked","models":"` + secret + `","updated":"2026-11-22T00:00:00Z"}`},
			{"kp_00000000000000c8", `{"id":"kp_00000000000000c8","state":3,"updated":"2026-11-22T00:00:00Z"}`},
			{"kp_00000000000000c9", `null`},
			{"kp_00000000000000ca", `[]`},
			{"kp_00000000000000cb", ``},
		} {
			s := st.(*store)
			if _, err := s.db.ExecContext(t.Context(), s.d.bind(`INSERT INTO keypool_key_states (key_id, upstream, state, updated) VALUES (?, 'x', ?, ?)`),
				row.id, row.state, s.d.timeArg(t1)); err != nil {
				t.Fatal(err)
			}
		}
		states, skipped, err := st.LoadKeyStates(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ids := jsonOf(t, idsOf(states)); ids != `["kp_00000000000000aa","kp_00000000000000bb"]` {
			t.Errorf("loaded %s, want aa and bb", ids)
		}
		if len(skipped) != 12 {
			t.Errorf("%d rows skipped, want 12: %v", len(skipped), skipped)
		}
		for _, err := range skipped {
			if msg := err.Error(); strings.Contains(msg, "AnotherProgramsSecret") || !strings.HasPrefix(msg, "records: ") {
				t.Errorf("skipped row's error: %s", msg)
			}
		}
	})
}

func idsOf(states []keypool.KeyState) []keypool.KeyID {
	var ids []keypool.KeyID
	for _, s := range states {
		ids = append(ids, s.ID)
	}
	return ids
}

// TestKeyStatesUpgradeInPlace: a database made by the keypool before key
// states (schema version 1, with records in it) gains the key-state table
// on first use, keeps its records, and takes key states.
func TestKeyStatesUpgradeInPlace(t *testing.T) {
	for _, b := range backends {
		if !b.shared {
			continue // a second Open of :memory: is another database
		}
		t.Run(b.name, func(t *testing.T) {
			addr := b.newAddr(t)
			old := b.open(t, addr).(*store)
			createVersion1(t, old)
			if _, err := old.db.ExecContext(t.Context(), old.d.bind(`INSERT INTO keypool_requests (time, path, status) VALUES (?, '/v1/old', 200)`),
				old.d.timeArg(at("2026-11-21T00:00:00Z"))); err != nil {
				t.Fatal(err)
			}
			old.Close()

			st := b.open(t, addr)
			if got := loadStates(t, st); len(got) != 0 { // the first use: migrates
				t.Fatalf("%d states in an upgraded database", len(got))
			}
			checkSchema(t, st)
			saveStates(t, st, ks(idA, keypool.StateRevoked, at("2026-11-22T00:00:00Z")))
			insert(t, st, Record{Time: at("2026-11-22T00:00:00Z"), Path: "/v1/new"})
			if got := paths(t, st, Query{}); got != "/v1/new /v1/old" {
				t.Errorf("records after the upgrade: %q, want /v1/new /v1/old", got)
			}
			if got := stateOf(t, b.open(t, addr), idA); got != "revoked@00:00:00.000000" {
				t.Errorf("key state seen by another Open: %s", got)
			}
		})
	}
}

// createVersion1 makes s's database as the keypool before key states did:
// the first migration, which is never changed once shipped, and version 1.
func createVersion1(t *testing.T, s *store) {
	t.Helper()
	ctx := t.Context()
	stmts := append([]string{`CREATE TABLE keypool_schema (version INTEGER PRIMARY KEY)`}, migrations[0](s.d)...)
	stmts = append(stmts, `INSERT INTO keypool_schema (version) VALUES (1)`)
	for _, q := range stmts {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("version 1 schema: %v", err)
		}
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM keypool_key_states`).Scan(&n)
	if err == nil {
		t.Fatal("the version 1 schema has keypool_key_states")
	}
}

// TestKeyStateHoldsNoSecret: a KeyState, as stored, holds only fields that
// cannot carry a key: IDs, names, states, times and model names. A field
// added to keypool.KeyState fails this test until someone has looked at it.
func TestKeyStateHoldsNoSecret(t *testing.T) {
	allowed := map[string]reflect.Type{
		"ID": reflect.TypeFor[keypool.KeyID](), "Upstream": reflect.TypeFor[string](),
		"State": reflect.TypeFor[keypool.State](), "Reason": reflect.TypeFor[string](),
		"Since": reflect.TypeFor[time.Time](), "Checked": reflect.TypeFor[time.Time](),
		"Trial": reflect.TypeFor[bool](), "Organization": reflect.TypeFor[string](), "Scope": reflect.TypeFor[string](),
		"Models": reflect.TypeFor[[]string](), "NoStream": reflect.TypeFor[[]string](),
		"Cooldown": reflect.TypeFor[time.Time](), "Clones": reflect.TypeFor[[]string](),
		"OrgsKnown": reflect.TypeFor[bool](), "Updated": reflect.TypeFor[time.Time](),
		"ProbeRequests": reflect.TypeFor[int64](), "ProbeTokens": reflect.TypeFor[int64](),
	}
	typ := reflect.TypeFor[keypool.KeyState]()
	for f := range typ.Fields() {
		if want, ok := allowed[f.Name]; !ok || f.Type != want {
			t.Errorf("keypool.KeyState.%s (%v) is new to the records store: check that it can hold no secret, then add it here", f.Name, f.Type)
		}
	}
	b := backends[1]
	st := b.open(t, b.newAddr(t))
	saveStates(t, st, full(idA))
	var row string
	s := st.(*store)
	if err := s.db.QueryRowContext(t.Context(), `SELECT state FROM keypool_key_states`).Scan(&row); err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(row), &fields); err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	const want = "checked clones cooldown id models no_stream organization orgs_known reason scope since state trial updated upstream"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("a stored state holds %s, want %s", got, want)
	}
}

func TestDecodeKeyState(t *testing.T) {
	good := full(idA)
	data, _ := json.Marshal(good)
	got, err := decodeKeyState(string(idA), data)
	if err != nil || jsonOf(t, got) != string(data) {
		t.Fatalf("decodeKeyState = %s, %v", jsonOf(t, got), err)
	}
	// The state names are checked by keystates.Stored.Check, and tested
	// there.
}

// FuzzDecodeKeyState: whatever a row holds, decoding returns a state or an
// error, never panics, and a state it returns is one of the row's key, in
// a state that may be stored, that encodes and decodes to itself.
func FuzzDecodeKeyState(f *testing.F) {
	for _, s := range []keypool.KeyState{full(idA), ks(idA, keypool.StateRevoked, at("2026-11-22T00:00:00Z"))} {
		b, _ := json.Marshal(s)
		f.Add(string(idA), string(b))
	}
	f.Add(string(idA), `{"id":"kp_00000000000000aa","state":"cooling","updated":"2026-11-22T00:00:00Z"}`)
	f.Add("sk-x", `null`)
	f.Add(string(idA), `{"id":"kp_00000000000000aa","state":"revoked","updated":"2026-11-22T00:00:00Z","models":[1]}`)
	f.Fuzz(func(t *testing.T, id, data string) {
		st, err := decodeKeyState(id, []byte(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "records: ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		if string(st.ID) != id || !keystates.ValidID(id) || st.State == keypool.StateCooling || st.Updated.IsZero() {
			t.Fatalf("decoded %+v from row %q", st, id)
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeKeyState(id, again)
		if err != nil || jsonOf(t, back) != string(again) {
			t.Fatalf("re-decoding %s: %s, %v", again, jsonOf(t, back), err)
		}
	})
}
