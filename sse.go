package keypool

import (
	"bytes"
	"errors"
	"io"
	"net/http"
)

// sseLines cuts a server-sent event stream into lines at "\n", "\r\n" or
// "\r", the three line ends the SSE spec allows, over chunks that may split
// a line, or a "\r\n", anywhere. It is the one SSE line reader of the
// package: the usage meter and the first-event reader both read streams
// through it. The zero value is ready for the start of a stream.
type sseLines struct {
	afterCR bool // the last line ended in '\r': a '\n' that comes next belongs to it
}

// sseChunk walks the lines of one chunk; see sseLines.cut.
type sseChunk struct {
	lines  *sseLines
	p      []byte
	i      int // where the next run of line bytes starts
	nl, cr int // the next '\n' and '\r' at or after i; -1 none left, -2 not searched yet
}

// cut starts cutting chunk p, the bytes that follow the previous chunk's.
func (s *sseLines) cut(p []byte) sseChunk { return sseChunk{lines: s, p: p, nl: -2, cr: -2} }

// next returns the next run of line bytes in the chunk, p[start:end]: a
// whole line, or the part of one that falls in this chunk; ended reports
// that a line break follows it. ok is false once the chunk is used up.
// Each of '\n' and '\r' is searched for once per line at most, so a chunk
// costs linear time whichever line end it uses.
func (c *sseChunk) next() (start, end int, ended, ok bool) {
	p := c.p
	if c.i < len(p) && c.lines.afterCR {
		c.lines.afterCR = false
		if p[c.i] == '\n' {
			c.i++
		}
	}
	start = c.i
	if start >= len(p) {
		return start, start, false, false
	}
	if c.nl != -1 && c.nl < start {
		c.nl = indexFrom(p, start, '\n')
	}
	if c.cr != -1 && c.cr < start {
		c.cr = indexFrom(p, start, '\r')
	}
	end = len(p)
	if c.nl >= 0 {
		end = c.nl
	}
	if c.cr >= 0 && c.cr < end {
		end = c.cr
	}
	if end == len(p) {
		c.i = end
		return start, end, false, true
	}
	c.lines.afterCR = p[end] == '\r'
	c.i = end + 1
	return start, end, true, true
}

// indexFrom is the index of the first c in p at or after from, or -1.
func indexFrom(p []byte, from int, c byte) int {
	if k := bytes.IndexByte(p[from:], c); k >= 0 {
		return from + k
	}
	return -1
}

// firstEvent is what the lines of a stream's first event have said so far.
type firstEvent struct {
	start              int  // where the event starts in the bytes read
	dataStart, dataEnd int  // its first data line's value (the check needs no more)
	data               bool // it has a data line
	isErr              bool // its type is "error"
}

// line takes one line of the event, buf[start:end], without its line end.
func (e *firstEvent) line(buf []byte, start, end int) {
	line := buf[start:end]
	switch {
	case bytes.HasPrefix(line, []byte("data:")):
		if !e.data {
			v := bytes.TrimSpace(line[len("data:"):])
			e.dataStart = start + len("data:") + bytes.Index(line[len("data:"):], v)
			e.dataEnd, e.data = e.dataStart+len(v), true
		}
	case bytes.HasPrefix(line, []byte("event:")):
		e.isErr = string(bytes.TrimSpace(line[len("event:"):])) == "error"
	}
}

// apiError returns the event's error, when its type is "error" or its data
// holds one; nil otherwise.
func (e *firstEvent) apiError(buf []byte) *APIError {
	data := buf[e.dataStart:e.dataEnd]
	if e.data && (e.isErr || bytes.Contains(data, []byte(`"error"`))) {
		return ParseAPIError(http.StatusOK, data)
	}
	return nil
}

// readFirstEvent reads a stream up to the end of its first event with data
// (comment-only events are passed over), at most firstEventMax bytes. It
// returns what it read, and the event's error if the event is one.
func readFirstEvent(body io.Reader) ([]byte, *APIError, error) {
	buf := make([]byte, 0, 1024)
	var (
		lines     sseLines
		ev        firstEvent
		lineStart = -1 // where the line being read starts in buf; -1 before its first byte
	)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= firstEventMax {
				return buf, nil, nil // a long first event: not an error event
			}
			buf = append(buf, 0)[:len(buf)]
		}
		from := len(buf)
		n, err := body.Read(buf[from:cap(buf)])
		buf = buf[:from+n]
		c := lines.cut(buf[from:])
		for {
			start, end, ended, ok := c.next()
			if !ok {
				break
			}
			if lineStart < 0 {
				lineStart = from + start
			}
			if !ended {
				continue
			}
			if from+end > lineStart {
				ev.line(buf, lineStart, from+end)
			} else if ev.data { // a blank line ends the event
				return buf, ev.apiError(buf), nil
			} else { // a comment-only event, or none
				ev = firstEvent{start: from + c.i}
			}
			lineStart = -1
		}
		if err == io.EOF {
			if len(bytes.TrimSpace(buf)) == 0 {
				return nil, nil, errors.New("keypool: stream ended before its first event")
			}
			if lineStart >= 0 && len(buf) > lineStart {
				ev.line(buf, lineStart, len(buf)) // the stream's last line, without a line end
			}
			if ae := ev.apiError(buf); ae != nil {
				return buf, ae, nil
			}
			// An error body sent as an event stream, without "data:".
			return buf, ParseAPIError(http.StatusOK, buf[ev.start:]), nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}
