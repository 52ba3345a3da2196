package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/secret"
)

// Defaults of keys.
const (
	defaultServer   = "http://" + app.DefaultListen
	keysTimeout     = 30 * time.Second
	completeTimeout = 2 * time.Second // a shell waits on completion: better none than a hang
	maxKeysResponse = 64 << 20
)

// keysFlags are the flags keys and its commands share.
type keysFlags struct {
	server, adminToken string
	json               bool
}

func newKeysCmd() *cobra.Command {
	var f keysFlags
	cmd := &cobra.Command{
		Use:   "keys [ID]",
		Short: "Show, disable, enable or recheck the keys of a running keypool serve",
		Long: `keys asks a running keypool serve for the state of its keys, through its
admin API (GET /admin/keys), and prints them as a table: each key's scope (the
budget it spends), state and how long it has been in it, request and token
limits per minute (RPM, TPM) as its last check found them, the models it
serves, and when it was last used and checked. With an ID it shows that key
alone, with its limits per model (GET /admin/keys/ID). --json prints the
server's JSON instead. Keys are shown by ID only (kp_…).

The server is --server, else $KEYPOOL_SERVER, else ` + defaultServer + `.
The admin token is --admin-token, else $KEYPOOL_ADMIN_TOKEN; a server without
an admin_token answers on loopback only, and needs none.`,
		Example: `  keypool keys
  keypool keys kp_0746b34a640078cd
  keypool keys disable kp_0746b34a640078cd --reason "leaked in a log"
  keypool keys enable kp_0746b34a640078cd
  keypool keys recheck                        # every key
  KEYPOOL_ADMIN_TOKEN=… keypool keys --server http://proxy:8080 --json`,
		Args:              keyIDArgs(0, 1),
		ValidArgsFunction: completeKeyIDs(&f),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(cmd, &f)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				body, now, err := c.do(cmd.Context(), http.MethodGet, nil, "admin", "keys", args[0])
				if err != nil {
					return err
				}
				return c.print(cmd.OutOrStdout(), body, func(out io.Writer) error {
					var k keyRow
					if err := json.Unmarshal(body, &k); err != nil {
						return fmt.Errorf("keys: the server's answer is not a key: %w", err)
					}
					return printKey(out, k, now)
				})
			}
			body, now, err := c.do(cmd.Context(), http.MethodGet, nil, "admin", "keys")
			if err != nil {
				return err
			}
			return c.print(cmd.OutOrStdout(), body, func(out io.Writer) error {
				var keys []keyRow
				if err := json.Unmarshal(body, &keys); err != nil {
					return fmt.Errorf("keys: the server's answer is not a list of keys: %w", err)
				}
				return printKeys(out, keys, now)
			})
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", "", "base `URL` of the keypool serve (default $KEYPOOL_SERVER, else "+defaultServer+")")
	pf.StringVar(&f.adminToken, "admin-token", "", "the server's admin_token (default $KEYPOOL_ADMIN_TOKEN)")
	pf.BoolVar(&f.json, "json", false, "print the server's JSON instead of a table")
	cmd.AddCommand(newKeysDisableCmd(&f), newKeysEnableCmd(&f), newKeysRecheckCmd(&f))
	return cmd
}

func newKeysDisableCmd(f *keysFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "disable ID",
		Short: "Take a key out of selection until keys enable",
		Long: `disable takes the key ID out of selection: it serves no request until
keypool keys enable ID (POST /admin/keys/ID/disable). It prints the key's
new state.`,
		Example:           `  keypool keys disable kp_0746b34a640078cd --reason "leaked in a log"`,
		Args:              keyIDArgs(1, 1),
		ValidArgsFunction: completeKeyIDs(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := json.Marshal(map[string]string{"reason": reason})
			if err != nil {
				return err
			}
			return changeKey(cmd, f, body, args[0], "disable")
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown with the key's state (default \"by the admin API\")")
	return cmd
}

func newKeysEnableCmd(f *keysFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "enable ID",
		Short: "Return a disabled, revoked or over-quota key to selection",
		Long: `enable returns the key ID to selection, unchecked, so that its next answer
says what it is now (POST /admin/keys/ID/enable). It prints the key's new
state.`,
		Example:           `  keypool keys enable kp_0746b34a640078cd`,
		Args:              keyIDArgs(1, 1),
		ValidArgsFunction: completeKeyIDs(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return changeKey(cmd, f, nil, args[0], "enable")
		},
	}
}

