package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// redisBackend keeps admission state in Redis, shared by every gateway replica using the same
// Redis and key prefix. Rates are redis_rate's GCRA (the same semantics as limiter, timed by the
// Redis server's clock); concurrency slots and budget reservations are Lua scripts, so each check
// and its update are one atomic step however many replicas race. Every key expires on its own,
// so a dead tenant or an old month leaves nothing behind.
type redisBackend struct {
	rdb    *redis.Client
	rate   *redis_rate.Limiter
	prefix string
}

// newRedisBackend connects to the Redis of url (go-redis ParseURL syntax). It does not ping:
// an unreachable Redis is the fail-open/closed policy's concern, request by request.
func newRedisBackend(url, prefix string) (*redisBackend, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("gateway: redis url: %w", err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = time.Second, time.Second, time.Second
	// Every admitted request makes a few short Redis calls; a burst of requests waits for a
	// connection rather than failing its limit's open/closed policy at once.
	opt.PoolSize, opt.PoolTimeout = 64, 5*time.Second
	opt.MaxRetries = 1
	// Fail fast when Redis is down: the fail-open/closed policy answers, not a minute of retries.
	opt.DialerRetries, opt.DialerRetryTimeout = 1, 10*time.Millisecond
	rdb := redis.NewClient(opt)
	return &redisBackend{rdb: rdb, rate: redis_rate.NewLimiter(rdb), prefix: prefix}, nil
}

func (r *redisBackend) Close() error { return r.rdb.Close() }

func backendErr(err error) error { return fmt.Errorf("%w: %w", errBackend, err) }

// redisRatePrefix is the prefix redis_rate puts before every key it is given (rate.go).
const redisRatePrefix = "rate:"

func rateLimit(perMinute int) redis_rate.Limit {
	return redis_rate.Limit{Rate: perMinute, Burst: perMinute, Period: window}
}

// verdictOf maps a redis_rate result to the verdict of limits.go.
func verdictOf(res *redis_rate.Result, limit int) verdict {
	v := verdict{limit: limit, remaining: max(res.Remaining, 0), reset: max(res.ResetAfter, 0)}
	if res.Allowed == 0 && res.RetryAfter > 0 {
		v.retry = res.RetryAfter
	}
	return v
}

func (r *redisBackend) admitRates(ctx context.Context, bucket string, rpm, tpm int, tokens int64, strict bool) (admission, error) {
	var a admission
	tooLarge := tpm > 0 && tokens > int64(tpm)
	if tooLarge {
		tokens = int64(tpm)
	}
	reqKey, tokKey := r.prefix+"rpm:"+bucket, r.prefix+"tpm:"+bucket
	peekTokens := func() error {
		if tpm <= 0 {
			return nil
		}
		res, err := r.rate.AllowN(ctx, tokKey, rateLimit(tpm), 0)
		if err != nil {
			return backendErr(err)
		}
		a.tokens = verdictOf(res, tpm)
		return nil
	}
	if tooLarge && strict {
		a.rejected, a.tooLarge = "tokens", true
		if rpm > 0 {
			res, err := r.rate.AllowN(ctx, reqKey, rateLimit(rpm), 0)
			if err != nil {
				return a, backendErr(err)
			}
			a.requests = verdictOf(res, rpm)
		}
		err := peekTokens()
		a.tokens.retry = 0
		return a, err
	}
	if rpm > 0 {
		res, err := r.rate.AllowN(ctx, reqKey, rateLimit(rpm), 1)
		if err != nil {
			return a, backendErr(err)
		}
		a.requests = verdictOf(res, rpm)
		if res.Allowed == 0 {
			a.rejected = "requests"
			return a, peekTokens()
		}
	}
	if tpm > 0 {
		res, err := r.rate.AllowN(ctx, tokKey, rateLimit(tpm), int(tokens))
		if err != nil {
			return a, backendErr(err)
		}
		a.tokens = verdictOf(res, tpm)
		if res.Allowed == 0 {
			a.rejected = "tokens"
			if rpm > 0 { // give the request back: a refused request spends nothing
				if res, err := r.rate.AllowN(ctx, reqKey, rateLimit(rpm), -1); err == nil {
					a.requests = verdictOf(res, rpm)
				}
			}
			return a, nil
		}
		a.charged = tokens
	}
	return a, nil
}

// settleRates corrects the token bucket by actual-charged tokens, as limiter.settle does: TAT
// moves by the difference's interval, never below now (a refund cannot grant more than the burst).
func (r *redisBackend) settleRates(ctx context.Context, bucket string, tpm int, charged, actual int64) error {
	if tpm <= 0 || actual == charged {
		return nil
	}
	d := interval(actual-charged, tpm)
	if actual < charged {
		d = -interval(charged-actual, tpm)
	}
	if err := adjustTATScript.Run(ctx, r.rdb, []string{redisRatePrefix + r.prefix + "tpm:" + bucket}, d.Seconds()).Err(); err != nil {
		return backendErr(err)
	}
	return nil
}

// adjustTATScript moves a redis_rate TAT (float seconds since 2017-01-01, redis_rate's lua.go) by
// ARGV[1] seconds from max(TAT, now), deleting the key when the result is not after now (an empty
// bucket, as redis_rate itself leaves it).
var adjustTATScript = redis.NewScript(`
local now = redis.call("TIME")
now = (now[1] - 1483228800) + (now[2] / 1000000)
local tat = tonumber(redis.call("GET", KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + tonumber(ARGV[1])
if tat <= now then
	redis.call("DEL", KEYS[1])
else
	redis.call("SET", KEYS[1], tat, "EX", math.ceil(tat - now))
end
return 1
`)

// redisNowMS is Lua computing the Redis server's time in Unix milliseconds as `now`: leases and
// reservations are compared with one clock however many replicas (with however skewed clocks)
// write them.
const redisNowMS = `local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// acquireScript: KEYS[1] a sorted set of request ids scored by lease expiry (Unix ms); ARGV
// limit, request id, ttl_ms. Drops expired leases, then takes a slot if one is free.
var acquireScript = redis.NewScript(redisNowMS + `
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
if redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local exp = now + tonumber(ARGV[3])
redis.call("ZADD", KEYS[1], exp, ARGV[2])
if redis.call("PTTL", KEYS[1]) < tonumber(ARGV[3]) then redis.call("PEXPIRE", KEYS[1], ARGV[3]) end
return 1
`)

func (r *redisBackend) acquire(ctx context.Context, bucket, requestID string, limit int64, ttl time.Duration) (bool, error) {
	n, err := acquireScript.Run(ctx, r.rdb, []string{r.prefix + "conc:" + bucket}, limit, requestID, ttl.Milliseconds()).Int()
	if err != nil {
		return false, backendErr(err)
	}
	return n == 1, nil
}

func (r *redisBackend) release(ctx context.Context, bucket, requestID string) error {
	if err := r.rdb.ZRem(ctx, r.prefix+"conc:"+bucket, requestID).Err(); err != nil {
		return backendErr(err)
	}
	return nil
}

// reserveScript: KEYS used (string, settled usage), res (hash request id -> amount), exp (zset
// request id -> expiry, Unix ms), total (string, sum of res); ARGV limit, amount, request id,
// ttl_ms, key lifetime in seconds. Returns {-1, 0} when the period's usage is not loaded yet,
// {0, used+reserved} when refused, {1, used+reserved} when granted.
var reserveScript = redis.NewScript(redisNowMS + `
local expired = redis.call("ZRANGEBYSCORE", KEYS[3], "-inf", now)
for _, id in ipairs(expired) do
	local a = redis.call("HGET", KEYS[2], id)
	if a then
		redis.call("HDEL", KEYS[2], id)
		redis.call("DECRBY", KEYS[4], a)
	end
end
if #expired > 0 then redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now) end
local used = redis.call("GET", KEYS[1])
if not used then return {-1, 0} end
used = tonumber(used)
local reserved = tonumber(redis.call("GET", KEYS[4]) or "0")
local amount = tonumber(ARGV[2])
if used + reserved + amount > tonumber(ARGV[1]) then return {0, used + reserved} end
if redis.call("HSETNX", KEYS[2], ARGV[3], amount) == 1 then
	redis.call("ZADD", KEYS[3], now + tonumber(ARGV[4]), ARGV[3])
	redis.call("INCRBY", KEYS[4], amount)
	reserved = reserved + amount
end
for i = 2, 4 do redis.call("EXPIRE", KEYS[i], ARGV[5]) end
return {1, used + reserved}
`)

// settleScript: KEYS as reserveScript plus KEYS[5], the settlement's marker; ARGV request id,
// actual, marker lifetime in seconds. Ends the reservation (if it did not expire) and adds actual
// to the settled usage, when that usage is loaded (otherwise the ledger, read when it is loaded,
// has it). Idempotent: a client retry of a call whose answer was lost (a read timeout) finds the
// marker and changes nothing, so usage is never counted twice.
var settleScript = redis.NewScript(`
if not redis.call("SET", KEYS[5], "1", "NX", "EX", ARGV[3]) then return 0 end
local a = redis.call("HGET", KEYS[2], ARGV[1])
if a then
	redis.call("HDEL", KEYS[2], ARGV[1])
	redis.call("ZREM", KEYS[3], ARGV[1])
	redis.call("DECRBY", KEYS[4], a)
end
if redis.call("EXISTS", KEYS[1]) == 1 then redis.call("INCRBY", KEYS[1], ARGV[2]) end
return 1
`)

// settleMarkerTTL is how long a settlement's marker lives: longer than any client retry of the
// call (seconds), short enough that markers do not pile up (one small key per request).
const settleMarkerTTL = 5 * time.Minute

// budgetLifetime is how long a budget's keys outlive their last use: past the end of any month.
const budgetLifetime = 40 * 24 * time.Hour

func (r *redisBackend) budgetKeys(b budgetKey) []string {
	k := r.prefix + "budget:{" + b.String() + "}:" // one hash slot for Redis Cluster
	return []string{k + "used", k + "res", k + "exp", k + "total"}
}

func (r *redisBackend) reserve(ctx context.Context, b budgetKey, requestID string, amount, limit int64, ttl time.Duration, base func(context.Context) (int64, error)) (bool, int64, error) {
	keys := r.budgetKeys(b)
	for attempt := 0; ; attempt++ {
		res, err := reserveScript.Run(ctx, r.rdb, keys, limit, amount, requestID, ttl.Milliseconds(), int64(budgetLifetime/time.Second)).Int64Slice()
		if err != nil {
			return false, 0, backendErr(err)
		}
		if res[0] >= 0 {
			return res[0] == 1, res[1], nil
		}
		if attempt > 0 {
			return false, 0, backendErr(errors.New("budget usage vanished while loading"))
		}
		used, err := base(ctx)
		if err != nil {
			return false, 0, fmt.Errorf("gateway: loading %s from the ledger: %w", b, err)
		}
		// SET NX: the first replica to load wins; the others' loads of the same ledger are dropped.
		if err := r.rdb.SetNX(ctx, keys[0], used, budgetLifetime).Err(); err != nil {
			return false, 0, backendErr(err)
		}
	}
}

func (r *redisBackend) settleBudget(ctx context.Context, b budgetKey, requestID string, actual int64) error {
	keys := append(r.budgetKeys(b), r.prefix+"budget:{"+b.String()+"}:settled:"+requestID)
	if err := settleScript.Run(ctx, r.rdb, keys, requestID, actual, int64(settleMarkerTTL/time.Second)).Err(); err != nil {
		return backendErr(err)
	}
	return nil
}
