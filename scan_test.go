package keypool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestScanRequest(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		model  string
		stream bool
		ok     bool
	}{
		{"model first", `{"model":"gpt-4o","messages":[],"stream":true}`, "gpt-4o", true, true},
		{"model last", `{"stream":true,"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}`, "gpt-4o-mini", true, true},
		{"model only", `{"model":"o3"}`, "o3", false, true},
		{"empty object", `{}`, "", false, true},
		{"whitespace everywhere", " \t\r\n{ \n\"stream\" \t: \r\ntrue ,\n \"model\"\t:\t\"gpt-5\" \n}\n ", "gpt-5", true, true},
		{"stream false", `{"model":"m","stream":false}`, "m", false, true},
		{"stream null", `{"model":"m","stream":null}`, "m", false, true},
		{"stream string", `{"model":"m","stream":"true"}`, "m", false, true},
		{"stream number", `{"model":"m","stream":1}`, "m", false, true},
		{"nested model in messages", `{"messages":[{"role":"user","model":"evil","content":{"model":"evil2"}}],"model":"real"}`, "real", false, true},
		{"nested model in tools", `{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"model":{"type":"string"},"stream":{"type":"boolean"}}}}}],"stream":true,"model":"gpt-4.1"}`, "gpt-4.1", true, true},
		{"nested only", `{"metadata":{"model":"x","stream":true}}`, "", false, true},
		{"key in string value", `{"content":"\"model\":\"evil\", \"stream\":true","model":"ok"}`, "ok", false, true},
		{"escaped quote before brace", `{"content":"a\\\"}{\"model\":\"evil\"","model":"ok"}`, "ok", false, true},
		{"backslashes at end of string", `{"content":"a\\\\","model":"ok"}`, "ok", false, true},
		{"braces in strings", `{"messages":[{"content":"}}]]{{[["}],"model":"ok","stream":true}`, "ok", true, true},
		{"model with escapes", `{"model":"gpt\u002d4o\n\"x\"\\"}`, "gpt-4o\n\"x\"\\", false, true},
		{"model with surrogate pair", `{"model":"\ud83d\ude00"}`, "\U0001F600", false, true},
		{"model with slash escape", `{"model":"ft:gpt-4o:org:custom\/id"}`, "ft:gpt-4o:org:custom/id", false, true},
		{"model utf8", `{"model":"模型"}`, "模型", false, true},
		{"escaped key", `{"\u006dodel":"x","str\u0065am":true}`, "x", true, true},
		{"key case differs", `{"Model":"x","STREAM":true}`, "", false, true},
		{"model not a string", `{"model":42}`, "", false, true},
		{"model null", `{"model":null}`, "", false, true},
		{"model object", `{"model":{"model":"x"}}`, "", false, true},
		{"duplicate model last wins", `{"model":"a","model":"b"}`, "b", false, true},
		{"duplicate model then null", `{"model":"a","model":null}`, "", false, true},
		{"duplicate stream last wins", `{"stream":true,"stream":false}`, "", false, true},
		{"duplicate stream then true", `{"stream":false,"model":"m","stream":true}`, "m", true, true},
		{"numbers and literals skipped", `{"temperature":0.7,"n":1,"logprobs":false,"user":null,"top_p":-1e-3,"model":"m"}`, "m", false, true},
		{"truncated in key", `{"model":"m","str`, "m", false, true},
		{"truncated in value", `{"stream":true,"model":"gpt-`, "", true, true},
		{"truncated in nested", `{"model":"m","messages":[{"content":"x"`, "m", false, true},
		{"truncated after colon", `{"model":`, "", false, true},
		{"truncated scalar", `{"model":"m","stream":true`, "m", true, true},
		{"just brace", `{`, "", false, true},
		{"missing colon", `{"model" "m"}`, "", false, true},
		{"garbage after brace", `{garbage "model":"m"}`, "", false, true},
		{"trailing garbage", `{"model":"m"} trailing`, "m", false, true},
		{"unbalanced closers", `{"a":]]]],"model":"m"}`, "", false, true},
		{"empty", ``, "", false, false},
		{"whitespace only", " \n\t", "", false, false},
		{"array", `[{"model":"m"}]`, "", false, false},
		{"string", `"model"`, "", false, false},
		{"multipart", "--boundary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n", "", false, false},
		{"garbage", "\x00\xff{", "", false, false},
		{"byte-order mark", "\xEF\xBB\xBF{\"model\":\"o1-pro\"}", "o1-pro", false, true},
		{"byte-order mark and space", "\xEF\xBB\xBF \n{\"model\":\"o1-pro\",\"stream\":true}", "o1-pro", true, true},
		{"two byte-order marks", "\xEF\xBB\xBF\xEF\xBB\xBF{\"model\":\"x\"}", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model, stream, _, ok := scanRequest([]byte(tt.body))
			if model != tt.model || stream != tt.stream || ok != tt.ok {
				t.Errorf("scanRequest(%q) = %q, %v, %v; want %q, %v, %v",
					tt.body, model, stream, ok, tt.model, tt.stream, tt.ok)
			}
		})
	}
}

