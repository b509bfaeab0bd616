package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// The Conversations API (https://platform.openai.com/docs/api-reference/conversations, as
// encoded by openai-go v3 conversations.Conversation, ConversationItemList,
// ConversationDeletedResource): durable item lists that /v1/responses reads as history and
// appends each turn's input and output to. Conversations belong to the owner that created them
// (ownerOf); another owner's id answers 404.

// maxItemsPerCall bounds the items of one create or append call, as OpenAI does.
const maxItemsPerCall = 20

// conversation is the Conversation object.
type conversation struct {
	ID        string          `json:"id"`
	Object    string          `json:"object"` // "conversation"
	CreatedAt int64           `json:"created_at"`
	Metadata  json.RawMessage `json:"metadata"`
}

// deletedConversation is the answer of DELETE /v1/conversations/{id}.
type deletedConversation struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "conversation.deleted"
	Deleted bool   `json:"deleted"`
}

func (p *Platform) routeConversations() {
	const base = "/v1/conversations"
	p.routeOwned("POST "+base, base, p.createConversation)
	p.routeOwned("GET "+base+"/{id}", base+"/{id}", p.getConversation)
	p.routeOwned("POST "+base+"/{id}", base+"/{id}", p.updateConversation)
	p.routeOwned("DELETE "+base+"/{id}", base+"/{id}", p.deleteConversation)
	p.routeOwned("GET "+base+"/{id}/items", base+"/{id}/items", p.listConversationItems)
	p.routeOwned("POST "+base+"/{id}/items", base+"/{id}/items", p.createConversationItems)
	p.routeOwned("GET "+base+"/{id}/items/{item}", base+"/{id}/items/{item}", p.getConversationItem)
	p.routeOwned("DELETE "+base+"/{id}/items/{item}", base+"/{id}/items/{item}", p.deleteConversationItem)
}

// readObject reads a JSON object body into its fields, allowing only the names in allowed.
// An empty body is an empty object. Errors: 400 invalid_json, invalid_type,
// unknown_parameter.
func readObject(r *http.Request, allowed ...string) (map[string]json.RawMessage, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return map[string]json.RawMessage{}, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		if json.Valid(body) {
			return nil, openai.InvalidRequest("", codeInvalidType, "Invalid type for request body: expected an object, but got %s instead.", kind(body))
		}
		return nil, openai.InvalidRequest("", openai.CodeInvalidJSON, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
	}
	for k := range fields {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return nil, openai.InvalidRequest(k, codeUnknownParameter, "Unknown parameter: '%s'.", k)
		}
	}
	return fields, nil
}

// parseItems decodes a list of 0..20 items (name is the parameter, "items") and renders each as
// the API lists it.
func parseItems(name string, raw json.RawMessage, required bool) ([]store.ConversationItem, error) {
	if isNull(raw) {
		if required {
			return nil, openai.MissingParam(name)
		}
		return nil, nil
	}
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		return nil, invalidType(name, "an array", raw)
	}
	if len(elems) > maxItemsPerCall {
		return nil, openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", name, maxItemsPerCall, len(elems))
	}
	if required && len(elems) == 0 {
		return nil, openai.InvalidRequest(name, "empty_array", "Invalid '%s': empty array. Expected an array with minimum length 1, but got an empty array instead.", name)
	}
	out := make([]store.ConversationItem, 0, len(elems))
	for i, e := range elems {
		it, err := parseItem(fmt.Sprintf("%s[%d]", name, i), e)
		if err != nil {
			return nil, err
		}
		out = append(out, store.ConversationItem{ID: it.ID, Item: listItem(it)})
	}
	return out, nil
}

// metadataJSON checks metadata and renders it ({} when absent).
func metadataJSON(raw json.RawMessage) (json.RawMessage, error) {
	m, err := parseMetadata(raw)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]string{}
	}
	return json.Marshal(m)
}

// convNotFound maps store.ErrNotFound to OpenAI's 404 for a conversation.
func convNotFound(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return openai.NotFound("Conversation with id '%s' not found.", id)
	}
	return err
}

func writeValue(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	writeJSON(w, b)
}

func renderConversation(c *store.Conversation) *conversation {
	return &conversation{ID: c.ID, Object: "conversation", CreatedAt: c.CreatedAt.Unix(), Metadata: c.Metadata}
}

