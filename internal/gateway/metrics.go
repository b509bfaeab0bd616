package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the gateway. No label names a tenant, key or request: cardinality stays bounded.
type metrics struct {
	requests         *prometheus.CounterVec // code: the HTTP status answered
	rateLimited      *prometheus.CounterVec // limit: "requests", "tokens" or "concurrency"
	authFailures     *prometheus.CounterVec // reason: "missing", "invalid" or "revoked"
	tokens           *prometheus.CounterVec // kind: "prompt", "cached" or "completion"
	usageWriteErrors prometheus.Counter
	usageDuplicates  prometheus.Counter
	quotaRefused     *prometheus.CounterVec // limit: "quota" or "spend"
	backendErrors    *prometheus.CounterVec // limit: "rates", "concurrency", "quota" or "spend"
	failedOpen       *prometheus.CounterVec // limit: as backendErrors
	adminRequests    *prometheus.CounterVec // code: the HTTP status the admin API answered
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_gateway_requests_total",
			Help: "Requests answered by the gateway, by HTTP status code.",
		}, []string{"code"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_gateway_rate_limited_total",
			Help: "Requests refused with 429 by a rate limit, by limit (requests, tokens or concurrency).",
		}, []string{"limit"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_gateway_auth_failures_total",
			Help: "Requests refused with 401, by reason (missing, invalid or revoked key).",
		}, []string{"reason"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_gateway_tokens_total",
			Help: "Tokens metered into usage records, by kind (prompt, cached, completion); cached tokens are part of prompt tokens.",
		}, []string{"kind"}),
		usageWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_gateway_usage_write_errors_total",
			Help: "Usage records that could not be written to the store (each is also logged at error level with its content).",
		}),
		usageDuplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_gateway_usage_duplicates_total",
			Help: "Usage records not written because a record with the same request id existed.",
		}),
	}
	m.quotaRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strata_gateway_insufficient_quota_total",
		Help: "Requests refused with 429 insufficient_quota, by limit (quota: monthly tokens, spend: monthly spend cap).",
	}, []string{"limit"})
	m.backendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strata_gateway_admission_backend_errors_total",
		Help: "Admission checks and settlements that could not reach the admission backend (Redis), by limit.",
	}, []string{"limit"})
	m.failedOpen = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strata_gateway_admission_failed_open_total",
		Help: "Admission checks skipped because the backend was unreachable and the limit fails open, by limit.",
	}, []string{"limit"})
	m.adminRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strata_gateway_admin_requests_total",
		Help: "Requests answered by the admin API (/admin/v1), by HTTP status code (401: bad admin token, 403: missing scope).",
	}, []string{"code"})
	for _, c := range []prometheus.Collector{m.requests, m.rateLimited, m.authFailures, m.tokens, m.usageWriteErrors, m.usageDuplicates,
		m.quotaRefused, m.backendErrors, m.failedOpen, m.adminRequests} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, l := range []string{"requests", "tokens", "concurrency"} {
		m.rateLimited.WithLabelValues(l)
	}
	for _, l := range []string{"quota", "spend"} {
		m.quotaRefused.WithLabelValues(l)
	}
	for _, l := range []string{"rates", "concurrency", "quota", "spend"} {
		m.backendErrors.WithLabelValues(l)
		m.failedOpen.WithLabelValues(l)
	}
	for _, r := range []string{"missing", "invalid", "revoked"} {
		m.authFailures.WithLabelValues(r)
	}
	for _, k := range []string{"prompt", "cached", "completion"} {
		m.tokens.WithLabelValues(k)
	}
	return m, nil
}