func newKeysRecheckCmd(f *keysFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "recheck [ID]",
		Short: "Ask the checker to check one key, or every key, now",
		Long: `recheck asks the server's key checker to check the key ID now (POST
/admin/keys/ID/recheck), or without an ID every key but disabled ones (POST
/admin/keys/recheck). A check spends no quota. It does not wait for the
check: see keypool keys a moment later.`,
		Example: `  keypool keys recheck kp_0746b34a640078cd
  keypool keys recheck`,
		Args:              keyIDArgs(0, 1),
		ValidArgsFunction: completeKeyIDs(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(cmd, f)
			if err != nil {
				return err
			}
			path := []string{"admin", "keys", "recheck"}
			what := "every key"
			if len(args) == 1 {
				path = []string{"admin", "keys", args[0], "recheck"}
				what = args[0]
			}
			body, _, err := c.do(cmd.Context(), http.MethodPost, nil, path...)
			if err != nil {
				return err
			}
			return c.print(cmd.OutOrStdout(), body, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "recheck of %s scheduled\n", what)
				return err
			})
		},
	}
}

// changeKey posts body to /admin/keys/ID/action and prints the key's new
// state.
func changeKey(cmd *cobra.Command, f *keysFlags, body []byte, id, action string) error {
	c, err := newAdminClient(cmd, f)
	if err != nil {
		return err
	}
	answer, now, err := c.do(cmd.Context(), http.MethodPost, body, "admin", "keys", id, action)
	if err != nil {
		return err
	}
	return c.print(cmd.OutOrStdout(), answer, func(out io.Writer) error {
		var k keyRow
		if err := json.Unmarshal(answer, &k); err != nil {
			return fmt.Errorf("keys: the server's answer is not a key: %w", err)
		}
		return printKeys(out, []keyRow{k}, now)
	})
}

// completeKeyIDs offers the IDs of the server's keys, each with its state
// and upstream, as the one argument of a keys command: nothing when the
// server does not answer within completeTimeout.
func completeKeyIDs(f *keysFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := newAdminClient(cmd, f)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completeTimeout)
		defer cancel()
		body, _, err := c.do(ctx, http.MethodGet, nil, "admin", "keys")
		var keys []keyRow
		if err != nil || json.Unmarshal(body, &keys) != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		out := make([]cobra.Completion, 0, len(keys))
		for _, k := range keys {
			out = append(out, cobra.CompletionWithDesc(k.ID, k.State+", "+dash(k.Upstream)))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

var keyIDPattern = regexp.MustCompile(`^kp_[0-9a-f]{16}$`)

// keyIDArgs accepts between min and max arguments, each a key ID. An
// argument that is not one is not repeated: it may be a key pasted by
// mistake.
func keyIDArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		for i, a := range args {
			if keyIDPattern.MatchString(a) {
				continue
			}
			if s := cmd.SuggestionsFor(a); len(s) > 0 {
				return fmt.Errorf("argument %d is neither a key ID nor a command of %s; did you mean %s?", i+1, cmd.CommandPath(), strings.Join(s, " or "))
			}
			return fmt.Errorf("argument %d is not a key ID (kp_ and 16 hex digits, as keypool keys lists them)", i+1)
		}
		if len(args) < min || len(args) > max {
			want := "a key ID (kp_…)"
			if min == 0 {
				want = "at most one key ID (kp_…)"
			}
			return fmt.Errorf("%s takes %s, got %d arguments", cmd.CommandPath(), want, len(args))
		}
		return nil
	}
}

