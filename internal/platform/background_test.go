package platform

import (
	"io"
	"net/http"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

// blockingEngine answers chats like the fake engine, but only once released; entered receives
// a value when a request arrives. A request whose client goes away ends unanswered.
func blockingEngine(env *testEnv) (entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}, 8), make(chan struct{})
	env.eng.setHandler(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		req, _ := openai.ParseInferenceRequest(openai.PathChatCompletions, mustRead(r))
		answerChat(w, req)
	})
	return entered, release
}

func TestBackgroundResponse(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	entered, release := blockingEngine(env)

	res, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("in the background"), Background: oai.Bool(true)})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusQueued, res.Status)
	require.True(t, res.Background)
	<-entered
	got, err := c.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusInProgress, got.Status)

	_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("next"), PreviousResponseID: oai.String(res.ID)})
	requireAPIError(t, err, 400, codeInvalidValue)

	close(release)
	env.p.bg.wg.Wait()
	got, err = c.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCompleted, got.Status)
	require.Equal(t, "You said: in the background", got.OutputText())
	require.True(t, got.Background)

	// Cancelling a finished background response answers it as it is.
	cancelled, err := c.Responses.Cancel(ctx, res.ID)
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCompleted, cancelled.Status)

	// A continuation works once it is done.
	next, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("next"), PreviousResponseID: oai.String(res.ID)})
	require.NoError(t, err)
	require.Equal(t, "You said: next", next.OutputText())
	_, err = c.Responses.Cancel(ctx, next.ID)
	requireAPIError(t, err, 400, codeInvalidValue)
	_, err = env.client("sk-bob").Responses.Cancel(ctx, res.ID)
	requireAPIError(t, err, 404, "not_found")
}

func TestBackgroundCancel(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	entered, _ := blockingEngine(env)
	res, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("long"), Background: oai.Bool(true)})
	require.NoError(t, err)
	<-entered
	cancelled, err := c.Responses.Cancel(ctx, res.ID)
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCancelled, cancelled.Status)
	got, err := c.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCancelled, got.Status)
}

// Close cancels what still runs: the response ends cancelled, and new background requests
// are refused.
func TestBackgroundClose(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	entered, _ := blockingEngine(env)
	res, err := c.Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("x"), Background: oai.Bool(true)})
	require.NoError(t, err)
	<-entered
	env.p.Close()
	got, err := c.Responses.Get(t.Context(), res.ID, responses.ResponseGetParams{})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCancelled, got.Status)
	_, err = c.Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("x"), Background: oai.Bool(true)})
	requireAPIError(t, err, 503, "")
}

func mustRead(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}
