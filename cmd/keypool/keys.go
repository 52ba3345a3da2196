package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
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
	maxKeysResponse = 64 << 20
)

func newKeysCmd() *cobra.Command {
	var (
		serverURL, adminToken string
		asJSON                bool
	)
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Show the pool state of a running keypool serve",
		Long: `keys asks a running keypool serve for the state of its keys, through its
admin API (GET /admin/keys), and prints them as a table, or as JSON with --json.
Keys are shown by ID only.

The server is --server, else $KEYPOOL_SERVER, else ` + defaultServer + `.
The admin token is --admin-token, else $KEYPOOL_ADMIN_TOKEN; a server without
an admin_token answers on loopback only, and needs none.`,
		Example: `  keypool keys
  KEYPOOL_ADMIN_TOKEN=… keypool keys --server http://proxy:8080 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The environment is read here, not as flag defaults, so that
			// --help never shows the token.
			if !cmd.Flags().Changed("server") {
				serverURL = orDefault(os.Getenv("KEYPOOL_SERVER"), defaultServer)
			}
			if !cmd.Flags().Changed("admin-token") {
				adminToken = os.Getenv("KEYPOOL_ADMIN_TOKEN")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			body, err := fetchKeys(ctx, serverURL, adminToken)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				var buf bytes.Buffer
				if err := json.Indent(&buf, body, "", "  "); err != nil {
					return fmt.Errorf("keys: the server's answer is not JSON: %w", err)
				}
				buf.WriteByte('\n')
				_, err := out.Write(buf.Bytes())
				return err
			}
			var keys []keyRow
			if err := json.Unmarshal(body, &keys); err != nil {
				return fmt.Errorf("keys: the server's answer is not a list of keys: %w", err)
			}
			return printKeys(out, keys)
		},
	}
	f := cmd.Flags()
	f.StringVar(&serverURL, "server", "", "base `URL` of the keypool serve (default $KEYPOOL_SERVER, else "+defaultServer+")")
	f.StringVar(&adminToken, "admin-token", "", "the server's admin_token (default $KEYPOOL_ADMIN_TOKEN)")
	f.BoolVar(&asJSON, "json", false, "print the server's JSON instead of a table")
	return cmd
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// keyRow is what the table shows of a keypool.KeyInfo, as the admin API
// encodes it.
type keyRow struct {
	ID           string `json:"id"`
	Source       string `json:"source"`
	Upstream     string `json:"upstream"`
	Organization string `json:"organization"`
	Scope        string `json:"scope"`
	State        string `json:"state"`
	Reason       string `json:"reason"`
	Trial        bool   `json:"trial"`
	InFlight     int    `json:"in_flight"`
	LastUsed     string `json:"last_used"`
}

// fetchKeys returns the body of GET serverURL/admin/keys. Its errors name the
// server without credentials and never hold the token.
func fetchKeys(ctx context.Context, serverURL, token string) ([]byte, error) {
	u, err := url.Parse(strings.TrimSuffix(serverURL, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("keys: --server must be an http:// or https:// URL")
	}
	shown := secret.RedactURL(u)
	u = u.JoinPath("admin", "keys")
	ctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: bad URL", shown)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its URL may carry credentials
		}
		return nil, fmt.Errorf("keys: %s: %w", shown, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysResponse))
	if err != nil {
		return nil, fmt.Errorf("keys: %s: reading the answer: %w", shown, err)
	}
	if resp.StatusCode != http.StatusOK {
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
		return nil, fmt.Errorf("keys: %s: %s%s%s", shown, resp.Status, msg, hint)
	}
	return body, nil
}

// printKeys writes keys as an aligned table.
func printKeys(w io.Writer, keys []keyRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tUPSTREAM\tORG\tSCOPE\tSTATE\tTRIAL\tIN FLIGHT\tLAST USED\tREASON")
	for _, k := range keys {
		trial := ""
		if k.Trial {
			trial = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, dash(k.Source), dash(k.Upstream), dash(k.Organization), dash(k.Scope),
			k.State, dash(trial), strconv.Itoa(k.InFlight), dash(k.LastUsed), dash(k.Reason))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