// TestScanRequestTruncations cuts a real request at every byte: never a panic,
// and every prefix that holds the whole model value reports it.
func TestScanRequestTruncations(t *testing.T) {
	body := chatRequest(600)
	full := len(body)
	modelEnd := bytes.LastIndex(body, []byte(`"gpt-4o-mini"`)) + len(`"gpt-4o-mini"`)
	for n := 0; n <= full; n++ {
		model, _, _, ok := scanRequest(body[:n])
		if ok != (n > 0) {
			t.Fatalf("prefix %d: ok = %v", n, ok)
		}
		if n >= modelEnd && model != "gpt-4o-mini" {
			t.Fatalf("prefix %d: model = %q", n, model)
		}
	}
}

func TestScanRequestAllocs(t *testing.T) {
	body := chatRequest(4096)
	allocs := testing.AllocsPerRun(100, func() {
		model, stream, _, ok := scanRequest(body)
		if model != "gpt-4o-mini" || !stream || !ok {
			t.Fatalf("scanRequest = %q, %v, %v", model, stream, ok)
		}
	})
	if allocs > 1 {
		t.Errorf("scanRequest allocates %v times per call; want at most 1 (the model string)", allocs)
	}
}

// chatRequest returns a realistic chat completion request of about size bytes,
// with "model" as its last key and "model" and "stream" keys nested in messages
// and tools.
func chatRequest(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[{"role":"system","content":"You are a helpful assistant. Answer in JSON like {\"model\": \"x\", \"stream\": true} when asked.\nUse \\n for newlines."},`)
	b.WriteString(`{"role":"user","content":[{"type":"text","text":"Which model are you? Reply with \"model\":\"...\" please."}]},`)
	b.WriteString(`{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"lookup","arguments":"{\"model\":\"gpt-3.5\",\"stream\":false}"}}]},`)
	b.WriteString(`{"role":"tool","tool_call_id":"call_abc123","content":"{\"result\": [1, 2, 3], \"note\": \"braces } ] { [ inside\"}"}`)
	filler := `,{"role":"user","content":"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. \"Quoted\" text, a backslash \\ and unicode \u00e9\u4e2d."}`
	for b.Len() < size-380 {
		b.WriteString(filler)
	}
	b.WriteString(`],"tools":[{"type":"function","function":{"name":"lookup","description":"Look up a model.","parameters":{"type":"object","properties":{"model":{"type":"string","enum":["a","b"]},"stream":{"type":"boolean"}},"required":["model"],"additionalProperties":false},"strict":true}}],`)
	b.WriteString(`"temperature":0.2,"top_p":1,"n":1,"max_completion_tokens":1024,"user":null,"stream":true,"stream_options":{"include_usage":true},"model":"gpt-4o-mini"}`)
	return b.Bytes()
}

// BenchmarkScanRequest compares scanRequest with the json.Unmarshal it replaces,
// on a 4 KiB chat request whose model comes last.
func BenchmarkScanRequest(b *testing.B) {
	body := chatRequest(4096)
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if model, _, _, _ := scanRequest(body); model == "" {
				b.Fatal("no model")
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var v struct {
				Model  string
				Stream bool
			}
			if err := json.Unmarshal(body, &v); err != nil || v.Model == "" {
				b.Fatal(err)
			}
		}
	})
}

// scanRequestSeeds are inputs for FuzzScanRequest beyond the table's.
var scanRequestSeeds = []string{
	`{"model":"gpt-4o","stream":true}`,
	`{"messages":[{"model":"x"}],"model":"y","stream":false}`,
	`{"model":"a\"b\\","stream":null}`,
	`{"model":"\u00e9","Model":"x"}`,
	`{"model":"m","model":1}`,
	`{"model":"\xff\xfe"}`,
	`  {"stream" : true , "model" : ""}  `,
	`[1,2]`,
	``,
}

func FuzzScanRequest(f *testing.F) {
	for _, s := range scanRequestSeeds {
		f.Add([]byte(s))
	}
	f.Add(chatRequest(1024))
	f.Fuzz(func(t *testing.T, body []byte) {
		model, stream, present, ok := scanRequest(body)
		trimmed := bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xEF\xBB\xBF")), " \t\r\n")
		if ok != (len(trimmed) > 0 && trimmed[0] == '{') {
			t.Fatalf("ok = %v for %q", ok, body)
		}
		if !ok || !json.Valid(body) {
			return
		}
		if present != bytes.Contains(body, []byte(`"model"`)) && present {
			t.Fatalf("present with no model key in %q", body)
		}
		// Exact keys, last duplicate wins: what the upstream reads.
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatalf("valid object does not decode into a map: %v", err)
		}
		wantModel := ""
		if raw := bytes.TrimSpace(fields["model"]); len(raw) > 0 && raw[0] == '"' {
			if err := json.Unmarshal(raw, &wantModel); err != nil {
				t.Fatal(err)
			}
		}
		wantStream := string(bytes.TrimSpace(fields["stream"])) == "true"
		if model != wantModel || stream != wantStream {
			t.Fatalf("scanRequest(%q) = %q, %v; map decode says %q, %v", body, model, stream, wantModel, wantStream)
		}
		// encoding/json's struct decode agrees whenever it succeeds, except that
		// it also takes keys differing in case, which scanRequest does not.
		for k := range fields {
			if k != "model" && strings.EqualFold(k, "model") || k != "stream" && strings.EqualFold(k, "stream") {
				return
			}
		}
		var v struct {
			Model  *string `json:"model"`
			Stream *bool   `json:"stream"`
		}
		if json.Unmarshal(body, &v) != nil {
			return
		}
		wantModel, wantStream = "", false
		if v.Model != nil {
			wantModel = *v.Model
		}
		if v.Stream != nil {
			wantStream = *v.Stream
		}
		if model != wantModel || stream != wantStream {
			t.Fatalf("scanRequest(%q) = %q, %v; json.Unmarshal says %q, %v", body, model, stream, wantModel, wantStream)
		}
	})
}

// Response fixtures, shaped like what the API sends.

const chatUsageJSON = `{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":12,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`

var chatUsage = Usage{InputTokens: 1117, OutputTokens: 46, CachedTokens: 1024, ReasoningTokens: 12}

// trickyText is message content that quotes a usage object.
const trickyText = `Here is the JSON: {\"usage\":{\"prompt_tokens\":999,\"completion_tokens\":999}} and \"usage\": {\"input_tokens\": 5} and a backslash \\ then \\\"usage\\\":{}.`

func chatCompletionJSON(usage string) string {
	return `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"` + trickyText + `","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":` + usage + `,"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}`
}

// chatChunk is one chat.completion.chunk; usage "" leaves the key out, as
// streams without include_usage do.
func chatChunk(delta, finish, usage string) string {
	if usage != "" {
		usage = `,"usage":` + usage
	}
	return `{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0ba0d124f1",` +
		`"choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + finish + `}]` + usage + `}`
}

// chatSSE is a chat completion stream; with include_usage it ends with the usage chunk.
func chatSSE(includeUsage bool, eol string) string {
	usage := ""
	if includeUsage {
		usage = "null"
	}
	chunk := func(delta, finish string) string {
		return "data: " + chatChunk(delta, finish, usage) + eol + eol
	}
	var b strings.Builder
	b.WriteString(chunk(`{"role":"assistant","content":"","refusal":null}`, "null"))
	for _, d := range []string{"Hello", `\"usage\":{\"prompt_tokens\":1}`, trickyText, "\\\\", ` world\n`} {
		b.WriteString(chunk(`{"content":"`+d+`"}`, "null"))
	}
	b.WriteString(chunk(`{}`, `"stop"`))
	if includeUsage {
		b.WriteString("data: " + `{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0ba0d124f1","choices":[],"usage":` + chatUsageJSON + `}` + eol + eol)
	}
	b.WriteString("data: [DONE]" + eol + eol)
	return b.String()
}

