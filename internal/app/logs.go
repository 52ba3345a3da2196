package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool"
)

// This file holds what serve logs of the keys at work: each change of a
// key's state, and each failover, by key ID (never the key), so that an
// operator who sees 503s can tell which key was revoked, went over quota or
// is cooling, and until when.

// Log levels and formats that --log-level, --log-format and the config's
// log_level and log_format accept.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"text", "json"}
)

// ParseLogLevel returns the slog level named by one of LogLevels, or an
// error listing them.
func ParseLogLevel(name string) (slog.Level, error) {
	switch strings.ToLower(name) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q: use %s", name, strings.Join(LogLevels, ", "))
}

// NewLogger returns a logger writing to w at level (one of LogLevels; ""
// is info) in format (one of LogFormats; "" is text): text is slog's
// key=value lines, json one JSON object per line for log shippers.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lv, err := ParseLogLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q: use %s", format, strings.Join(LogFormats, " or "))
}

// keyLogs is the observer that logs the keys at work. Key states change
// seldom (a key enters cooling once, not at every failure while it cools),
// so each change is an info line; a failover is an info line when the
// failed attempt rested its key (the operator's capacity shrank), and a
// debug line otherwise (the next key took the request; nothing to act on).
type keyLogs struct {
	log *slog.Logger
	// key looks a key up by ID for its scope and its state after a failed
	// attempt (keypool.Pool.Key); nil leaves the scope out and counts a
	// server error as resting its key only when the outcome says so.
	key func(keypool.KeyID) (keypool.KeyInfo, bool)
}

// observer returns l as a keypool.Observer.
func (l *keyLogs) observer() keypool.Observer {
	return keypool.ObserverFuncs{OnStateChange: l.stateChange, OnAttempt: l.attempt}
}

// stateChange logs one change of a key's state. A change heard from
// another replica is logged at debug: the replica that made it logs it at
// info, and N replicas must not tell of one revoked key N times.
func (l *keyLogs) stateChange(e keypool.StateEvent) {
	level := slog.LevelInfo
	if e.Heard {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs, slog.String("key", string(e.Key)), slog.String("upstream", e.Upstream))
	if l.key != nil {
		if info, ok := l.key(e.Key); ok {
			if info.Source != "" {
				attrs = append(attrs, slog.String("source", info.Source)) // where an operator finds the key
			}
			if info.Scope != "" {
				attrs = append(attrs, slog.String("scope", info.Scope))
			}
		}
	}
	attrs = append(attrs, slog.String("from", e.From.String()), slog.String("to", e.To.String()))
	if e.Reason != "" {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	if e.Model != "" {
		attrs = append(attrs, slog.String("model", e.Model))
	}
	if !e.Until.IsZero() {
		attrs = append(attrs, slog.Time("until", e.Until))
	}
	if e.Heard {
		attrs = append(attrs, slog.Bool("heard", true))
	}
	l.log.LogAttrs(ctx, level, stateMessage(e), attrs...)
}

// stateMessage says what a state change means for the operator.
func stateMessage(e keypool.StateEvent) string {
	switch e.To {
	case keypool.StateRevoked:
		return "key revoked: no traffic until its recheck finds it valid"
	case keypool.StateOverQuota:
		return "key over quota: no traffic until its recheck finds quota"
	case keypool.StateDisabled:
		return "key disabled"
	case keypool.StateCooling:
		return "key cooling until " + e.Until.UTC().Format(time.RFC3339)
	}
	switch e.From {
	case keypool.StateDisabled:
		return "key enabled"
	case keypool.StateRevoked, keypool.StateOverQuota, keypool.StateCooling:
		return "key recovered"
	}
	return "key " + e.To.String()
}

// attempt logs a failover: an attempt that failed and left the request to
// another key. The final attempt is the request's answer, which the access
// log tells of.
func (l *keyLogs) attempt(e keypool.AttemptEvent) {
	if e.Final || !e.Outcome.Retryable() {
		return
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	level, msg := slog.LevelDebug, "failing over"
	if l.rested(e) {
		level, msg = slog.LevelInfo, "failing over: the key rests"
	}
	if !l.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("key", string(e.Key)), slog.String("upstream", e.Upstream),
		slog.String("model", e.Model), slog.Int("status", e.Status),
		slog.String("outcome", e.Outcome.String()), slog.Int("attempt", e.Attempt),
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	l.log.LogAttrs(ctx, level, msg, attrs...)
}

// rested reports whether e's failure took its key out of rotation for a
// while: revoked, over quota and rate-limited always do; a server error
// does once the key has failed often enough to cool (the pool's failure
// threshold), which its state shows after the attempt.
func (l *keyLogs) rested(e keypool.AttemptEvent) bool {
	switch e.Outcome {
	case keypool.OutcomeRevoked, keypool.OutcomeOverQuota, keypool.OutcomeRateLimited:
		return true
	case keypool.OutcomeServerError:
		if l.key == nil {
			return false
		}
		info, ok := l.key(e.Key)
		return ok && info.State != keypool.StateReady && info.State != keypool.StateUnchecked
	}
	return false
}

// atLeast is a handler that passes on only records of min or above. The
// transport gets the app's logger through it: its one debug line is a
// failover, which keyLogs logs instead, with whether the key rests.
type atLeast struct {
	slog.Handler
	min slog.Level
}

func (h atLeast) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.min && h.Handler.Enabled(ctx, level)
}

func (h atLeast) WithAttrs(attrs []slog.Attr) slog.Handler {
	return atLeast{h.Handler.WithAttrs(attrs), h.min}
}

func (h atLeast) WithGroup(name string) slog.Handler {
	return atLeast{h.Handler.WithGroup(name), h.min}
}

// LogBuffer keeps log records until the logger they belong to is known:
// serve logs while it loads the config, and the config may set the level
// and format. Its zero value is ready to use; it is safe for simultaneous
// use by multiple goroutines.
type LogBuffer struct {
	mu   sync.Mutex
	recs []slog.Record
}

// Logger returns a logger whose records b keeps, at every level. Groups
// are flattened: Load and the config's warnings use none.
func (b *LogBuffer) Logger() *slog.Logger { return slog.New(bufferHandler{b: b}) }

// Replay hands the kept records to l, as far as l's level lets them
// through, and forgets them.
func (b *LogBuffer) Replay(l *slog.Logger) {
	b.mu.Lock()
	recs := b.recs
	b.recs = nil
	b.mu.Unlock()
	ctx := context.Background()
	h := l.Handler()
	for _, r := range recs {
		if h.Enabled(ctx, r.Level) {
			h.Handle(ctx, r)
		}
	}
}

type bufferHandler struct {
	b     *LogBuffer
	attrs []slog.Attr
}

func (h bufferHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h bufferHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.b.mu.Lock()
	h.b.recs = append(h.b.recs, r)
	h.b.mu.Unlock()
	return nil
}

func (h bufferHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return bufferHandler{b: h.b, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h bufferHandler) WithGroup(string) slog.Handler { return h }