// adminClient calls the admin API of one keypool serve.
type adminClient struct {
	base  *url.URL
	shown string // base without credentials, for messages
	token string
	json  bool
}

// newAdminClient reads the server and token from the flags, else the
// environment. The environment is read here, not as flag defaults, so
// that --help never shows the token.
func newAdminClient(cmd *cobra.Command, f *keysFlags) (*adminClient, error) {
	server, token := f.server, f.adminToken
	if !cmd.Flags().Changed("server") {
		server = orDefault(os.Getenv("KEYPOOL_SERVER"), defaultServer)
	}
	if !cmd.Flags().Changed("admin-token") {
		token = os.Getenv("KEYPOOL_ADMIN_TOKEN")
	}
	u, err := url.Parse(strings.TrimSuffix(server, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usageErrorf("keys: --server must be an http:// or https:// URL")
	}
	return &adminClient{base: u, shown: secret.RedactURL(u), token: token, json: f.json}, nil
}

// do sends a request to the admin API at path and returns the body of a
// 200 or 202 answer, and the server's time by its Date header (else the
// local time), which ages are counted from. Its errors name the server
// without credentials and never hold the token.
func (c *adminClient) do(ctx context.Context, method string, body []byte, path ...string) ([]byte, time.Time, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base.JoinPath(path...).String(), bytes.NewReader(body))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("keys: %s: bad URL", c.shown)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its URL may carry credentials
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, time.Time{}, fmt.Errorf("keys: cannot reach keypool serve at %s: is it running? (%w); --server or KEYPOOL_SERVER names another", c.shown, err)
		}
		return nil, time.Time{}, fmt.Errorf("keys: %s: %w", c.shown, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysResponse))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("keys: %s: reading the answer: %w", c.shown, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return nil, time.Time{}, c.refused(resp, answer)
	}
	now, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		now = time.Now()
	}
	return answer, now, nil
}

// refused turns an answer other than 200 or 202 into an error, with the
// server's message and what to do about it.
func (c *adminClient) refused(resp *http.Response, body []byte) error {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		msg = ": " + e.Error.Message
	}
	hint := ""
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		hint = " (give the server's admin_token with --admin-token or KEYPOOL_ADMIN_TOKEN)"
	case http.StatusForbidden:
		hint = " (the server has no admin_token and answers on loopback only)"
	}
	return fmt.Errorf("keys: %s: %s%s%s", c.shown, resp.Status, msg, hint)
}

