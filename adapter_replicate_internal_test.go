package keypool

import (
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"testing"
)

func TestReplicatePrediction(t *testing.T) {
	base, _ := url.Parse("https://api.replicate.com/v1/chat/completions")
	tests := []struct {
		name, body string
		path       string
		input      map[string]any
	}{
		{"one turn, system prompt", `{"model":"meta/meta-llama-3-70b-instruct","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":20,"temperature":0.5,"stop":["a","b"]}`,
			"/v1/models/meta/meta-llama-3-70b-instruct/predictions",
			map[string]any{"prompt": "Hi", "system_prompt": "Be brief.", "max_tokens": 20.0, "temperature": 0.5, "stop_sequences": "a,b"}},
		{"mistral takes max_new_tokens", `{"model":"mistralai/mixtral-8x7b-instruct-v0.1","messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_completion_tokens":7}`,
			"/v1/models/mistralai/mixtral-8x7b-instruct-v0.1/predictions",
			map[string]any{"prompt": "Hi", "max_new_tokens": 7.0}},
		{"mistral conversation", `{"model":"mistralai/mixtral-8x7b-instruct-v0.1","messages":[{"role":"system","content":"S"},{"role":"user","content":"A"},{"role":"assistant","content":"B"},{"role":"user","content":"C"}]}`,
			"/v1/models/mistralai/mixtral-8x7b-instruct-v0.1/predictions",
			map[string]any{"prompt": "<s>[INST] S\n\nA [/INST] B</s>[INST] C [/INST]", "prompt_template": "{prompt}"}},
		{"llama 3 conversation", `{"model":"meta/meta-llama-3-8b-instruct","messages":[{"role":"user","content":"A"},{"role":"assistant","content":"B"},{"role":"user","content":"C"}]}`,
			"/v1/models/meta/meta-llama-3-8b-instruct/predictions",
			map[string]any{"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nB<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nC<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "prompt_template": "{prompt}"}},
		{"a version", `{"model":"acme/chat:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa","messages":[{"role":"user","content":"Hi"}]}`,
			"/v1/predictions", map[string]any{"prompt": "Hi"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c replicateChat
			if err := json.Unmarshal([]byte(tc.body), &c); err != nil {
				t.Fatal(err)
			}
			u, body, msg := c.prediction(base)
			if msg != "" {
				t.Fatal(msg)
			}
			if u.Path != tc.path {
				t.Errorf("path %s, want %s", u.Path, tc.path)
			}
			b, _ := json.Marshal(body["input"])
			var in map[string]any
			json.Unmarshal(b, &in)
			want, _ := json.Marshal(tc.input)
			if got, _ := json.Marshal(in); string(got) != string(want) {
				t.Errorf("input\n%s\nwant\n%s", got, want)
			}
		})
	}
	for _, bad := range []string{"gpt-4o", "a/b/c", "/b", "a/", "a/b:", "a b/c"} {
		c := replicateChat{Model: bad, Messages: []replicateMsg{{Role: "user", Content: json.RawMessage(`"x"`)}}}
		if _, _, msg := c.prediction(base); msg == "" {
			t.Errorf("model %q was taken", bad)
		}
	}
}

func TestReplicateEvents(t *testing.T) {
	in := ": keep-alive\r\nevent: output\r\nid: 1\r\ndata: two\r\ndata: lines\r\n\r\nevent: output\ndata:  spaced\n\ndata: plain\n\nevent: done\ndata: {}"
	lr := newLineReader(&oneByte{strings.NewReader(in)}, 64)
	type ev struct{ event, data string }
	var got []ev
	for {
		e, d, err := lr.event()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev{e, d})
	}
	want := []ev{{"output", "two\nlines"}, {"output", " spaced"}, {"message", "plain"}, {"done", "{}"}}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: %q, want %q", i, got[i], want[i])
		}
	}
	long := newLineReader(strings.NewReader("data: "+strings.Repeat("x", 200)), 64)
	if _, _, err := long.event(); err == nil || err == io.EOF {
		t.Fatalf("an overlong line: %v", err)
	}
}

func TestReplicateErrors(t *testing.T) {
	for _, tc := range []struct {
		status     int
		body       string
		wantStatus int
		wantType   string
		wantRetry  float64
	}{
		{401, `{"title":"Unauthenticated","detail":"You did not pass a valid authentication token","status":401}`, 401, "invalid_request_error", 0},
		{402, `{"detail":"You have insufficient credit"}`, 429, "insufficient_quota", 0},
		{429, `{"detail":"Request was throttled.","status":429,"retry_after":7}`, 429, "requests", 7},
		{422, `{"detail":[{"loc":["input"],"msg":"x"}]}`, 400, "invalid_request_error", 0},
		{503, `<html>`, 503, "server_error", 0},
	} {
		st, typ, _, msg, retry := replicateError(tc.status, []byte(tc.body))
		if st != tc.wantStatus || typ != tc.wantType || retry != tc.wantRetry || msg == "" {
			t.Errorf("%d %s: %d %s %q %v", tc.status, tc.body, st, typ, msg, retry)
		}
	}
}

// oneByte reads one byte at a time: lines split across reads.
type oneByte struct{ r io.Reader }

func (o *oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(1, len(p))]) }

// FuzzReplicateStream: whatever Replicate's stream holds, the client gets
// OpenAI's events ending in [DONE] or in an error event, and no panic.
func FuzzReplicateStream(f *testing.F) {
	f.Add("event: output\ndata: Hi\n\nevent: done\ndata: {}\n\n")
	f.Add("event: output\r\ndata: a\r\ndata: b\r\n\r\nevent: error\r\ndata: {\"detail\":\"x\"}\r\n\r\n")
	f.Add("event: done\ndata: {\"reason\":\"canceled\"}\n\n")
	f.Add(": ping\n\nevent: output\ndata: \"quoted\\\"\n\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		c := &replicateChat{Model: "a/b"}
		s := &replicateStream{chat: c, p: &prediction{ID: "p"}, rc: io.NopCloser(strings.NewReader(in)),
			lines: newLineReader(strings.NewReader(in), 256)}
		out, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		var last string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line == "" {
				continue
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				t.Fatalf("a line that is not data: %q", line)
			}
			if data != "[DONE]" && !json.Valid([]byte(data)) {
				t.Fatalf("data that is not JSON: %q", data)
			}
			last = data
		}
		if last != "[DONE]" && !strings.HasPrefix(last, `{"error":`) {
			t.Fatalf("the stream ends with %q", last)
		}
	})
}
