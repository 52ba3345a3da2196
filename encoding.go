package keypool

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The pool must read plain bytes whatever the caller asked for: an error's
// type, a usage object and an SSE event are invisible in gzip. So the
// transport never forwards a caller's Accept-Encoding: net/http's Transport
// then asks for gzip itself and decodes it, and an answer that arrives
// encoded anyway (another base RoundTripper, an upstream that ignores the
// request) is decoded here. A compressed request body is decoded before its
// model is read, so that allow and deny lists see what the upstream will.

// contentCoding names what decodeBody can undo; "" for identity, and ok
// false for a coding it cannot.
func contentCoding(h http.Header) (coding string, ok bool) {
	v := strings.ToLower(strings.TrimSpace(headerValue(h, "Content-Encoding")))
	switch v {
	case "", "identity":
		return "", true
	case "gzip", "x-gzip":
		return "gzip", true
	case "deflate":
		return "deflate", true
	}
	return v, false
}

// decodeResponse makes resp's body plain when the upstream encoded it in a
// coding the transport can undo, as net/http's Transport does for gzip.
func decodeResponse(resp *http.Response) {
	coding, ok := contentCoding(resp.Header)
	if coding == "" || !ok {
		return
	}
	resp.Body = &decodedBody{rc: resp.Body, coding: coding}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	resp.Uncompressed = true
}

// decodedBody decodes a body as it is read. The decoder starts on the first
// Read, so that building the response never blocks on the upstream.
type decodedBody struct {
	rc     io.ReadCloser
	coding string
	dec    io.Reader
	err    error
}

func (d *decodedBody) Read(p []byte) (int, error) {
	if d.dec == nil && d.err == nil {
		d.dec, d.err = newDecoder(d.rc, d.coding)
	}
	if d.err != nil {
		return 0, d.err
	}
	return d.dec.Read(p)
}

func (d *decodedBody) Close() error { return d.rc.Close() }

// newDecoder reads r in coding. "deflate" is zlib-wrapped per RFC 9110, but
// some servers send it raw: both are taken.
func newDecoder(r io.Reader, coding string) (io.Reader, error) {
	switch coding {
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("keypool: decoding a gzip answer: %w", err)
		}
		return zr, nil
	case "deflate":
		br := bufio.NewReaderSize(r, 64)
		head, err := br.Peek(2)
		if err != nil {
			return nil, fmt.Errorf("keypool: decoding a deflate answer: %w", err)
		}
		if head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("keypool: decoding a deflate answer: %w", err)
			}
			return zr, nil
		}
		return flate.NewReader(br), nil
	}
	return nil, fmt.Errorf("keypool: unknown content coding %q", coding)
}

// ErrBodyTooLarge refuses a request body that is larger than the buffer
// limit (WithMaxBodyBuffer) once decoded: a small compressed body can
// stand for a huge one.
var ErrBodyTooLarge = errors.New("keypool: request body too large once decoded")

// decodeRequestBody returns the plain bytes of a complete request body in
// coding, at most limit of them.
func decodeRequestBody(b []byte, coding string, limit int64) ([]byte, error) {
	dec, err := newDecoder(bytes.NewReader(b), coding)
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(dec, limit+1))
	if err != nil {
		return nil, fmt.Errorf("keypool: decoding the request body: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, ErrBodyTooLarge
	}
	return out, nil
}
