package keypool

import (
	"bytes"
	"encoding/json"
	"math"
	"unicode/utf8"
)

// This file reads the few facts the pool needs from bodies passing through it
// without decoding them: the model and stream flag of a request, and the usage
// object of a response. Both run on every request, so they skip what they do not
// need instead of building it.

// scanRequest reads the top-level "model" string and "stream" boolean of a JSON
// object, skipping every other value without decoding it. ok is false when body is
// not a JSON object (multipart, empty, garbage); model is "" when absent or not a
// string, and present reports a "model" key with a string value. A leading
// UTF-8 byte-order mark is skipped, as lenient JSON readers skip it.
//
// Keys match exactly, as the upstream reads them (encoding/json would also take
// "Model"). A duplicated key counts its last value, like encoding/json, so
// "stream":true followed by "stream":null is false. A body cut off or malformed
// after its opening brace yields what was read up to the break, with ok true: the
// upstream rejects such a body anyway. It allocates only the model string, plus a
// small decode when the model or a key holds escapes or invalid UTF-8.
func scanRequest(body []byte) (model string, stream, present, ok bool) {
	body = bytes.TrimPrefix(body, utf8BOM)
	i := scanSkipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return "", false, false, false
	}
	var modelToken []byte // the last "model" value, quotes included, when a string
	for i++; ; {
		i = scanSkipSpace(body, i)
		if i >= len(body) || body[i] == '}' {
			break
		}
		if body[i] == ',' {
			i++
			continue
		}
		if body[i] != '"' {
			break
		}
		keyEnd := scanStringEnd(body, i)
		if keyEnd < 0 {
			break
		}
		key := scanKey(body[i:keyEnd])
		i = scanSkipSpace(body, keyEnd)
		if i >= len(body) || body[i] != ':' {
			break
		}
		i = scanSkipSpace(body, i+1)
		if i >= len(body) {
			break
		}
		valueEnd := scanValueEnd(body, i)
		if valueEnd < 0 {
			break
		}
		switch key {
		case scanKeyModel:
			modelToken = nil
			if body[i] == '"' {
				modelToken = body[i:valueEnd]
			}
		case scanKeyStream:
			stream = string(body[i:valueEnd]) == "true"
		}
		i = valueEnd
	}
	return scanString(modelToken), stream, modelToken != nil, true
}

var utf8BOM = []byte("\xEF\xBB\xBF")

type scanKeyKind uint8

const (
	scanKeyOther scanKeyKind = iota
	scanKeyModel
	scanKeyStream
)

// scanKey tells which key a quoted token names. A key spelled with escapes
// ("\u006dodel") is decoded first, as encoding/json would; no client does that,
// so the allocation is off the usual path.
func scanKey(token []byte) scanKeyKind {
	raw := token[1 : len(token)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		var s string
		if json.Unmarshal(token, &s) != nil {
			return scanKeyOther
		}
		raw = []byte(s)
	}
	switch string(raw) {
	case "model":
		return scanKeyModel
	case "stream":
		return scanKeyStream
	}
	return scanKeyOther
}

// scanString returns the value of a quoted JSON string token, "" for nil or an
// invalid one. Plain tokens are copied; escapes and invalid UTF-8 (which
// encoding/json turns into U+FFFD) go through encoding/json.
func scanString(token []byte) string {
	if len(token) < 2 {
		return ""
	}
	raw := token[1 : len(token)-1]
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw)
	}
	var s string
	if json.Unmarshal(token, &s) != nil {
		return ""
	}
	return s
}

func scanSkipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanStringEnd returns the index just past the closing quote of the string whose
// opening quote is b[i], or -1 when the string is not closed. A quote ends the
// string when an even number of backslashes precedes it; \uXXXX holds neither.
func scanStringEnd(b []byte, i int) int {
	for j := i + 1; ; {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return -1
		}
		q += j
		n := 0
		for k := q - 1; k > i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
}

// scanValueEnd returns the index just past the value starting at b[i], or -1
// when a string, object or array is not closed. A scalar runs to the next
// delimiter or to the end of b. Brackets are counted, not matched by kind:
// garbage only has to end the scan, not be diagnosed.
func scanValueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return scanStringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end := scanStringEnd(b, i)
				if end < 0 {
					return -1
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return len(b)
}

