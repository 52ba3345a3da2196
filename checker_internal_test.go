package keypool

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestParseModels(t *testing.T) {
	tests := []struct {
		body string
		want []string
		ok   bool
	}{
		{`{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"gpt-4o-mini"},{"id":"gpt-4o"}]}`, []string{"gpt-4o", "gpt-4o-mini"}, true},
		{`{"object":"list","data":[]}`, []string{}, true},
		{`{"object":"list","data":[{"id":""},{"id":3}]}`, nil, false},
		{`{"object":"list"}`, nil, false},
		{`<html>bad gateway</html>`, nil, false},
		{``, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			got, ok := parseModels([]byte(tt.body))
			if ok != tt.ok || ok && !slices.Equal(got, tt.want) {
				t.Fatalf("parseModels = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseOrganizations(t *testing.T) {
	me := `{"object":"user","id":"user-1","orgs":{"object":"list","data":[
		{"object":"organization","id":"org-home","is_default":true,"title":"Home","projects":{"data":[]}},
		{"object":"organization","id":"org-work","is_default":false,"title":"Work"},
		{"object":"organization","id":"org-work","is_default":false,"title":"Work again"},
		{"object":"organization","id":"not-an-org","is_default":false}]}}`
	orgs, ok := parseMe([]byte(me))
	if !ok || len(orgs) != 2 || orgs[0].ID != "org-home" || !orgs[0].IsDefault || orgs[1].ID != "org-work" {
		t.Fatalf("parseMe = %+v, %v", orgs, ok)
	}
	list := `{"object":"list","data":[{"object":"organization","id":"org-a","is_default":false},{"id":"org-b","is_default":true}]}`
	orgs, ok = parseOrganizations([]byte(list))
	if !ok || len(orgs) != 2 || !orgs[1].IsDefault {
		t.Fatalf("parseOrganizations = %+v, %v", orgs, ok)
	}
	for _, bad := range []string{`{"object":"user"}`, `{"error":{"code":"no_organization"}}`, `[]`, `nope`} {
		if _, ok := parseMe([]byte(bad)); ok {
			t.Errorf("parseMe accepted %s", bad)
		}
		if _, ok := parseOrganizations([]byte(bad)); ok {
			t.Errorf("parseOrganizations accepted %s", bad)
		}
	}
}

// FuzzParseCheckBodies feeds the model and organization decoders anything:
// they never panic, and what they accept is clean.
func FuzzParseCheckBodies(f *testing.F) {
	f.Add([]byte(`{"object":"list","data":[{"id":"gpt-4o"}]}`))
	f.Add([]byte(`{"orgs":{"data":[{"id":"org-x","is_default":true}]}}`))
	f.Add([]byte(`{"data":[{"id":"org-y"}]}`))
	f.Add([]byte(`{"data":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if ids, ok := parseModels(body); ok {
			if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
				t.Fatalf("model ids not sorted and unique: %q", ids)
			}
			for _, id := range ids {
				if id == "" || len(id) > 256 {
					t.Fatalf("bad id %q", id)
				}
			}
		}
		for _, parse := range []func([]byte) ([]organization, bool){parseMe, parseOrganizations} {
			orgs, ok := parse(body)
			if !ok {
				continue
			}
			seen := map[string]bool{}
			for _, o := range orgs {
				if !strings.HasPrefix(o.ID, "org-") || seen[o.ID] {
					t.Fatalf("bad org list %+v", orgs)
				}
				seen[o.ID] = true
			}
			if !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
		}
	})
}

func TestModelFamilyTable(t *testing.T) {
	for in, want := range map[string]string{
		"gpt-5":                      "gpt-5",
		"gpt-5-chat-latest":          "gpt-5",
		"gpt-5-mini-2025-08-07":      "gpt-5-mini",
		"gpt-5-nano":                 "gpt-5-nano",
		"gpt-4.1-2025-04-14":         "gpt-4.1",
		"gpt-4.1-mini":               "gpt-4.1-mini",
		"gpt-4.1-nano":               "gpt-4.1-nano",
		"chatgpt-4o-latest":          "gpt-4o",
		"gpt-4o-2024-08-06":          "gpt-4o",
		"gpt-4o-mini-2024-07-18":     "gpt-4o-mini",
		"gpt-4o-mini-tts":            "tts",
		"gpt-4o-transcribe":          "transcription",
		"gpt-4-turbo-2024-04-09":     "gpt-4-turbo",
		"gpt-4-0613":                 "gpt-4",
		"gpt-3.5-turbo-0125":         "gpt-3.5-turbo",
		"o1-pro":                     "o1",
		"o1-mini":                    "o1-mini",
		"o3-2025-04-16":              "o3",
		"o3-pro":                     "o3",
		"o3-mini":                    "o3-mini",
		"o4-mini":                    "o4-mini",
		"gpt-image-1":                "gpt-image",
		"dall-e-3":                   "dall-e",
		"text-embedding-ada-002":     "embeddings",
		"whisper-1":                  "transcription",
		"tts-1-hd":                   "tts",
		"omni-moderation-latest":     "moderation",
		"babbage-002":                "gpt-base",
		"ft:gpt-4o-mini:acme::abc12": "gpt-4o-mini",
		"o30":                        "o30",
		"my-local-llama":             "my-local-llama",
		"mistral-large-2024-11-01":   "mistral-large",
		"gpt-4-1106-preview":         "gpt-4-turbo",
		"gpt-4.5-preview-2025-02-27": "gpt-4.5",
		"o3-mini-2025-01-31":         "o3-mini",
		"/v1/audio/transcriptions":   "/v1/audio/transcriptions",
		"":                           "",
		"-0613":                      "-0613",
	} {
		if got := ModelFamily(in); got != want {
			t.Errorf("ModelFamily(%q) = %q, want %q", in, got, want)
		}
	}
}