// createConversation answers POST /v1/conversations {items?, metadata?}.
func (p *Platform) createConversation(w http.ResponseWriter, r *http.Request, owner string) {
	fields, err := readObject(r, "items", "metadata")
	if err != nil {
		p.fail(w, err)
		return
	}
	items, err := parseItems("items", fields["items"], false)
	if err != nil {
		p.fail(w, err)
		return
	}
	meta, err := metadataJSON(fields["metadata"])
	if err != nil {
		p.fail(w, err)
		return
	}
	now := p.clk.Now()
	for i := range items {
		items[i].CreatedAt = now
	}
	c := &store.Conversation{ID: newID("conv_"), Owner: owner, CreatedAt: now, Metadata: meta}
	if err := p.st.CreateConversation(r.Context(), c, items); err != nil {
		p.fail(w, duplicateItem(err))
		return
	}
	writeValue(w, renderConversation(c))
}

// duplicateItem maps store.ErrExists on items to a 400.
func duplicateItem(err error) error {
	if errors.Is(err, store.ErrExists) {
		return openai.InvalidRequest("items", codeInvalidValue, "Invalid 'items': an item with the same id is already in the conversation.")
	}
	return err
}

// getConversation answers GET /v1/conversations/{id}.
func (p *Platform) getConversation(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	c, err := p.st.GetConversation(r.Context(), owner, id)
	if err != nil {
		p.fail(w, convNotFound(id, err))
		return
	}
	writeValue(w, renderConversation(c))
}

// updateConversation answers POST /v1/conversations/{id} {metadata}: metadata is replaced.
func (p *Platform) updateConversation(w http.ResponseWriter, r *http.Request, owner string) {
	fields, err := readObject(r, "metadata")
	if err != nil {
		p.fail(w, err)
		return
	}
	if _, ok := fields["metadata"]; !ok {
		p.fail(w, openai.MissingParam("metadata"))
		return
	}
	meta, err := metadataJSON(fields["metadata"])
	if err != nil {
		p.fail(w, err)
		return
	}
	id := r.PathValue("id")
	c, err := p.st.UpdateConversationMetadata(r.Context(), owner, id, meta)
	if err != nil {
		p.fail(w, convNotFound(id, err))
		return
	}
	writeValue(w, renderConversation(c))
}

// deleteConversation answers DELETE /v1/conversations/{id}; its items go with it. Responses
// created in it stay (they hold their own copy of the history).
func (p *Platform) deleteConversation(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	if err := p.st.DeleteConversation(r.Context(), owner, id); err != nil {
		p.fail(w, convNotFound(id, err))
		return
	}
	writeValue(w, deletedConversation{ID: id, Object: "conversation.deleted", Deleted: true})
}

// listConversationItems answers GET /v1/conversations/{id}/items with limit (1..100, default
// 20), order (asc | desc, default desc) and after (an item id). include is accepted and
// ignored: Strata's items carry no optional parts yet.
func (p *Platform) listConversationItems(w http.ResponseWriter, r *http.Request, owner string) {
	q := r.URL.Query()
	page := store.ItemPage{Limit: 20, Desc: true, After: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			p.fail(w, openai.InvalidRequest("limit", codeInvalidValue, "Invalid 'limit': expected an integer between 1 and 100, but got '%s'.", v))
			return
		}
		page.Limit = n
	}
	switch o := q.Get("order"); o {
	case "", "desc":
	case "asc":
		page.Desc = false
	default:
		p.fail(w, invalidValue("order", o, "'asc' and 'desc'"))
		return
	}
	id := r.PathValue("id")
	if page.After != "" {
		if _, err := p.st.GetConversationItem(r.Context(), owner, id, page.After); errors.Is(err, store.ErrNotFound) {
			if _, err := p.st.GetConversation(r.Context(), owner, id); err != nil {
				p.fail(w, convNotFound(id, err))
				return
			}
			p.fail(w, openai.InvalidRequest("after", codeInvalidValue, "Invalid 'after': no item with id '%s' in conversation '%s'.", page.After, id))
			return
		}
	}
	items, more, err := p.st.ListConversationItems(r.Context(), owner, id, page)
	if err != nil {
		p.fail(w, convNotFound(id, err))
		return
	}
	writeValue(w, itemPage(items, more))
}

// itemPage renders items as a list page.
func itemPage(items []store.ConversationItem, more bool) itemList {
	page := itemList{Object: "list", Data: make([]json.RawMessage, len(items)), HasMore: more}
	for i, it := range items {
		page.Data[i] = it.Item
	}
	if len(items) > 0 {
		first, last := items[0].ID, items[len(items)-1].ID
		page.FirstID, page.LastID = &first, &last
	}
	return page
}

