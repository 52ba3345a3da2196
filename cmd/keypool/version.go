package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print keypool's version, commit, Go version and platform",
		Long: `version prints what this binary was built from, as Go recorded it: the
module version (a release such as v1.2.0 for go install …@v1.2.0, a
pseudo-version or "devel" for a build from a checkout), the commit and
whether the checkout had changes not committed (when built with VCS
information: go build in a git checkout does that unless -buildvcs=false),
the Go version, and the OS and architecture. Bug reports want all of it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi, _ := debug.ReadBuildInfo()
			return buildVersion(bi).write(cmd.OutOrStdout())
		},
	}
}

// version is what keypool version prints.
type version struct {
	Module   string // the module version, or "devel"
	Commit   string // the VCS revision, "" when not recorded
	Time     string // the commit's time (RFC 3339), "" when not recorded
	Modified bool   // the checkout had changes not committed
	Go       string // the Go version it was built with
	Platform string // GOOS/GOARCH
}

// buildVersion reads a version from the build info (nil when the binary
// has none), and the platform from the runtime.
func buildVersion(bi *debug.BuildInfo) version {
	v := version{Module: "devel", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return v
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Module = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v version) write(w io.Writer) error {
	commit := "unknown (built without VCS information)"
	if v.Commit != "" {
		commit = v.Commit
		if v.Time != "" {
			commit += " (" + v.Time + ")"
		}
		if v.Modified {
			commit += ", with changes not committed (dirty)"
		}
	}
	_, err := fmt.Fprintf(w, "keypool %s\ncommit:   %s\ngo:       %s\nplatform: %s\n", v.Module, commit, v.Go, v.Platform)
	return err
}

// moduleVersion is the module's version as built (go install …@v1.2.3), or
// "devel" for a build from a checkout.
func moduleVersion() string {
	bi, _ := debug.ReadBuildInfo()
	return buildVersion(bi).Module
}