const responsesUsageJSON = `{"input_tokens":36,"input_tokens_details":{"cached_tokens":4},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":123}`

var responsesUsage = Usage{InputTokens: 36, OutputTokens: 87, CachedTokens: 4, ReasoningTokens: 64}

func responseObject(status, text, usage string) string {
	return `{"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"status":"` + status + `","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14",` +
		`"output":[{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","status":"completed","role":"assistant","content":[{"type":"output_text","text":"` + text + `","annotations":[],"logprobs":[]}]}],` +
		`"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled",` +
		`"usage":` + usage + `,"user":null,"metadata":{}}`
}

// responsesSSE is a Responses API stream ending in the given event.
func responsesSSE(final, text string, done bool) string {
	var b strings.Builder
	event := func(typ, data string) {
		b.WriteString("event: " + typ + "\ndata: " + data + "\n\n")
	}
	event("response.created", `{"type":"response.created","sequence_number":0,"response":`+responseObject("in_progress", "", "null")+`}`)
	event("response.in_progress", `{"type":"response.in_progress","sequence_number":1,"response":`+responseObject("in_progress", "", "null")+`}`)
	event("response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"`+trickyText+`","logprobs":[]}`)
	event("response.output_text.done", `{"type":"response.output_text.done","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"text":"`+text+`","logprobs":[]}`)
	status := strings.TrimPrefix(final, "response.")
	event(final, `{"type":"`+final+`","sequence_number":4,"response":`+responseObject(status, text, responsesUsageJSON)+`}`)
	if done {
		b.WriteString("data: [DONE]\n\n")
	}
	return b.String()
}

// hugeText is about n bytes of JSON-escaped output text full of things that look
// like usage objects.
func hugeText(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `line %d: \"usage\":{\"input_tokens\":%d} \\ {[\"}\"]} \u00e9\n`, i, i)
	}
	return b.String()
}

