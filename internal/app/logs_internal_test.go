package app

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// TestKeyLogs: each change of a key's state is one info line with its ID,
// upstream, source, scope and reason, a change heard from another replica a debug
// line; a failover is an info line when it rested its key, else debug.
func TestKeyLogs(t *testing.T) {
	until := time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)
	states := map[keypool.KeyID]keypool.KeyInfo{
		"kp_cooling": {ID: "kp_cooling", Scope: "acme", State: keypool.StateCooling},
		"kp_ready":   {ID: "kp_ready", Scope: "acme", State: keypool.StateReady, Source: "keys.txt:12"},
	}
	tests := []struct {
		name  string
		state *keypool.StateEvent
		try   *keypool.AttemptEvent
		want  string // "" for no line
	}{
		{"revoked", &keypool.StateEvent{Key: "kp_ready", Upstream: "main", From: keypool.StateReady, To: keypool.StateRevoked, Reason: "401 invalid_api_key"},
			nil, `level=INFO msg="key revoked: no traffic until its recheck finds it valid" key=kp_ready upstream=main source=keys.txt:12 scope=acme from=ready to=revoked reason="401 invalid_api_key"`},
		{"over quota", &keypool.StateEvent{Key: "kp_x", Upstream: "main", To: keypool.StateOverQuota, Reason: "429 insufficient_quota"},
			nil, `level=INFO msg="key over quota: no traffic until its recheck finds quota" key=kp_x upstream=main from=unchecked to=over_quota reason="429 insufficient_quota"`},
		{"cooling", &keypool.StateEvent{Key: "kp_x", Upstream: "main", From: keypool.StateReady, To: keypool.StateCooling, Reason: "429 requests", Model: "gpt-4o", Until: until},
			nil, `level=INFO msg="key cooling until 2026-12-02T10:30:00Z" key=kp_x upstream=main from=ready to=cooling reason="429 requests" model=gpt-4o until=2026-12-02T10:30:00.000Z`},
		{"recovered", &keypool.StateEvent{Key: "kp_x", Upstream: "main", From: keypool.StateRevoked, To: keypool.StateReady, Reason: "check"},
			nil, `level=INFO msg="key recovered" key=kp_x`},
		{"enabled", &keypool.StateEvent{Key: "kp_x", Upstream: "main", From: keypool.StateDisabled, To: keypool.StateUnchecked},
			nil, `level=INFO msg="key enabled" key=kp_x`},
		{"disabled", &keypool.StateEvent{Key: "kp_x", Upstream: "main", From: keypool.StateReady, To: keypool.StateDisabled, Reason: "by the operator"},
			nil, `level=INFO msg="key disabled" key=kp_x upstream=main from=ready to=disabled reason="by the operator"`},
		{"heard", &keypool.StateEvent{Key: "kp_x", Upstream: "main", From: keypool.StateReady, To: keypool.StateRevoked, Reason: "401", Heard: true},
			nil, `level=DEBUG msg="key revoked: no traffic until its recheck finds it valid" key=kp_x upstream=main from=ready to=revoked reason=401 heard=true`},
		{"rate limited", nil, &keypool.AttemptEvent{Key: "kp_ready", Upstream: "main", Model: "gpt-4o", Status: 429, Outcome: keypool.OutcomeRateLimited, Attempt: 1},
			`level=INFO msg="failing over: the key rests" key=kp_ready upstream=main model=gpt-4o status=429 outcome=rate_limited attempt=1`},
		{"server error that cooled", nil, &keypool.AttemptEvent{Key: "kp_cooling", Upstream: "main", Status: 500, Outcome: keypool.OutcomeServerError, Attempt: 2},
			`level=INFO msg="failing over: the key rests" key=kp_cooling`},
		{"server error", nil, &keypool.AttemptEvent{Key: "kp_ready", Upstream: "main", Outcome: keypool.OutcomeServerError, Attempt: 1, Err: errors.New("dial tcp: refused")},
			`level=DEBUG msg="failing over" key=kp_ready upstream=main model="" status=0 outcome=server_error attempt=1 err="dial tcp: refused"`},
		{"key rejected", nil, &keypool.AttemptEvent{Key: "kp_ready", Status: 401, Outcome: keypool.OutcomeKeyRejected, Attempt: 1},
			`level=DEBUG msg="failing over" key=kp_ready`},
		{"final", nil, &keypool.AttemptEvent{Key: "kp_ready", Status: 200, Final: true}, ""},
		{"client error", nil, &keypool.AttemptEvent{Key: "kp_ready", Status: 400, Outcome: keypool.OutcomeClientError, Final: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := &keyLogs{
				log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: dropTime})),
				key: func(id keypool.KeyID) (keypool.KeyInfo, bool) { ki, ok := states[id]; return ki, ok },
			}
			obs := l.observer()
			if tt.state != nil {
				obs.StateChange(*tt.state)
			}
			if tt.try != nil {
				obs.Attempt(*tt.try)
			}
			got := buf.String()
			if tt.want == "" && got != "" || tt.want != "" && (strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, tt.want)) {
				t.Errorf("logged\n%s\nwant one line starting\n%s", got, tt.want)
			}
		})
	}
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// TestNewLogger takes the levels and formats serve offers and refuses
// others with the values it takes.
func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if got := buf.String(); !strings.HasPrefix(got, `{"time":`) || !strings.Contains(got, `"msg":"shown"`) || strings.Contains(got, "hidden") {
		t.Errorf("logged %q", got)
	}
	for _, tt := range []struct{ level, format, want string }{
		{"loud", "text", `unknown log level "loud": use debug, info, warn, error`},
		{"info", "xml", `unknown log format "xml": use text or json`},
	} {
		if _, err := NewLogger(&buf, tt.level, tt.format); err == nil || err.Error() != tt.want {
			t.Errorf("%s/%s: %v", tt.level, tt.format, err)
		}
	}
}

// TestLogBuffer replays what was logged before the logger was known, as
// far as its level lets through, with the attributes given by With.
func TestLogBuffer(t *testing.T) {
	var b LogBuffer
	early := b.Logger().With("file", "c.yaml")
	early.Debug("too fine")
	early.Warn("config: unknown field", "line", 3)
	var buf bytes.Buffer
	b.Replay(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: dropTime})))
	if got, want := buf.String(), "level=WARN msg=\"config: unknown field\" line=3 file=c.yaml\n"; got != want {
		t.Errorf("replayed %q, want %q", got, want)
	}
	b.Replay(slog.New(slog.NewTextHandler(&buf, nil)))
	if strings.Count(buf.String(), "\n") != 1 {
		t.Errorf("replayed twice: %q", buf.String())
	}
}
