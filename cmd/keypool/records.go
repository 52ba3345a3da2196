package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
)

// recordsFlags are the flags of keypool records.
type recordsFlags struct {
	configFile, dbType, dbAddr string
	since, until               string
	by                         string
	limit                      int
	query                      records.Query
	json                       bool
	timeout                    time.Duration
}

func newRecordsCmd() *cobra.Command {
	var f recordsFlags
	cmd := &cobra.Command{
		Use:   "records",
		Short: "Show recent request records, or aggregates of them, from the records store",
		Long: `records reads the request records keypool serve keeps (one per client request)
from the store the config names (dbtype and dbaddr: SQLite by default, at
./db.sqlite, or PostgreSQL), and prints the newest ones, or with --by the
requests, errors, tokens and latencies grouped by key, model, status,
client, upstream, error or time window (minute, hour, day).

Records show keys and client tokens by their IDs (kp_…, ct_…), never the
secrets. --since and --until take a duration back from now (90m, 24h, 7d)
or an RFC 3339 time.`,
		Example: `  keypool records --since 1h
  keypool records --by key --since 24h
  keypool records --by hour --model gpt-4o --json
  keypool records --dbtype postgres --dbaddr "$DSN" --status 429`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRecords(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configFile, "config", "", "config `file` naming the store (default ./"+app.DefaultConfigFile+" when present)")
	enumFlag(cmd, &f.dbType, "dbtype", "store type (default the config's, else sqlite)", records.TypeSQLite, records.TypePostgres)
	fl.StringVar(&f.dbAddr, "dbaddr", "", "SQLite file or PostgreSQL DSN (default the config's, else ./db.sqlite)")
	fl.StringVar(&f.since, "since", "24h", "records from this long ago (a duration such as 90m or 7d) or this RFC 3339 time; \"\" for all")
	fl.StringVar(&f.until, "until", "", "records before this long ago, or this RFC 3339 time")
	enumFlag(cmd, &f.by, "by", "aggregate by", groupNames()...)
	fl.IntVar(&f.limit, "limit", 20, "records to show, newest first (at most 10000)")
	fl.StringVar(&f.query.Key, "key", "", "only this key `ID` (kp_…)")
	fl.StringVar(&f.query.Model, "model", "", "only this model")
	fl.StringVar(&f.query.Client, "client", "", "only this client token `ID` (ct_…)")
	fl.StringVar(&f.query.Upstream, "upstream", "", "only this upstream")
	fl.IntVar(&f.query.Status, "status", 0, "only this status")
	fl.BoolVar(&f.json, "json", false, "print JSON instead of a table")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up on the store after this long")
	return cmd
}

func groupNames() []string {
	names := make([]string, len(records.GroupBys))
	for i, g := range records.GroupBys {
		names[i] = string(g)
	}
	return names
}

func runRecords(ctx context.Context, out, errOut io.Writer, f *recordsFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if f.limit < 1 || f.limit > 10000 {
		return usageErrorf("--limit must be between 1 and 10000")
	}
	if f.timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	by := records.GroupBy(f.by) // one of records.GroupBys: the flag takes no other
	now := time.Now()
	var err error
	if f.query.Since, err = pointInTime(f.since, now); err != nil {
		return usageErrorf("--since: %w", err)
	}
	if f.query.Until, err = pointInTime(f.until, now); err != nil {
		return usageErrorf("--until: %w", err)
	}
	f.query.Limit = f.limit
	typ, addr, err := recordsStore(f)
	if err != nil {
		return err
	}
	store, err := records.Open(typ, secret.New(addr))
	if errors.Is(err, records.ErrNone) {
		return errors.New("records are off: the config says dbtype none")
	}
	if err != nil {
		return err
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var sources keySources
	if by == "" || by == records.ByKey {
		sources = recordSources(errOut, f.configFile)
	}
	if by != "" {
		groups, err := store.Aggregate(ctx, f.query, by)
		if err != nil {
			return err
		}
		if f.json && by == records.ByKey {
			return writeJSON(out, sources.groups(groups))
		}
		if f.json {
			return writeJSON(out, groups)
		}
		return groupsTable(out, by, groups, sources)
	}
	recs, err := store.Recent(ctx, f.query)
	if err != nil {
		return err
	}
	if f.json {
		return writeJSON(out, sources.records(recs))
	}
	return recordsTable(out, recs, sources)
}

// keySources maps key IDs to where the keys are written; nil knows none.
// Records keep key IDs only (no source column: a key's source is the
// config's to say, and changes when a file is edited), so records join it
// from the config at the time they are shown.
type keySources map[keypool.KeyID]string

// recordSources returns the sources of the keys that the config (or
// OPENAI_KEY) names now, or none, with a note on errOut, when they cannot
// be read: the records are shown all the same.
func recordSources(errOut io.Writer, configFile string) keySources {
	sources, err := app.KeySources(configFile)
	if err != nil {
		fmt.Fprintf(errOut, "note: key sources not shown: %v\n", err)
		return nil
	}
	return sources
}

// of returns the source of the key with ID id, "" when not known.
func (s keySources) of(id string) string { return s[keypool.KeyID(id)] }

// knowsAny reports whether a source is known for the key of one of items.
func knowsAny[T any](s keySources, items []T, key func(T) string) bool {
	return slices.ContainsFunc(items, func(it T) bool { return s.of(key(it)) != "" })
}

// sourcedRecord is a record in --json output, with its key's source.
type sourcedRecord struct {
	records.Record
	KeySource string `json:"key_source,omitempty"`
}

func (s keySources) records(recs []records.Record) []sourcedRecord {
	out := make([]sourcedRecord, len(recs))
	for i, r := range recs {
		out[i] = sourcedRecord{r, s.of(r.Key)}
	}
	return out
}

// sourcedGroup is a group by key in --json output, with the key's source.
type sourcedGroup struct {
	records.Group
	Source string `json:"source,omitempty"`
}

func (s keySources) groups(groups []records.Group) []sourcedGroup {
	out := make([]sourcedGroup, len(groups))
	for i, g := range groups {
		out[i] = sourcedGroup{g, s.of(g.Group)}
	}
	return out
}

// recordsStore returns the store the flags name: --dbtype and --dbaddr, else
// the config's, else SQLite at ./db.sqlite. A SQLite file that is not there
// is an error here (the store would make an empty one).
func recordsStore(f *recordsFlags) (typ, addr string, err error) {
	cfg := &config.Config{}
	if file := app.ConfigFile(f.configFile); file != "" && (f.dbType == "" || f.dbAddr == "") {
		// Only the database settings: the rest of the file (tokens
		// from variables this shell may not have) is serve's.
		if cfg, err = config.LoadSections(file, config.DatabaseSection); err != nil {
			return "", "", err
		}
	}
	app.SetStore(cfg, f.dbType, f.dbAddr)
	typ, addr = cfg.DBType, cfg.DBAddr.Reveal()
	if typ == "" {
		typ = records.TypeSQLite
	}
	if typ == records.TypeSQLite {
		if addr == "" {
			addr = records.DefaultSQLiteFile
		}
		if addr != ":memory:" {
			if _, err := os.Stat(addr); err != nil {
				return "", "", fmt.Errorf("no records at %s (keypool serve writes them there; pick another file with --dbaddr or --config): %w", records.RedactAddr(addr), errors.Unwrap(err))
			}
		}
	}
	return typ, addr, nil
}

// pointInTime reads "" (none), a duration back from now (with d for days),
// or an RFC 3339 time.
func pointInTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither a duration back from now (90m, 24h, 7d) nor an RFC 3339 time", s)
	}
	return now.Add(-d), nil
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// recordsTable writes recs as a table; a SOURCE column follows KEY when
// sources knows one of their keys.
func recordsTable(out io.Writer, recs []records.Record, sources keySources) error {
	withSource := knowsAny(sources, recs, func(r records.Record) string { return r.Key })
	source := func(string) string { return "" }
	head := "TIME\tCLIENT\tREQUEST\tMODEL\tUPSTREAM\tKEY\tSTATUS\tTRIES\tTTFB\tDURATION\tIN\tOUT\tERROR"
	if withSource {
		source = func(key string) string { return "\t" + dash(sources.of(key)) }
		head = strings.Replace(head, "\tKEY\t", "\tKEY\tSOURCE\t", 1)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, head)
	for _, r := range recs {
		model := r.Model
		if r.Stream {
			model += " (stream)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s%s\t%d\t%d\t%s\t%s\t%d\t%d\t%s\n",
			r.Time.Local().Format("2006-01-02 15:04:05"), dash(r.Client), r.Method, r.Path, dash(model), dash(r.Upstream),
			dash(r.Key), source(r.Key), r.Status, len(r.Attempts), short(r.TTFB), short(r.Duration), r.InputTokens, r.OutputTokens, dash(r.Error))
	}
	return endTable(out, tw, len(recs))
}

// groupsTable writes groups as a table; grouped by key, a SOURCE column
// follows KEY when sources knows one of the keys.
func groupsTable(out io.Writer, by records.GroupBy, groups []records.Group, sources keySources) error {
	withSource := by == records.ByKey && knowsAny(sources, groups, func(g records.Group) string { return g.Group })
	source := func(string) string { return "" }
	head := strings.ToUpper(string(by))
	if withSource {
		source = func(key string) string { return "\t" + dash(sources.of(key)) }
		head += "\tSOURCE"
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tREQUESTS\tERRORS\tIN\tOUT\tCACHED\tREASONING\tAVG TTFB\tAVG DURATION\n", head)
	for _, g := range groups {
		fmt.Fprintf(tw, "%s%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", dash(g.Group), source(g.Group), g.Requests, g.Errors,
			g.InputTokens, g.OutputTokens, g.CachedTokens, g.ReasoningTokens, short(g.AvgTTFB), short(g.AvgDuration))
	}
	return endTable(out, tw, len(groups))
}

// endTable writes the table out, and says so when it has no rows.
func endTable(out io.Writer, tw *tabwriter.Writer, rows int) error {
	if err := tw.Flush(); err != nil {
		return err
	}
	if rows == 0 {
		_, err := fmt.Fprintln(out, "(no records match)")
		return err
	}
	return nil
}

// short rounds a duration for a table: milliseconds below a minute.
func short(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