const embeddingsJSON = `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[-0.006929283,-0.005336422,0.00024047505,-0.024047505,1e-7]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`

type usageCase struct {
	name string
	sse  bool
	body string
	want Usage
	ok   bool
}

func usageCases() []usageCase {
	completed := responsesSSE("response.completed", "Hi there.", true)
	return []usageCase{
		{"chat JSON", false, chatCompletionJSON(chatUsageJSON), chatUsage, true},
		{"chat JSON pretty", false, "{\n  \"id\": \"x\",\n  \"usage\" :\n  {\n    \"prompt_tokens\": 3,\n    \"completion_tokens\": 4,\n    \"total_tokens\": 7\n  }\n}\n", Usage{InputTokens: 3, OutputTokens: 4}, true},
		{"chat JSON null usage", false, chatCompletionJSON("null"), Usage{}, false},
		{"chat JSON quoted usage only", false, `{"id":"x","choices":[{"message":{"content":"` + trickyText + `"}}]}`, Usage{}, false},
		{"nested usage ignored", false, `{"choices":[{"message":{"usage":{"prompt_tokens":1,"completion_tokens":2}}}],"metadata":{"usage":{"prompt_tokens":3}}}`, Usage{}, false},
		{"responses JSON", false, responseObject("completed", trickyText, responsesUsageJSON), responsesUsage, true},
		{"embeddings JSON", false, embeddingsJSON, Usage{InputTokens: 8}, true},
		{"float counts rejected", false, `{"usage":{"prompt_tokens":1.5,"total_tokens":2}}`, Usage{}, false},
		{"negative counts rejected", false, `{"usage":{"prompt_tokens":-1}}`, Usage{}, false},
		{"string counts rejected", false, `{"usage":{"prompt_tokens":"1"}}`, Usage{}, false},
		{"no token counts", false, `{"usage":{"type":"duration","seconds":12}}`, Usage{}, false},
		{"transcription tokens", false, `{"text":"hi","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},"output_tokens":45,"total_tokens":59}}`, Usage{InputTokens: 14, OutputTokens: 45}, true},
		{"last usage wins", false, `{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}`, Usage{InputTokens: 2}, true},
		{"last valid usage wins", false, `{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":"bad"}}`, Usage{InputTokens: 1}, true},
		{"usage too large", false, `{"usage":{"prompt_tokens":1,"pad":"` + strings.Repeat("x", meterCaptureMax) + `"}}`, Usage{}, false},
		{"escaped key not matched", false, `{"\u0075sage":{"prompt_tokens":1}}`, Usage{}, false},
		{"truncated usage", false, `{"usage":{"prompt_tokens":1,"completion_tokens":2`, Usage{}, false},
		{"unbalanced body", false, `]]{"usage":{"prompt_tokens":1}}`, Usage{}, false},
		{"empty body", false, ``, Usage{}, false},
		{"chat SSE include_usage", true, chatSSE(true, "\n"), chatUsage, true},
		{"chat SSE include_usage CRLF", true, chatSSE(true, "\r\n"), chatUsage, true},
		{"chat SSE include_usage CR", true, chatSSE(true, "\r"), chatUsage, true},
		{"chat SSE without usage", true, chatSSE(false, "\n"), Usage{}, false},
		{"chat SSE usage without final newline", true, "data: " + chatChunk(`{}`, "null", chatUsageJSON), chatUsage, true},
		{"chat SSE mid-stream error", true, "data: " + chatChunk(`{"content":"a"}`, "null", "null") + "\n\n" + `data: {"error":{"message":"The server experienced an error while processing your request.","type":"server_error","param":null,"code":null}}` + "\n\n", Usage{}, false},
		{"SSE broken line then usage", true, "data: {\"choices\":[{\"delta\":{\"content\":\"unterminated\ndata: " + chatChunk(`{}`, "null", chatUsageJSON) + "\n\n", chatUsage, true},
		{"SSE broken event then usage", true, "data: {\"choices\":[{\"delta\":{\n\ndata: " + chatChunk(`{}`, "null", chatUsageJSON) + "\n\n", chatUsage, true},
		{"SSE multi-line data", true, "data: {\"id\":\"x\",\ndata: \"usage\":{\"prompt_tokens\":5,\ndata: \"completion_tokens\":6}}\n\n", Usage{InputTokens: 5, OutputTokens: 6}, true},
		{"SSE comments and fields", true, ": keep-alive\nid: 7\nretry: 100\nevent: x\ndatum: {\"usage\":{\"prompt_tokens\":9}}\ndata:{\"usage\":{\"prompt_tokens\":5}}\n\n", Usage{InputTokens: 5}, true},
		{"SSE usage in event line ignored", true, "event: {\"usage\":{\"prompt_tokens\":9}}\n\n", Usage{}, false},
		{"responses SSE completed", true, completed, responsesUsage, true},
		{"responses SSE completed without DONE", true, responsesSSE("response.completed", "Hi there.", false), responsesUsage, true},
		{"responses SSE incomplete", true, responsesSSE("response.incomplete", "Hi", false), responsesUsage, true},
		{"responses SSE CRLF", true, strings.ReplaceAll(completed, "\n", "\r\n"), responsesUsage, true},
		{"responses SSE huge completed line", true, responsesSSE("response.completed", hugeText(200<<10), true), responsesUsage, true},
		{"responses SSE cut before completed", true, completed[:strings.Index(completed, "event: response.completed")], Usage{}, false},
		{"responses SSE usage at wrong depth", true, `data: {"type":"x","item":{"usage":{"input_tokens":1}},"response":{"output":[{"usage":{"input_tokens":2}}],"response":{"usage":{"input_tokens":3}}}}` + "\n\n", Usage{}, false},
	}
}

