package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Error types as OpenAI sends them in error.type.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeInsufficient   = "insufficient_quota"
	TypeServer         = "server_error"
	TypeUnavailable    = "service_unavailable_error"
)

// Error codes as OpenAI sends them in error.code.
const (
	CodeInvalidAPIKey     = "invalid_api_key"
	CodeModelNotFound     = "model_not_found"
	CodeRateLimitExceeded = "rate_limit_exceeded"
	CodeInsufficientQuota = "insufficient_quota"
	CodeMissingParam      = "missing_required_parameter"
	CodeInvalidJSON       = "invalid_json"
	CodeBodyTooLarge      = "request_too_large"
	CodeContextLength     = "context_length_exceeded"
	CodeNotFound          = "not_found"
	CodeNoCapacity        = "no_healthy_upstream"
)

// Error is an API error with the HTTP status it is answered with. It is the only error type a
// layer needs to return for a client-visible failure; WriteError renders it as
//
//	{"error":{"message":"...","type":"...","param":null,"code":"..."}}
//
// Empty Param and Code are rendered as JSON null, as OpenAI does.
type Error struct {
	Status  int
	Message string
	Type    string
	Param   string
	Code    string
	// NumericCode renders "code" as the integer Status instead of Code: the shape of vLLM's
	// ErrorResponse (vllm/entrypoints/openai/engine/protocol.py, ErrorInfo.code: int), used by
	// the engine simulator so its errors match a real vLLM replica on the wire.
	NumericCode bool
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

// Errorf returns an *Error with the given status, type and code, and a formatted message.
func Errorf(status int, typ, code, format string, args ...any) *Error {
	return &Error{Status: status, Type: typ, Code: code, Message: fmt.Sprintf(format, args...)}
}

// InvalidRequest is a 400 invalid_request_error about param (may be empty).
func InvalidRequest(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: code, Message: fmt.Sprintf(format, args...)}
}

// MissingParam is a 400 naming the missing required parameter, worded as OpenAI words it.
func MissingParam(param string) *Error {
	return InvalidRequest(param, CodeMissingParam, "Missing required parameter: '%s'.", param)
}

// ModelNotFound is OpenAI's 404 for a model that does not exist or that the caller may not use;
// both cases get the same answer so a caller cannot probe which models exist.
func ModelNotFound(model string) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "model", Code: CodeModelNotFound,
		Message: fmt.Sprintf("The model '%s' does not exist or you do not have access to it.", model)}
}

// Unauthorized is a 401 invalid_api_key with the given message.
func Unauthorized(format string, args ...any) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: TypeInvalidRequest, Code: CodeInvalidAPIKey, Message: fmt.Sprintf(format, args...)}
}

// NotFound is a 404 for an object (response, file, ...) that does not exist for this caller.
func NotFound(format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

// ErrBodyTooLarge is answered when a request body exceeds the configured limit.
var ErrBodyTooLarge = &Error{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest, Code: CodeBodyTooLarge,
	Message: "Request body too large."}

// ErrNoCapacity is answered when no healthy replica can take a request for a model that exists.
var ErrNoCapacity = &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeNoCapacity,
	Message: "No healthy replica is available for this model; retry later."}

// ErrUpstream is answered when the layer below failed in a way the client cannot act on. It
// carries no detail: internal detail never leaks to clients.
var ErrUpstream = &Error{Status: http.StatusBadGateway, Type: TypeServer, Message: "The upstream server failed to answer."}

// errInternal is what any error that is not an *Error becomes: no detail leaks.
var errInternal = &Error{Status: http.StatusInternalServerError, Type: TypeServer,
	Message: "The server had an error while processing your request."}

// AsError maps any error to the *Error a client sees. This is the one place that decides a
// status: *Error keeps its own, an oversized body (http.MaxBytesError) is 413, a cancelled or
// timed-out context is 499/504, anything else is a detail-free 500.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return ErrBodyTooLarge
	case errors.Is(err, context.Canceled):
		return &Error{Status: 499, Type: TypeInvalidRequest, Message: "Client closed the request."}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusGatewayTimeout, Type: TypeServer, Message: "The request timed out."}
	}
	return errInternal
}

type envelope struct {
	Error envelopeBody `json:"error"`
}

type envelopeBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// MarshalError renders err (mapped by AsError) as the OpenAI error envelope.
func MarshalError(err error) []byte {
	e := AsError(err)
	if e.NumericCode {
		b, _ := json.Marshal(struct {
			Error vllmErrorBody `json:"error"`
		}{vllmErrorBody{Message: e.Message, Type: e.Type, Param: nullable(e.Param), Code: e.Status}})
		return b
	}
	b, _ := json.Marshal(envelope{Error: envelopeBody{Message: e.Message, Type: e.Type, Param: nullable(e.Param), Code: nullable(e.Code)}})
	return b
}

// vllmErrorBody is vLLM's ErrorInfo: the same fields with an integer code.
type vllmErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

// WriteError answers err as the OpenAI error envelope with the status AsError gives.
func WriteError(w http.ResponseWriter, err error) {
	e := AsError(err)
	body := MarshalError(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

// ParseError reads an OpenAI error envelope from body, as returned by the layer below with the
// given status. It returns nil if body is not an envelope.
func ParseError(status int, body []byte) *Error {
	var env struct {
		Error *struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Param   *string         `json:"param"`
			Code    json.RawMessage `json:"code"` // vLLM sends an integer code, OpenAI a string
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == nil {
		return nil
	}
	e := &Error{Status: status, Message: env.Error.Message, Type: env.Error.Type}
	if env.Error.Param != nil {
		e.Param = *env.Error.Param
	}
	var code string
	if json.Unmarshal(env.Error.Code, &code) == nil {
		e.Code = code
	}
	return e
}