// print writes the server's answer as indented JSON with --json, else
// with table.
func (c *adminClient) print(out io.Writer, body []byte, table func(io.Writer) error) error {
	if !c.json {
		return table(out)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, body, "", "  "); err != nil {
		return fmt.Errorf("keys: the server's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := out.Write(buf.Bytes())
	return err
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// keyRow is what keys shows of a keypool.KeyInfo, as the admin API encodes
// it.
type keyRow struct {
	ID            string     `json:"id"`
	Source        string     `json:"source"` // where the key came from: keys.txt:12, OPENAI_KEY[3]
	Upstream      string     `json:"upstream"`
	Auth          string     `json:"auth"`
	Organization  string     `json:"organization"`
	Scope         string     `json:"scope"`
	Clone         bool       `json:"clone"`
	State         string     `json:"state"`
	Reason        string     `json:"reason"`
	Since         time.Time  `json:"since"`
	CoolingUntil  time.Time  `json:"cooling_until"`
	Trial         bool       `json:"trial"`
	Models        []string   `json:"models"`
	Lacks         []string   `json:"lacks"`
	NoStream      []string   `json:"no_stream"`
	LimitRequests int64      `json:"limit_requests"`
	LimitTokens   int64      `json:"limit_tokens"`
	LastChecked   time.Time  `json:"last_checked"`
	InFlight      int        `json:"in_flight"`
	LastUsed      time.Time  `json:"last_used"`
	Limits        []modelRow `json:"limits"`
}

// modelRow is one model's budget of a key's scope.
type modelRow struct {
	Model             string    `json:"model"`
	LimitRequests     int64     `json:"limit_requests"`
	RemainingRequests int64     `json:"remaining_requests"`
	LimitTokens       int64     `json:"limit_tokens"`
	RemainingTokens   int64     `json:"remaining_tokens"`
	InFlight          int       `json:"in_flight"`
	CoolingUntil      time.Time `json:"cooling_until"`
}

// printKeys writes keys as an aligned table, ages counted back from now.
func printKeys(w io.Writer, keys []keyRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tUPSTREAM\tSCOPE\tSTATE\tSINCE\tTRIAL\tRPM\tTPM\tMODELS\tIN FLIGHT\tLAST USED\tCHECKED\tREASON")
	for _, k := range keys {
		trial := "no"
		if k.Trial {
			trial = "yes"
		}
		models := "-" // not listed: any model is tried
		if len(k.Models) > 0 {
			models = strconv.Itoa(len(k.Models))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", k.ID, dash(k.Source), dash(k.Upstream), dash(k.Scope),
			k.State, ago(k.Since, now), trial, limit(k.LimitRequests), limit(k.LimitTokens), models, k.InFlight,
			ago(k.LastUsed, now), ago(k.LastChecked, now), dash(reason(k, now)))
	}
	return tw.Flush()
}

// reason is the key's reason, and when its cooldown ends.
func reason(k keyRow, now time.Time) string {
	r := k.Reason
	if k.CoolingUntil.After(now) {
		if r != "" {
			r += "; "
		}
		r += "cooling until " + ago(k.CoolingUntil, now)
	}
	return r
}

// printKey writes one key, field by field, and its budgets per model.
func printKey(w io.Writer, k keyRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	org := dash(k.Organization)
	if k.Clone {
		org += " (clone)"
	}
	trial := "no"
	if k.Trial {
		trial = "yes"
	}
	models := "any (not listed yet)"
	if len(k.Models) > 0 {
		models = fmt.Sprintf("%d: %s", len(k.Models), strings.Join(k.Models, ", "))
	}
	for _, f := range [][2]string{
		{"ID", k.ID},
		{"Source", dash(k.Source)},
		{"Upstream", dash(k.Upstream)},
		{"Organization", org},
		{"Scope", dash(k.Scope)},
		{"State", k.State + ", since " + ago(k.Since, now)},
		{"Reason", dash(reason(k, now))},
		{"Trial", trial},
		{"RPM, TPM", limit(k.LimitRequests) + ", " + limit(k.LimitTokens)},
		{"Models", models},
		{"Lacks", dash(strings.Join(k.Lacks, ", "))},
		{"No streaming", dash(strings.Join(k.NoStream, ", "))},
		{"In flight", strconv.Itoa(k.InFlight)},
		{"Last used", ago(k.LastUsed, now)},
		{"Last checked", ago(k.LastChecked, now)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(k.Limits) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nBudgets of its scope, per model:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tRPM\tLEFT\tTPM\tLEFT\tIN FLIGHT\tCOOLING UNTIL")
	for _, m := range k.Limits {
		cooling := "-"
		if m.CoolingUntil.After(now) {
			cooling = ago(m.CoolingUntil, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.Model, limit(m.LimitRequests), limit(m.RemainingRequests),
			limit(m.LimitTokens), limit(m.RemainingTokens), m.InFlight, cooling)
	}
	return tw.Flush()
}

// ago says how long before now t was ("3m ago"), or after it ("in 40s");
// "-" for a zero time (never).
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d > -time.Second && d < time.Second:
		// now may be the server's Date, to the second: a key used
		// within it is not "in 1s".
		return "just now"
	case d < 0:
		return "in " + roughly(-d)
	}
	return roughly(d) + " ago"
}

// roughly rounds d to its largest unit: 45s, 3m, 5h, 2d.
func roughly(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(max(d/time.Second, 1))) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