// observeChunks feeds body to a fresh meter in chunks cut by next, which
// returns the next chunk length.
func observeChunks(m *usageMeter, sse bool, body []byte, next func(rest int) int) (Usage, bool) {
	m.reset(sse)
	for len(body) > 0 {
		n := min(max(next(len(body)), 1), len(body))
		m.observe(body[:n])
		body = body[n:]
	}
	return m.usage()
}

func TestUsageMeter(t *testing.T) {
	m := new(usageMeter) // shared: reset must clear every trace of the previous body
	for _, tc := range usageCases() {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			check := func(how string, u Usage, ok bool) {
				t.Helper()
				if u != tc.want || ok != tc.ok {
					t.Fatalf("%s: usage() = %+v, %v; want %+v, %v", how, u, ok, tc.want, tc.ok)
				}
			}
			u, ok := observeChunks(m, tc.sse, body, func(rest int) int { return rest })
			check("whole", u, ok)
			u, ok = observeChunks(m, tc.sse, body, func(int) int { return 1 })
			check("1-byte chunks", u, ok)
			rng := rand.New(rand.NewPCG(1, uint64(len(body))))
			for _, maxChunk := range []int{7, 64, 4096, 32 << 10} {
				u, ok = observeChunks(m, tc.sse, body, func(int) int { return 1 + rng.IntN(maxChunk) })
				check(fmt.Sprintf("random chunks up to %d", maxChunk), u, ok)
			}
			if len(body) > 8<<10 {
				return
			}
			for cut := 0; cut <= len(body); cut++ {
				first := true
				u, ok = observeChunks(m, tc.sse, body, func(rest int) int {
					if first {
						first = false
						return max(cut, 1)
					}
					return rest
				})
				check(fmt.Sprintf("split at %d", cut), u, ok)
			}
		})
	}
}