// Usage is what one response consumed, from its usage object. Zero when unknown.
//
// Chat completions, embeddings and the Responses API name the counts differently;
// Usage holds them under one set of names.
type Usage struct {
	InputTokens     int64 `json:"input_tokens"`     // chat prompt_tokens, responses input_tokens, embeddings prompt_tokens
	OutputTokens    int64 `json:"output_tokens"`    // chat completion_tokens, responses output_tokens
	CachedTokens    int64 `json:"cached_tokens"`    // prompt_tokens_details.cached_tokens / input_tokens_details.cached_tokens
	ReasoningTokens int64 `json:"reasoning_tokens"` // completion_tokens_details.reasoning_tokens / output_tokens_details.reasoning_tokens
}

// meterCaptureMax bounds the bytes kept of one usage object. Real ones take a few
// hundred bytes; one that does not fit counts as not found rather than as garbage.
const meterCaptureMax = 4096

// usageMeter watches the bytes of a response as they are passed to the caller
// (it never changes or holds them beyond a small bounded window) and finds the
// usage object: for a JSON body the last top-level "usage":{...}; for an SSE
// stream the chat include_usage chunk ("usage":{...} in a data: line, others have
// "usage":null) or the Responses API's response.completed event (usage inside
// response.usage).
//
// It runs a streaming tokenizer rather than searching a tail window: it tracks
// strings (with escapes) and nesting depth across chunks, so a "usage" key only
// counts where it is a key of the document's top-level object, or of the object
// under the top-level "response" key; text such as \"usage\":{ inside a message
// is never taken for it. The only bytes it keeps are those of the usage object
// being read, at most meterCaptureMax. Each complete usage object is decoded once;
// the last one that decodes (integer counts, not negative, at least one of the
// token counts present) wins.
//
// In SSE mode the stream is cut into lines at \n, \r\n or \r, as the SSE spec
// says (sseLines), and only the values of data: lines are tokenized. Data lines of one event
// join with a newline, a blank line ends the event and resets the tokenizer, and
// so does a data line that ends inside a string (never valid JSON), so one broken
// line does not poison the rest of the stream.
//
// The zero value is ready for a JSON body; reset prepares it for another body.
// observe does not allocate except when it decodes a usage object. A usageMeter
// is not safe for simultaneous use.
type usageMeter struct {
	sse    bool
	found  bool
	result Usage

	// SSE line state.
	line     meterLine
	fieldN   int  // bytes of "data" matched at the start of the line
	lineSeen bool // the current line has at least one byte
	lines    sseLines

	tok meterTokenizer

	captureLen  int
	captureOver bool // the object being captured did not fit
	capture     [meterCaptureMax]byte
}

type meterLine uint8

const (
	meterLineField meterLine = iota // reading the field name
	meterLineSpace                  // after "data:", one space may follow
	meterLineData                   // in a data value
	meterLineSkip                   // in another field or a comment
)

type meterKey uint8

const (
	meterKeyOther meterKey = iota
	meterKeyUsage
	meterKeyResponse
)

// meterTokenizer is the state of the JSON tokenizer between chunks. Depth 0 is
// outside any value, depth 1 inside the top-level object.
type meterTokenizer struct {
	depth     int
	broken    bool // more closing than opening brackets: ignore the rest
	inString  bool
	oddEscape bool // inside a string, the bytes so far end in an odd run of backslashes
	expectKey bool // the next string is an object key
	object1   bool // the depth-1 container is an object
	object2   bool // the depth-2 container is an object
	inResp    bool // depth 2 is the object under the top-level "response" key

	keyWanted bool // the string being read is a key at depth 1 or 2 that may matter
	keyOther  bool // ... and it is not one we match
	keyLen    int
	key       [len("response")]byte
	pending   meterKey // the key whose value comes next

	capturing    bool
	captureDepth int // depth outside the usage object being captured
}

// reset readies m for a new body, an SSE stream when sse is true.
func (m *usageMeter) reset(sse bool) {
	m.sse = sse
	m.found = false
	m.result = Usage{}
	m.line = meterLineField
	m.fieldN = 0
	m.lineSeen = false
	m.lines = sseLines{}
	m.tok = meterTokenizer{}
	m.captureLen = 0
	m.captureOver = false
}

// usage returns the last usage object found; ok is false if there was none.
func (m *usageMeter) usage() (Usage, bool) {
	return m.result, m.found
}

// observe reads the next chunk of the body; chunks may split it anywhere.
func (m *usageMeter) observe(p []byte) {
	if !m.sse {
		m.feed(p)
		return
	}
	c := m.lines.cut(p)
	for {
		start, end, ended, ok := c.next()
		if !ok {
			return
		}
		m.lineBytes(p[start:end])
		if ended {
			m.endLine()
		}
	}
}

