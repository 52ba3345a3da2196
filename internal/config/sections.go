package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Sections names the parts of a config file a command reads. A command that
// needs only some parts loads only those (LoadSections), so that a problem
// in a part it never uses, such as an unset ${KEYPOOL_ADMIN_TOKEN} when all
// it does is read the records, does not stop it. The parts it does read are
// checked as Load checks them, with the same "file:line:" errors; a field
// that is not a field of the file at all is reported whatever the sections,
// since it may be a misspelling of one that is read.
type Sections uint8

const (
	// DatabaseSection is the records store: dbtype and dbaddr (keypool
	// records).
	DatabaseSection Sections = 1 << iota
	// UpstreamsSection is the upstreams with their keys, endpoints, model
	// lists and timeouts, the top-level keys_file and timeouts, and the
	// checker section (keypool check). It leaves out who may use each
	// upstream (its authorization, noauth and inherit_authorization):
	// client tokens are the proxy's business.
	UpstreamsSection

	// AllSections is the whole file, as serve reads it.
	AllSections Sections = 1<<8 - 1
)

// sectionOf names the section of each top-level field that is not in every
// section's reach; fields not listed are read with AllSections only.
var sectionOf = map[string]Sections{
	"dbtype":         DatabaseSection,
	"dbaddr":         DatabaseSection,
	"upstreams":      UpstreamsSection,
	"keys_file":      UpstreamsSection,
	"timeout":        UpstreamsSection,
	"stream_timeout": UpstreamsSection,
	"idle_timeout":   UpstreamsSection,
	"checker":        UpstreamsSection,
}

// clientFields are the fields of an upstream entry about who may use it,
// read with AllSections only.
var clientFields = map[string]bool{"authorization": true, "noauth": true, "inherit_authorization": true}

// LoadSections is Load for a command that reads only sections of the file:
// the other fields are known, but neither read nor checked, and are left
// zero in the Config it returns.
func LoadSections(path string, sections Sections) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseSections(data, path, filepath.Dir(path), sections)
}

// ParseSections is Parse for a command that reads only sections of the
// file (see LoadSections).
func ParseSections(data []byte, name, dir string, sections Sections) (*Config, error) {
	return parse(data, name, dir, sections)
}

// only returns s with the fields outside the parser's sections passed over:
// still known, so never "unknown field", but not read. inSection says which
// section a field belongs to.
func (p *parser) only(s schema, inSection func(name string) bool) schema {
	if p.sections == AllSections {
		return s
	}
	out := slices.Clone(s)
	for i := range out {
		if !inSection(out[i].name) {
			out[i].into = func(field) {}
		}
	}
	return out
}

// topLevel reports whether the parser reads the top-level field name.
func (p *parser) topLevel(name string) bool { return p.sections&sectionOf[name] != 0 }

// upstreamField reports whether the parser reads the field name of an
// upstream entry.
func (p *parser) upstreamField(name string) bool {
	return p.sections == AllSections || !clientFields[name]
}