func TestUsageMeterZeroValue(t *testing.T) {
	var m usageMeter
	if u, ok := m.usage(); ok || u != (Usage{}) {
		t.Fatalf("zero meter: usage() = %+v, %v", u, ok)
	}
	m.observe([]byte(embeddingsJSON))
	if u, ok := m.usage(); !ok || u != (Usage{InputTokens: 8}) {
		t.Fatalf("zero meter on JSON: usage() = %+v, %v", u, ok)
	}
	m.reset(true)
	if u, ok := m.usage(); ok || u != (Usage{}) {
		t.Fatalf("after reset: usage() = %+v, %v", u, ok)
	}
}

// TestUsageMeterAllocs checks that passing a long stream through allocates
// nothing, and that finding the usage object decodes it once.
func TestUsageMeterAllocs(t *testing.T) {
	var b strings.Builder
	for b.Len() < 256<<10 {
		b.WriteString("data: " + chatChunk(`{"content":"`+trickyText+`"}`, "null", "null") + "\n\n")
	}
	stream := []byte(b.String())
	var chunks [][]byte
	rng := rand.New(rand.NewPCG(2, 3))
	for rest := stream; len(rest) > 0; {
		n := min(1+rng.IntN(4096), len(rest))
		chunks = append(chunks, rest[:n])
		rest = rest[n:]
	}
	m := new(usageMeter)
	m.reset(true)
	i := 0
	allocs := testing.AllocsPerRun(len(chunks)-1, func() {
		m.observe(chunks[i%len(chunks)])
		i++
	})
	if allocs != 0 {
		t.Errorf("observe allocates %v times per call on a stream without usage; want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(10, func() { m.reset(true) }); allocs != 0 {
		t.Errorf("reset allocates %v times; want 0", allocs)
	}
	if _, ok := m.usage(); ok {
		t.Fatal("found usage in a stream without one")
	}
	final := []byte("data: " + chatChunk(`{}`, "null", chatUsageJSON) + "\n\n")
	// Decoding the one usage object found allocates a little, once per body.
	if allocs := testing.AllocsPerRun(10, func() { m.observe(final) }); allocs > 16 {
		t.Errorf("observe allocates %v times on the usage chunk; want a small decode", allocs)
	}
	if u, ok := m.usage(); !ok || u != chatUsage {
		t.Fatalf("usage() = %+v, %v", u, ok)
	}
}

// referenceUsage finds usage the slow way in a valid JSON body: the last
// top-level "usage" or top-level "response"."usage" that decodeUsage accepts
// and that fits the meter's capture.
func referenceUsage(body []byte) (Usage, bool) {
	var (
		found bool
		last  Usage
		walk  func(raw []byte, depth int)
	)
	walk = func(raw []byte, depth int) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return
			}
			var value json.RawMessage
			if dec.Decode(&value) != nil {
				return
			}
			switch key, _ := tok.(string); {
			case key == "usage" && len(value) <= meterCaptureMax:
				if u, ok := decodeUsage(value); ok {
					last, found = u, true
				}
			case key == "response" && depth == 1:
				walk(value, 2)
			}
		}
	}
	walk(body, 1)
	return last, found
}

