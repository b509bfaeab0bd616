package openai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// DoneData is the data of the last event of an OpenAI stream: "data: [DONE]".
var DoneData = []byte("[DONE]")

// MaxEventBytes bounds one SSE event; a longer one is an error, not an allocation without end.
const MaxEventBytes = 4 << 20

// ErrEventTooLarge is returned by SSEReader.Next for an event over MaxEventBytes.
var ErrEventTooLarge = errors.New("sse: event exceeds 4 MiB")

// Event is one Server-Sent Event. Raw holds the exact bytes of the event including its blank
// terminating line, so a relay can forward it byte for byte.
type Event struct {
	Event string // the "event:" field; empty for OpenAI chat and completion streams
	Data  []byte // the "data:" lines joined by "\n"
	Raw   []byte
}

// IsDone reports whether the event is the "[DONE]" sentinel.
func (e *Event) IsDone() bool { return bytes.Equal(e.Data, DoneData) }

// SSEReader reads events from a text/event-stream body (WHATWG HTML §9.2.6). Lines end with "\n"
// or "\r\n" (a lone "\r", which no OpenAI-compatible server sends, is not a line end). Comment
// lines (":") and unknown fields are kept in Raw and otherwise ignored.
type SSEReader struct {
	r *bufio.Reader
}

// NewSSEReader returns a reader of the events in r.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{r: bufio.NewReaderSize(r, 16<<10)}
}

// Next returns the next event. At the end of the stream it returns io.EOF; a final event not
// terminated by a blank line is still returned first. Errors: ErrEventTooLarge, or the
// underlying reader's.
func (s *SSEReader) Next() (*Event, error) {
	ev := &Event{}
	var data [][]byte
	hasField := false
	for {
		line, err := s.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: gather it in pieces.
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if len(full)+len(ev.Raw) > MaxEventBytes {
					return nil, ErrEventTooLarge
				}
				line, err = s.r.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if len(line) > 0 {
			ev.Raw = append(ev.Raw, line...)
			if len(ev.Raw) > MaxEventBytes {
				return nil, ErrEventTooLarge
			}
			content := bytes.TrimRight(line, "\r\n")
			if len(content) == 0 {
				if hasField {
					ev.Data = bytes.Join(data, []byte("\n"))
					return ev, nil
				}
				ev.Raw = ev.Raw[:0] // stray blank line between events
			} else if content[0] != ':' {
				hasField = true
				field, value, _ := bytes.Cut(content, []byte(":"))
				value = bytes.TrimPrefix(value, []byte(" "))
				switch string(field) {
				case "data":
					data = append(data, append([]byte(nil), value...))
				case "event":
					ev.Event = string(value)
				}
			}
		}
		if err != nil {
			if err == io.EOF && hasField {
				ev.Data = bytes.Join(data, []byte("\n"))
				return ev, nil
			}
			return nil, err
		}
	}
}

// SSEWriter writes events to an http.ResponseWriter and flushes each at once.
type SSEWriter struct {
	w       io.Writer
	flusher http.Flusher
}

// NewSSEWriter sets the event-stream headers on w (if not yet written) and returns a writer.
func NewSSEWriter(w http.ResponseWriter) *SSEWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Del("Content-Length")
	f, _ := w.(http.Flusher)
	return &SSEWriter{w: w, flusher: f}
}

// Data writes "data: <data>\n\n" and flushes.
func (s *SSEWriter) Data(data []byte) error {
	return s.write(nil, data)
}

// JSON marshals v and writes it as one data event.
func (s *SSEWriter) JSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.write(nil, b)
}

// Named writes "event: <name>\ndata: <json of v>\n\n", the framing of the Responses API stream.
func (s *SSEWriter) Named(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.write([]byte(name), b)
}

// Done writes "data: [DONE]\n\n".
func (s *SSEWriter) Done() error { return s.write(nil, DoneData) }

// Raw writes bytes that are already framed, such as Event.Raw, and flushes.
func (s *SSEWriter) Raw(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	s.Flush()
	return nil
}

// Flush flushes the underlying writer if it can.
func (s *SSEWriter) Flush() {
	if s.flusher != nil {
		s.flusher.Flush()
	}
}

func (s *SSEWriter) write(event, data []byte) error {
	n := len(data) + 8
	if event != nil {
		n += len(event) + 8
	}
	buf := make([]byte, 0, n)
	if event != nil {
		buf = append(buf, "event: "...)
		buf = append(buf, event...)
		buf = append(buf, '\n')
	}
	buf = append(buf, "data: "...)
	buf = append(buf, data...)
	buf = append(buf, "\n\n"...)
	return s.Raw(buf)
}
