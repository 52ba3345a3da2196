package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/keypool/keypool"
)

// runCheck checks every key of ups once, shows progress on errOut and the
// results on out, and fails when no key ended up usable.
func runCheck(ctx context.Context, out, errOut io.Writer, ups []keypool.Upstream, opts []keypool.CheckOption, jsonOut bool) error {
	t, err := keypool.New(keypool.WithUpstreams(ups...))
	if err != nil {
		return err
	}
	prog := newProgress(errOut, func() int { return checkable(t.Snapshot()) })
	c, err := keypool.NewChecker(t, append(opts, keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: prog.observe}))...)
	if err != nil {
		return err
	}
	results, checkErr := c.CheckAll(ctx)
	prog.finish(results)

	rows := make([]checkRow, len(results))
	for i, r := range results {
		rows[i] = newCheckRow(r)
	}
	if jsonOut {
		err = writeJSON(out, rows)
	} else {
		err = writeTable(out, rows)
	}
	if err != nil {
		return err
	}
	if checkErr != nil {
		return fmt.Errorf("check stopped after %d of %d keys: %w", len(results), checkable(t.Snapshot()), checkErr)
	}
	if !slices.ContainsFunc(results, usable) {
		return fmt.Errorf("no usable key: %s", summary(results))
	}
	return nil
}

// checkable counts the keys a check looks at: all but the stand-ins of
// upstreams without keys (sk: asis, or none).
func checkable(keys []keypool.KeyInfo) int {
	n := 0
	for _, k := range keys {
		if k.Auth == keypool.AuthKeys {
			n++
		}
	}
	return n
}

// usable reports whether a check reached the key and found it usable.
func usable(r keypool.CheckResult) bool {
	return r.Err == nil && r.State.Usable()
}

// summary counts results by state, and those the check could not reach:
// "3 keys: 1 ready, 2 revoked".
func summary(results []keypool.CheckResult) string {
	if len(results) == 0 {
		return "0 keys"
	}
	var counts keypool.Counts
	unreachable := 0
	for _, r := range results {
		if r.Err != nil {
			unreachable++
		} else {
			counts.Add(r.State)
		}
	}
	parts := counts.String()
	if unreachable > 0 {
		if parts != "" {
			parts += ", "
		}
		parts += fmt.Sprintf("%d unreachable", unreachable)
	}
	noun := "keys"
	if len(results) == 1 {
		noun = "key"
	}
	return fmt.Sprintf("%d %s: %s", len(results), noun, parts)
}

// checkRow is one key in the output: what the check found, by key ID.
type checkRow struct {
	ID keypool.KeyID `json:"id"`
	// Source is where the key came from (keys.txt:12, OPENAI_KEY[3],
	// config.yaml:8); a clone's is its key's.
	Source       string `json:"source,omitempty"`
	Upstream     string `json:"upstream"`
	Organization string `json:"organization,omitempty"`
	Scope        string `json:"scope,omitempty"` // the budget it spends: its organization (and project)
	Clone        bool   `json:"clone"`
	State        string `json:"state"` // a keypool.State's name
	Trial        bool   `json:"trial"`
	// RPM and TPM are the request and token limits the upstream stated; -1
	// when it stated none. A trial key's request limit is per day.
	RPM        int64    `json:"rpm"`
	TPM        int64    `json:"tpm"`
	ModelCount int      `json:"model_count"`
	Models     []string `json:"models"`
	Reason     string   `json:"reason,omitempty"`
	// Error is the network error that kept the key from being checked.
	Error string `json:"error,omitempty"`
}

func newCheckRow(r keypool.CheckResult) checkRow {
	row := checkRow{
		ID: r.Key, Source: r.Source, Upstream: r.Upstream, Organization: r.Organization, Scope: r.Scope, Clone: r.Clone,
		State: r.State.String(), Trial: r.Trial, RPM: r.LimitRequests, TPM: r.LimitTokens,
		ModelCount: len(r.Models), Models: r.Models, Reason: r.Reason,
	}
	if row.Models == nil {
		row.Models = []string{}
	}
	if r.Err != nil {
		row.Error = r.Err.Error()
	}
	return row
}

func writeTable(w io.Writer, rows []checkRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tUPSTREAM\tORG\tSCOPE\tSTATE\tTRIAL\tRPM\tTPM\tMODELS\tREASON")
	for _, r := range rows {
		org := orDash(r.Organization)
		if r.Clone {
			org += " (clone)"
		}
		trial := "no"
		if r.Trial {
			trial = "yes"
		}
		models := "-" // not listed: any model is tried
		if r.ModelCount > 0 {
			models = strconv.Itoa(r.ModelCount)
		}
		reason := r.Reason
		if r.Error != "" {
			reason = "not checked: " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, orDash(r.Source), orDash(r.Upstream), org, orDash(r.Scope), r.State, trial,
			limit(r.RPM), limit(r.TPM), models, orDash(reason))
	}
	return tw.Flush()
}

func limit(n int64) string {
	if n < 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