func FuzzUsageMeter(f *testing.F) {
	for _, tc := range usageCases() {
		if len(tc.body) < 16<<10 {
			f.Add([]byte(tc.body), tc.sse, uint16(len(tc.body)/3), uint16(len(tc.body)/2))
		}
	}
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1}}\r\n\r\n"), true, uint16(36), uint16(37))
	f.Add([]byte(`{"usage":{"prompt_tokens":1,"x":"\\\"}"}}`), false, uint16(20), uint16(22))
	f.Fuzz(func(t *testing.T, body []byte, sse bool, a, b uint16) {
		var m usageMeter
		m.reset(sse)
		m.observe(body)
		want, wantOK := m.usage()

		i, j := min(int(a), len(body)), min(int(b), len(body))
		if i > j {
			i, j = j, i
		}
		m.reset(sse)
		m.observe(body[:i])
		m.observe(body[i:j])
		m.observe(body[j:])
		if u, ok := m.usage(); u != want || ok != wantOK {
			t.Fatalf("split at %d, %d: %+v, %v; whole: %+v, %v", i, j, u, ok, want, wantOK)
		}
		if len(body) <= 1024 {
			m.reset(sse)
			for k := range body {
				m.observe(body[k : k+1])
			}
			if u, ok := m.usage(); u != want || ok != wantOK {
				t.Fatalf("1-byte chunks: %+v, %v; whole: %+v, %v", u, ok, want, wantOK)
			}
		}
		// Escaped keys are not matched on purpose; the reference would match them.
		if sse || !json.Valid(body) || bytes.Contains(body, []byte(`\u`)) {
			return
		}
		if ref, refOK := referenceUsage(body); ref != want || refOK != wantOK {
			t.Fatalf("meter: %+v, %v; reference: %+v, %v; body %q", want, wantOK, ref, refOK, body)
		}
	})
}
