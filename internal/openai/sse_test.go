package openai

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func readAll(t testing.TB, in string) []*Event {
	r := NewSSEReader(strings.NewReader(in))
	var evs []*Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		require.NoError(t, err)
		evs = append(evs, ev)
	}
}

func TestSSEReader(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		data     []string
		events   []string
	}{
		{"openai chat", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []string{`{"a":1}`, "[DONE]"}, []string{"", ""}},
		{"crlf", "data: x\r\n\r\n", []string{"x"}, []string{""}},
		{"named", "event: response.created\ndata: {}\n\n", []string{"{}"}, []string{"response.created"}},
		{"multi-line data", "data: a\ndata: b\n\n", []string{"a\nb"}, []string{""}},
		{"comment and stray blank lines", ": keep-alive\n\n\ndata: y\n\n", []string{"y"}, []string{""}},
		{"unterminated last event", "data: z", []string{"z"}, []string{""}},
		{"no space after colon", "data:z\n\n", []string{"z"}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := readAll(t, tc.in)
			require.Len(t, evs, len(tc.data))
			var raw []byte
			for i, ev := range evs {
				require.Equal(t, tc.data[i], string(ev.Data))
				require.Equal(t, tc.events[i], ev.Event)
				raw = append(raw, ev.Raw...)
			}
			// Raw keeps every byte of every event, so a relay is byte-identical.
			require.True(t, strings.HasSuffix(tc.in, string(raw)) || strings.Contains(tc.in, string(raw)))
		})
	}
}

func TestSSEReaderLongLine(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	evs := readAll(t, "data: "+long+"\n\n")
	require.Len(t, evs, 1)
	require.Equal(t, long, string(evs[0].Data))

	_, err := NewSSEReader(strings.NewReader("data: " + strings.Repeat("y", MaxEventBytes+10) + "\n\n")).Next()
	require.ErrorIs(t, err, ErrEventTooLarge)
}

func TestSSEWriterRoundTrip(t *testing.T) {
	rec := httptest.NewRecorder()
	w := NewSSEWriter(rec)
	require.NoError(t, w.JSON(map[string]int{"a": 1}))
	require.NoError(t, w.Named("response.done", map[string]string{"b": "c"}))
	require.NoError(t, w.Done())
	require.Equal(t, "text/event-stream", rec.Header().Get("Content-Type"))
	require.True(t, rec.Flushed)
	evs := readAll(t, rec.Body.String())
	require.Len(t, evs, 3)
	require.Equal(t, `{"a":1}`, string(evs[0].Data))
	require.Equal(t, "response.done", evs[1].Event)
	require.True(t, evs[2].IsDone())
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: x\r\ndata: a\r\ndata: b\r\n\r\n: c\n"))
	f.Add([]byte("\n\n\ndata"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewSSEReader(bytes.NewReader(in))
		total := 0
		for {
			ev, err := r.Next()
			if err != nil {
				break
			}
			total += len(ev.Raw)
			require.LessOrEqual(t, total, len(in))
		}
	})
}
