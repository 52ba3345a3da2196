package keypool

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReorderAzureStream(t *testing.T) {
	const filter = `data: {"choices":[],"prompt_filter_results":[{"prompt_index":0}]}`
	const first = `data: {"choices":[{"delta":{"content":"Hi"}}]}`
	for _, tc := range []struct {
		name, in, want string
	}{
		{"filter then content", filter + "\n\n" + first + "\n\ndata: [DONE]\n\n", first + "\n\n" + filter + "\n\ndata: [DONE]\n\n"},
		{"crlf", filter + "\r\n\r\n" + first + "\r\n\r\n", first + "\r\n\r\n" + filter + "\r\n\r\n"},
		{"no filter event", first + "\n\n" + filter + "\n\n", first + "\n\n" + filter + "\n\n"},
		{"filter alone", filter + "\n\n", filter + "\n\n"},
		{"filter, then an unfinished event", filter + "\n\ndata: {", filter + "\n\ndata: {"},
		{"choices not empty", `data: {"choices":[{}],"prompt_filter_results":[]}` + "\n\n" + first + "\n\n", `data: {"choices":[{}],"prompt_filter_results":[]}` + "\n\n" + first + "\n\n"},
		{"not JSON", "data: [DONE]\n\n", "data: [DONE]\n\n"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &azureStream{rc: io.NopCloser(iotest.OneByteReader(strings.NewReader(tc.in)))}
			got, err := io.ReadAll(s)
			if err != nil || string(got) != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("read error after the filter event", func(t *testing.T) {
		broken := errors.New("cut")
		s := &azureStream{rc: io.NopCloser(io.MultiReader(strings.NewReader(filter+"\n\n"), iotest.ErrReader(broken)))}
		got, err := io.ReadAll(s)
		if !errors.Is(err, broken) || string(got) != filter+"\n\n" {
			t.Errorf("got %q, %v", got, err)
		}
	})
	t.Run("lookahead is bounded", func(t *testing.T) {
		long := filter + "\n\ndata: " + strings.Repeat("x", 2*azureStreamLookahead)
		got, err := io.ReadAll(&azureStream{rc: io.NopCloser(strings.NewReader(long))})
		if err != nil || string(got) != long {
			t.Errorf("lost bytes: %d of %d, %v", len(got), len(long), err)
		}
	})
}
