package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/config"
)

func TestStore(t *testing.T) {
	t.Setenv("KP_TEST_REDIS_PW", "pw-SECRET-env")
	tests := []struct {
		name, store string
		want        string // the URL read; "" with wantErr
		wantErr     string // a part of the error; it must hold the line
	}{
		{"plain", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", ""},
		{"no port nor db", "redis://redis", "redis://redis", ""},
		{"tls and password", `"rediss://:pw-SECRET-1@redis.example.org:6380/2"`, "rediss://:pw-SECRET-1@redis.example.org:6380/2", ""},
		{"env password", `"redis://:${KP_TEST_REDIS_PW}@127.0.0.1:6379/0"`, "redis://:pw-SECRET-env@127.0.0.1:6379/0", ""},
		{"empty", `""`, "", ""},
		{"another scheme", "https://:pw-SECRET-2@example.org/", "", "c.yaml:2: store must be a Redis URL"},
		{"no host", "redis:///0", "", "c.yaml:2: store must be a Redis URL"},
		{"db not a number", "redis://:pw-SECRET-3@h:6379/zero", "", "c.yaml:2: store must be a Redis URL"},
		{"bad port", "redis://h:99999/0", "", "c.yaml:2: store must be a Redis URL"},
		{"options", "redis://h:1/0?protocol=2", "", "c.yaml:2: store must be a Redis URL"},
		{"unset env", `"redis://:${KP_TEST_NO_SUCH_VAR}@h/0"`, "", "c.yaml:2:"},
		{"a list", "[redis://h]", "", "c.yaml:2: store must be a single value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "listen: 127.0.0.1:8080\nstore: " + tt.store + "\n"
			cfg, err := config.Parse([]byte(in), "c.yaml", "")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse: %v; want an error with %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "SECRET") {
					t.Errorf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Store.Reveal(); got != tt.want {
				t.Errorf("store = %q, want %q", got, tt.want)
			}
			if s := fmt.Sprintf("%v %+v", cfg, cfg.Store); strings.Contains(s, "SECRET") {
				t.Errorf("printing the config shows the password: %s", s)
			}
		})
	}
}

func TestParseStoreURL(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"redis://127.0.0.1:6379/0", true},
		{" rediss://:pw@h:1/3 ", true},
		{"http://:pw-SECRET@h", false},
		{"127.0.0.1:6379", false},
		{"", false},
	} {
		s, err := config.ParseStoreURL(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseStoreURL(%q) = %v, want ok %v", tt.in, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("the error shows the password: %v", err)
		}
		if tt.ok && s.Reveal() != strings.TrimSpace(tt.in) {
			t.Errorf("ParseStoreURL(%q) = %q", tt.in, s.Reveal())
		}
	}
}
