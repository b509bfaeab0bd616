package platform

import (
	"context"
	"encoding/json"
)

func (p *Platform) loadConversation(ctx context.Context, t *turn) error { return nil }

func (p *Platform) appendConversationItems(ctx context.Context, owner, conv string, items []json.RawMessage) error {
	return nil
}
