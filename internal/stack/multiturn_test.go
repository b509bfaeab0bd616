package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
)

const mtbenchPath = "../../../shared/data/prompts/mtbench_question.jsonl"

type mtbenchQuestion struct {
	QuestionID int      `json:"question_id"`
	Category   string   `json:"category"`
	Turns      []string `json:"turns"`
}

func loadMTBench(t testing.TB) []mtbenchQuestion {
	f, err := os.Open(mtbenchPath)
	if err != nil {
		t.Skipf("MT-Bench prompts not available (%v): this test needs ../shared/data beside the repository", err)
	}
	defer f.Close()
	var qs []mtbenchQuestion
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var q mtbenchQuestion
		require.NoError(t, json.Unmarshal(sc.Bytes(), &q))
		require.Len(t, q.Turns, 2)
		qs = append(qs, q)
	}
	require.NoError(t, sc.Err())
	return qs
}

// For every MT-Bench question, turn 2 (turn 1 + its answer + turn 2) must land on the replica
// that served turn 1 and find its prefix in that replica's cache. The replica and the cached
// tokens are read from the usage records, as an operator would.
func TestMultiTurnPrefixAffinity(t *testing.T) {
	qs := loadMTBench(t)
	ts := startStack(t, nil)
	ctx := context.Background()
	c := ts.client(devKey)

	sameReplica, hits := 0, 0
	var prompt2, cached2 int64
	replicas := map[string]int{}
	for _, q := range qs {
		id1, id2 := fmt.Sprintf("mt-%d-1", q.QuestionID), fmt.Sprintf("mt-%d-2", q.QuestionID)
		msgs := []oai.ChatCompletionMessageParamUnion{oai.UserMessage(q.Turns[0])}
		r1, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: ts.model, Messages: msgs, MaxTokens: oai.Int(64)},
			option.WithHeader("X-Request-Id", id1))
		require.NoError(t, err)
		msgs = append(msgs, oai.AssistantMessage(r1.Choices[0].Message.Content), oai.UserMessage(q.Turns[1]))
		r2, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: ts.model, Messages: msgs, MaxTokens: oai.Int(64)},
			option.WithHeader("X-Request-Id", id2))
		require.NoError(t, err)

		u1, u2 := ts.usage(t, id1), ts.usage(t, id2)
		require.NotNil(t, u1)
		require.NotNil(t, u2)
		replicas[u1.Endpoint]++
		if u1.Endpoint == u2.Endpoint {
			sameReplica++
		}
		if u2.CachedTokens > 0 {
			hits++
		}
		require.Equal(t, r2.Usage.PromptTokensDetails.CachedTokens, u2.CachedTokens)
		prompt2 += u2.PromptTokens
		cached2 += u2.CachedTokens
		require.Equal(t, u1.Endpoint, u2.Endpoint, "question %d: turn 2 must follow turn 1's replica", q.QuestionID)
		require.Positive(t, u2.CachedTokens, "question %d: turn 2 must hit the prefix cache", q.QuestionID)
	}
	t.Logf("MT-Bench multi-turn over %d questions: turn 2 on turn 1's replica %d/%d, prefix hit %d/%d (%.1f%%), cached/prompt tokens of turn 2 = %d/%d (%.1f%%); turn 1 spread over replicas %v",
		len(qs), sameReplica, len(qs), hits, len(qs), 100*float64(hits)/float64(len(qs)), cached2, prompt2,
		100*float64(cached2)/float64(prompt2), replicas)
	require.Greater(t, len(replicas), 1, "turn 1 requests spread over the replicas instead of piling on one")
}