// lineBytes takes the next bytes of the current SSE line, without line breaks.
func (m *usageMeter) lineBytes(b []byte) {
	if len(b) > 0 {
		m.lineSeen = true
	}
	for len(b) > 0 {
		switch m.line {
		case meterLineField:
			c := b[0]
			if m.fieldN < len("data") && c == "data"[m.fieldN] {
				m.fieldN++
				b = b[1:]
				continue
			}
			if m.fieldN == len("data") && c == ':' {
				m.line = meterLineSpace
				b = b[1:]
				continue
			}
			m.line = meterLineSkip
			return
		case meterLineSpace:
			m.line = meterLineData
			if b[0] == ' ' {
				b = b[1:]
			}
		case meterLineData:
			m.feed(b)
			return
		default:
			return
		}
	}
}

// endLine handles the end of an SSE line.
func (m *usageMeter) endLine() {
	data := m.line == meterLineData || m.line == meterLineSpace ||
		m.line == meterLineField && m.fieldN == len("data")
	switch {
	case !m.lineSeen:
		m.tok = meterTokenizer{}
	case data && m.tok.inString:
		m.tok = meterTokenizer{}
	case data && m.tok.capturing:
		m.keep([]byte{'\n'})
	}
	m.line = meterLineField
	m.fieldN = 0
	m.lineSeen = false
}

// keep appends b to the usage object being captured.
func (m *usageMeter) keep(b []byte) {
	if m.captureOver {
		return
	}
	if len(b) > len(m.capture)-m.captureLen {
		m.captureOver = true
		return
	}
	m.captureLen += copy(m.capture[m.captureLen:], b)
}

// feed runs the JSON tokenizer over b.
func (m *usageMeter) feed(b []byte) {
	t := &m.tok
	if t.broken {
		return
	}
	captureFrom := 0
	for i := 0; i < len(b); {
		if t.inString {
			q := bytes.IndexByte(b[i:], '"')
			end := len(b)
			if q >= 0 {
				end = i + q
			}
			s := b[i:end]
			n := 0
			for n < len(s) && s[len(s)-1-n] == '\\' {
				n++
			}
			odd := n%2 == 1
			if n == len(s) && t.oddEscape {
				odd = !odd
			}
			if t.keyWanted {
				t.addKey(s)
			}
			if q < 0 {
				t.oddEscape = odd
				break
			}
			i = end + 1
			t.oddEscape = false
			if odd { // an escaped quote: still in the string
				t.keyOther = true
				continue
			}
			t.inString = false
			if t.keyWanted {
				t.keyWanted = false
				t.expectKey = false
				t.pending = t.keyKind()
			}
			continue
		}
		c := b[i]
		switch c {
		case ' ', '\t', '\n', '\r':
		case '"':
			t.inString = true
			t.oddEscape = false
			t.keyWanted = t.expectKey && (t.depth == 1 || t.depth == 2 && t.inResp)
			t.keyOther = false
			t.keyLen = 0
			if !t.keyWanted {
				t.pending = meterKeyOther
			}
		case ':':
			t.expectKey = false
		case ',':
			t.pending = meterKeyOther
			t.expectKey = t.depth == 1 && t.object1 || t.depth == 2 && t.object2
		case '{', '[':
			if c == '{' {
				switch {
				case t.pending == meterKeyUsage && !t.capturing:
					t.capturing = true
					t.captureDepth = t.depth
					captureFrom = i
					m.captureLen = 0
					m.captureOver = false
				case t.pending == meterKeyResponse && t.depth == 1:
					t.inResp = true
				}
			}
			t.pending = meterKeyOther
			t.depth++
			switch t.depth {
			case 1:
				t.object1 = c == '{'
			case 2:
				t.object2 = c == '{'
			}
			t.expectKey = c == '{'
		case '}', ']':
			t.pending = meterKeyOther
			t.expectKey = false
			t.depth--
			if t.depth < 0 {
				t.broken = true
				return
			}
			if t.depth <= 1 {
				t.inResp = false
			}
			if t.capturing && t.depth == t.captureDepth {
				t.capturing = false
				m.keep(b[captureFrom : i+1])
				m.decodeCapture()
			}
		default:
			t.pending = meterKeyOther
		}
		i++
	}
	if t.capturing {
		m.keep(b[captureFrom:])
	}
}

func (t *meterTokenizer) addKey(s []byte) {
	if t.keyOther {
		return
	}
	if len(s) > len(t.key)-t.keyLen || bytes.IndexByte(s, '\\') >= 0 {
		t.keyOther = true
		return
	}
	t.keyLen += copy(t.key[t.keyLen:], s)
}

