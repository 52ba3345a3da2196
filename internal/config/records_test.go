package config_test

import (
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/config"
)

func TestRecordsQueueBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int64
	}{
		{"absent: the default", "records:\n  queue: 10\n", 0},
		{"bytes", "records:\n  queue_bytes: 1048576\n", 1 << 20},
		{"MiB", "records:\n  queue_bytes: 64MiB\n", 64 << 20},
		{"GB", "records:\n  queue_bytes: 1GB\n", 1e9},
		{"with a space", "records:\n  queue_bytes: 512 KiB\n", 512 << 10},
		{"null", "records:\n  queue_bytes:\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.in), "c.yaml", "")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Records.QueueBytes != tc.want {
				t.Errorf("QueueBytes = %d, want %d", cfg.Records.QueueBytes, tc.want)
			}
		})
	}
}

func TestRecordsQueueBytesErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not a size", "records:\n  queue_bytes: lots\n", "c.yaml:2: records: queue_bytes must be a size in bytes"},
		{"negative", "records:\n  queue_bytes: -1MiB\n", "c.yaml:2: records: queue_bytes must be a size in bytes"},
		{"too large", "records:\n  queue_bytes: 2000GiB\n", "c.yaml:2: records: queue_bytes must be a size in bytes"},
		{"a mapping", "records:\n  queue_bytes: {a: 1}\n", "c.yaml:2:"},
		{"misspelt", "records:\n  queue_byte: 1MiB\n", `c.yaml:2: unknown field "queue_byte" in records (did you mean "queue_bytes"?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.in), "c.yaml", "")
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
		})
	}
}