// createConversationItems answers POST /v1/conversations/{id}/items {items}: 1..20 items
// appended in order, answered as a list of the added items.
func (p *Platform) createConversationItems(w http.ResponseWriter, r *http.Request, owner string) {
	fields, err := readObject(r, "items")
	if err != nil {
		p.fail(w, err)
		return
	}
	items, err := parseItems("items", fields["items"], true)
	if err != nil {
		p.fail(w, err)
		return
	}
	now := p.clk.Now()
	for i := range items {
		items[i].CreatedAt = now
	}
	id := r.PathValue("id")
	if err := p.st.AppendConversationItems(r.Context(), owner, id, items); err != nil {
		p.fail(w, duplicateItem(convNotFound(id, err)))
		return
	}
	writeValue(w, itemPage(items, false))
}

// getConversationItem answers GET /v1/conversations/{id}/items/{item}.
func (p *Platform) getConversationItem(w http.ResponseWriter, r *http.Request, owner string) {
	id, itemID := r.PathValue("id"), r.PathValue("item")
	it, err := p.st.GetConversationItem(r.Context(), owner, id, itemID)
	if err != nil {
		p.fail(w, p.itemNotFound(r.Context(), owner, id, itemID, err))
		return
	}
	writeJSON(w, it.Item)
}

// deleteConversationItem answers DELETE /v1/conversations/{id}/items/{item} with the
// conversation, as OpenAI does.
func (p *Platform) deleteConversationItem(w http.ResponseWriter, r *http.Request, owner string) {
	id, itemID := r.PathValue("id"), r.PathValue("item")
	if err := p.st.DeleteConversationItem(r.Context(), owner, id, itemID); err != nil {
		p.fail(w, p.itemNotFound(r.Context(), owner, id, itemID, err))
		return
	}
	c, err := p.st.GetConversation(r.Context(), owner, id)
	if err != nil {
		p.fail(w, convNotFound(id, err))
		return
	}
	writeValue(w, renderConversation(c))
}

// itemNotFound names what is missing: the conversation, or the item in it.
func (p *Platform) itemNotFound(ctx context.Context, owner, conv, item string, err error) error {
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, cerr := p.st.GetConversation(ctx, owner, conv); cerr != nil {
		return convNotFound(conv, cerr)
	}
	return openai.NotFound("Item with id '%s' not found in conversation '%s'.", item, conv)
}

// loadConversation reads the conversation of a turn as its history: every item, oldest first,
// as chat messages. The conversation id is the turn's X-Strata-Session, so every response of
// it stays on a warm replica. Items of server-side tools (not yet produced) are skipped.
// Errors: 404 when the conversation does not exist for the owner, 400 when an input item
// repeats the id of an item already in it.
func (p *Platform) loadConversation(ctx context.Context, t *turn) error {
	id := t.req.Conversation
	items, err := p.st.ConversationItems(ctx, t.owner, id)
	if errors.Is(err, store.ErrNotFound) {
		e := openai.NotFound("Conversation with id '%s' not found.", id)
		e.Param = "conversation"
		return e
	}
	if err != nil {
		return err
	}
	parsed := make([]inputItem, 0, len(items))
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		seen[it.ID] = true
		t.historyItems = append(t.historyItems, it.Item)
		in, err := parseItem("conversation", it.Item)
		if err != nil {
			continue // an item type the chat translation has no place for
		}
		parsed = append(parsed, in)
	}
	for i, in := range t.req.Input {
		if seen[in.ID] {
			return openai.InvalidRequest(fmt.Sprintf("input[%d].id", i), codeInvalidValue,
				"Invalid 'input[%d].id': an item with id '%s' is already in conversation '%s'.", i, in.ID, id)
		}
	}
	t.history = chatMessages(parsed)
	t.conv, t.session = id, id
	return nil
}

// appendConversationItems appends a turn's rendered input and output items to its conversation.
func (p *Platform) appendConversationItems(ctx context.Context, owner, conv string, items []json.RawMessage) error {
	now := p.clk.Now()
	out := make([]store.ConversationItem, len(items))
	for i, it := range items {
		out[i] = store.ConversationItem{ID: itemIDOf(it), CreatedAt: now, Item: it}
	}
	if err := p.st.AppendConversationItems(ctx, owner, conv, out); err != nil {
		return fmt.Errorf("platform: append to conversation %s: %w", conv, err)
	}
	return nil
}