// keyKind names the key just read. Keys spelled with escapes are not matched:
// the API never escapes its plain ASCII keys.
func (t *meterTokenizer) keyKind() meterKey {
	if t.keyOther {
		return meterKeyOther
	}
	switch string(t.key[:t.keyLen]) {
	case "usage":
		return meterKeyUsage
	case "response":
		return meterKeyResponse
	}
	return meterKeyOther
}

func (m *usageMeter) decodeCapture() {
	if m.captureOver {
		return
	}
	if u, ok := decodeUsage(m.capture[:m.captureLen]); ok {
		m.result = u
		m.found = true
	}
}

// decodeUsage decodes a chat, embeddings or Responses API usage object. ok is
// false unless it is a JSON object whose counts are non-negative integers and
// that has at least one token count.
func decodeUsage(b []byte) (Usage, bool) {
	// absent marks a count the object lacks; no JSON integer the API sends is
	// that value. A hand scan, not json.Unmarshal: this runs once per
	// response on the request path, and reflection cost more than the rest
	// of the transport's own work.
	const absent = math.MinInt64
	counts := [5]int64{absent, absent, absent, absent, absent} // prompt, completion, input, output, total
	var cached, reasoning int64
	ok := scanObject(b, func(key, val []byte) bool {
		switch string(key) {
		case "prompt_tokens":
			return scanCount(val, &counts[0])
		case "completion_tokens":
			return scanCount(val, &counts[1])
		case "input_tokens":
			return scanCount(val, &counts[2])
		case "output_tokens":
			return scanCount(val, &counts[3])
		case "total_tokens":
			return scanCount(val, &counts[4])
		case "prompt_tokens_details", "input_tokens_details":
			return scanDetail(val, "cached_tokens", &cached)
		case "completion_tokens_details", "output_tokens_details":
			return scanDetail(val, "reasoning_tokens", &reasoning)
		}
		return true
	})
	if !ok {
		return Usage{}, false
	}
	present := false
	for _, n := range counts {
		if n == absent {
			continue
		}
		if n < 0 {
			return Usage{}, false
		}
		present = true
	}
	if !present || cached < 0 || reasoning < 0 {
		return Usage{}, false
	}
	first := func(x, y int64) int64 {
		if x != absent {
			return x
		}
		return max(y, 0)
	}
	return Usage{
		InputTokens:     first(counts[0], counts[2]),
		OutputTokens:    first(counts[1], counts[3]),
		CachedTokens:    cached,
		ReasoningTokens: reasoning,
	}, true
}

// scanObject calls f with the raw key (between its quotes) and raw value of
// each member of the JSON object b, stopping when f returns false. It reports
// whether b was a well-formed object and f accepted every member.
func scanObject(b []byte, f func(key, val []byte) bool) bool {
	i := scanSkipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = scanSkipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return true
	}
	for i < len(b) && b[i] == '"' {
		end := scanStringEnd(b, i)
		if end < 0 {
			return false
		}
		key := b[i+1 : end-1]
		i = scanSkipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = scanSkipSpace(b, i+1)
		if i >= len(b) {
			return false
		}
		vend := scanValueEnd(b, i)
		if vend < 0 || !f(key, b[i:vend]) {
			return false
		}
		i = scanSkipSpace(b, vend)
		if i < len(b) && b[i] == '}' {
			return true
		}
		if i >= len(b) || b[i] != ',' {
			return false
		}
		i = scanSkipSpace(b, i+1)
	}
	return false
}

// scanCount reads a JSON integer (null leaves *n as it is); anything else,
// a fraction or an overflow included, is refused as json.Unmarshal would.
func scanCount(v []byte, n *int64) bool {
	if string(v) == "null" {
		return true
	}
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 {
		return false
	}
	var x int64
	for _, c := range v {
		if c < '0' || c > '9' || x > (math.MaxInt64-9)/10 {
			return false
		}
		x = x*10 + int64(c-'0')
	}
	if neg {
		x = -x
	}
	*n = x
	return true
}

// scanDetail reads one count out of a details object (null is no object);
// when both spellings of a details object are present the larger count wins.
func scanDetail(v []byte, name string, n *int64) bool {
	if string(v) == "null" {
		return true
	}
	return scanObject(v, func(key, val []byte) bool {
		if string(key) != name {
			return true
		}
		var x int64
		if !scanCount(val, &x) {
			return false
		}
		*n = max(*n, x)
		if x < 0 {
			*n = x // a negative count spoils the object
		}
		return true
	})
}
