package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// admitAllScript is the whole admission of one request in one round trip (one EVALSHA): both
// GCRA rate limits, the concurrency slot and both budget reservations, each with the exact logic
// of its single-step counterpart (redis_rate's allowN for rates, acquireScript, reserveScript), on
// the same keys, so single-step and one-shot replicas interoperate on one Redis.
//
// Decisions are taken before anything is written, in admit.go's order (requests, tokens,
// concurrency, quota, spend). A request refused by a rate limit spends nothing; refused by a
// later check it spends its request (as the step-by-step path, whose cancel refunds only
// tokens) and nothing else. A budget whose period is not loaded yet makes the script write
// nothing and answer "load first".
//
// KEYS: 1 rpm TAT, 2 tpm TAT, 3 concurrency zset, 4-7 quota budget (used, res, exp, total),
// 8-11 spend budget. ARGV: 1 rpm, 2 tpm, 3 tokens, 4 strict (0/1), 5 period s, 6 concurrency
// limit (0 = off), 7 request id, 8 ttl ms, 9 quota limit (0 = off), 10 quota amount, 11 spend
// limit (0 = off), 12 spend amount, 13 budget key lifetime s.
//
// Answer: {status, stage, rq_allowed, rq_remaining, rq_retry, rq_reset, tk_allowed,
// tk_remaining, tk_retry, tk_reset, quota_used, spend_used}. status 1 admitted, 0 refused at
// stage ("requests", "tokens", "concurrency", "quota", "spend"), -1 budgets to load first (stage
// "quota", "spend" or "quota,spend"). Retry and reset are seconds as strings, -1 for none.
var admitAllScript = redis.NewScript(`
redis.replicate_commands()
local t = redis.call("TIME")
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = (t[1] - 1483228800) + (t[2] / 1000000)
local period = tonumber(ARGV[5])

-- gcra mirrors redis_rate's allowN without writing: {allowed, remaining, retry, reset, new_tat}.
local function gcra(key, limit, cost)
	local ei = period / limit
	local tat = tonumber(redis.call("GET", key) or now)
	if tat < now then tat = now end
	local new_tat = tat + ei * cost
	local diff = now - (new_tat - ei * limit)
	local remaining = diff / ei
	if remaining < 0 then
		return {0, 0, tostring(-diff), tostring(tat - now), nil}
	end
	return {cost, remaining, "-1", tostring(new_tat - now), new_tat}
end
local function set_tat(key, new_tat)
	local reset = new_tat - now
	if reset > 0 then redis.call("SET", key, new_tat, "EX", math.ceil(reset)) end
end

local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local too_large = tpm > 0 and tokens > tpm
if too_large then tokens = tpm end
local rq = {0, 0, "-1", "-1", nil}
local tk = {0, 0, "-1", "-1", nil}
local function answer(status, stage, qu, su)
	return {status, stage, rq[1], math.floor(rq[2]), rq[3], rq[4], tk[1], math.floor(tk[2]), tk[3], tk[4], qu or 0, su or 0}
end
if too_large and ARGV[4] == "1" then
	if rpm > 0 then rq = gcra(KEYS[1], rpm, 0) end
	tk = gcra(KEYS[2], tpm, 0)
	tk[3] = "-1"
	return answer(0, "tokens")
end
if rpm > 0 then
	rq = gcra(KEYS[1], rpm, 1)
	if rq[1] == 0 then
		if tpm > 0 then tk = gcra(KEYS[2], tpm, 0) end
		return answer(0, "requests")
	end
end
if tpm > 0 then
	tk = gcra(KEYS[2], tpm, tokens)
	if tk[1] == 0 then
		if rpm > 0 then rq = gcra(KEYS[1], rpm, 0) end
		return answer(0, "tokens")
	end
end
-- From here on a refusal spends the request.
local function refuse(stage, qu, su)
	if rpm > 0 then set_tat(KEYS[1], rq[5]) end
	return answer(0, stage, qu, su)
end

local conc = tonumber(ARGV[6])
local ttl = tonumber(ARGV[8])
if conc > 0 then
	redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now_ms)
	if redis.call("ZCARD", KEYS[3]) >= conc then return refuse("concurrency") end
end

-- expire_budget drops the reservations of a budget whose lease ended (reserveScript).
local function expire_budget(k)
	local expired = redis.call("ZRANGEBYSCORE", KEYS[k + 2], "-inf", now_ms)
	for _, id in ipairs(expired) do
		local a = redis.call("HGET", KEYS[k + 1], id)
		if a then
			redis.call("HDEL", KEYS[k + 1], id)
			redis.call("DECRBY", KEYS[k + 3], a)
		end
	end
	if #expired > 0 then redis.call("ZREMRANGEBYSCORE", KEYS[k + 2], "-inf", now_ms) end
end
local budgets = {}
local missing = {}
for i, spec in ipairs({{4, 9, "quota"}, {8, 11, "spend"}}) do
	local k, limit = spec[1], tonumber(ARGV[spec[2]])
	if limit > 0 then
		expire_budget(k)
		local used = redis.call("GET", KEYS[k])
		if not used then
			table.insert(missing, spec[3])
		else
			table.insert(budgets, {k, limit, tonumber(ARGV[spec[2] + 1]), tonumber(used) + tonumber(redis.call("GET", KEYS[k + 3]) or "0"), spec[3]})
		end
	end
end
if #missing > 0 then return answer(-1, table.concat(missing, ",")) end
local qu, su = 0, 0
for _, b in ipairs(budgets) do
	if b[5] == "quota" then qu = b[4] else su = b[4] end
	if b[4] + b[3] > b[2] then return refuse(b[5], qu, su) end
end

-- Admitted: write every charge.
if rpm > 0 then set_tat(KEYS[1], rq[5]) end
if tpm > 0 then set_tat(KEYS[2], tk[5]) end
if conc > 0 then
	redis.call("ZADD", KEYS[3], now_ms + ttl, ARGV[7])
	if redis.call("PTTL", KEYS[3]) < ttl then redis.call("PEXPIRE", KEYS[3], ttl) end
end
for _, b in ipairs(budgets) do
	local k = b[1]
	if redis.call("HSETNX", KEYS[k + 1], ARGV[7], b[3]) == 1 then
		redis.call("ZADD", KEYS[k + 2], now_ms + ttl, ARGV[7])
		redis.call("INCRBY", KEYS[k + 3], b[3])
		b[4] = b[4] + b[3]
	end
	for i = 1, 3 do redis.call("EXPIRE", KEYS[k + i], ARGV[13]) end
	if b[5] == "quota" then qu = b[4] else su = b[4] end
end
return answer(1, "", qu, su)
`)

// admitAll runs admitAllScript for s: the one-round-trip admission of the Redis backend.
func (r *redisBackend) admitAll(ctx context.Context, s admitSpec) (admitResult, error) {
	keys := make([]string, 0, 11)
	keys = append(keys, redisRatePrefix+r.prefix+"rpm:"+s.rateBucket, redisRatePrefix+r.prefix+"tpm:"+s.rateBucket, r.prefix+"conc:"+s.concBucket)
	for _, b := range []*budgetKey{s.quota, s.spend} {
		if b == nil {
			keys = append(keys, r.prefix+"budget:{none}:used", r.prefix+"budget:{none}:res", r.prefix+"budget:{none}:exp", r.prefix+"budget:{none}:total")
			continue
		}
		keys = append(keys, r.budgetKeys(*b)...)
	}
	strict := 0
	if s.strict {
		strict = 1
	}
	v, err := admitAllScript.Run(ctx, r.rdb, keys, s.rpm, s.tpm, s.tokens, strict, window.Seconds(), s.concLimit, s.requestID, s.ttl.Milliseconds(),
		s.quotaLimit, s.quotaAmount, s.spendLimit, s.spendAmount, int64(budgetLifetime/time.Second)).Slice()
	if err != nil {
		return admitResult{}, backendErr(err)
	}
	if len(v) != 12 {
		return admitResult{}, backendErr(fmt.Errorf("admission script answered %d values", len(v)))
	}
	num := func(i int) int64 { n, _ := v[i].(int64); return n }
	secs := func(i int) time.Duration {
		s, _ := v[i].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 {
			return -1
		}
		return time.Duration(f * float64(time.Second))
	}
	var res admitResult
	stage, _ := v[1].(string)
	toVerdict := func(i, limit int) verdict {
		vd := verdict{limit: limit, remaining: max(int(num(i+1)), 0), reset: max(secs(i+3), 0)}
		if num(i) == 0 && secs(i+2) > 0 {
			vd.retry = secs(i + 2)
		}
		return vd
	}
	if s.rpm > 0 {
		res.adm.requests = toVerdict(2, s.rpm)
	}
	if s.tpm > 0 {
		res.adm.tokens = toVerdict(6, s.tpm)
	}
	res.quotaUsed, res.spendUsed = num(10), num(11)
	switch num(0) {
	case 1:
		if s.tpm > 0 {
			res.adm.charged = min(s.tokens, int64(s.tpm))
		}
	case 0:
		switch stage {
		case "requests", "tokens":
			res.adm.rejected = stage
			res.adm.tooLarge = stage == "tokens" && s.strict && s.tpm > 0 && s.tokens > int64(s.tpm)
		default:
			res.refused = stage
		}
	default:
		for _, name := range strings.Split(stage, ",") {
			res.needBase = append(res.needBase, name)
		}
	}
	return res, nil
}

func (r *redisBackend) loadBudget(ctx context.Context, b budgetKey, used int64) error {
	// SET NX: the first replica to load wins; the others' loads of the same ledger are dropped.
	if err := r.rdb.SetNX(ctx, r.budgetKeys(b)[0], used, budgetLifetime).Err(); err != nil {
		return backendErr(err)
	}
	return nil
}

// settleAllScript is a ticket's whole settlement in one round trip: adjustTATScript on the token
// bucket, the concurrency slot's release, and settleScript on each budget, with their exact
// logic. KEYS: 1 tpm TAT, 2 concurrency zset, 3-7 quota (used, res, exp, total, marker), 8-12
// spend. ARGV: 1 TAT adjustment in seconds ("" = none), 2 release slot (0/1), 3 request id,
// 4 settle quota (0/1), 5 actual tokens, 6 settle spend (0/1), 7 actual spend, 8 marker ttl s.
var settleAllScript = redis.NewScript(`
if ARGV[1] ~= "" then
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
end
if ARGV[2] == "1" then redis.call("ZREM", KEYS[2], ARGV[3]) end
local function settle(k, actual)
	if not redis.call("SET", KEYS[k + 4], "1", "NX", "EX", ARGV[8]) then return end
	local a = redis.call("HGET", KEYS[k + 1], ARGV[3])
	if a then
		redis.call("HDEL", KEYS[k + 1], ARGV[3])
		redis.call("ZREM", KEYS[k + 2], ARGV[3])
		redis.call("DECRBY", KEYS[k + 3], a)
	end
	if redis.call("EXISTS", KEYS[k]) == 1 then redis.call("INCRBY", KEYS[k], actual) end
end
if ARGV[4] == "1" then settle(3, ARGV[5]) end
if ARGV[6] == "1" then settle(8, ARGV[7]) end
return 1
`)

// settleAll runs settleAllScript for s.
func (r *redisBackend) settleAll(ctx context.Context, s settleSpec) error {
	keys := make([]string, 0, 12)
	keys = append(keys, redisRatePrefix+r.prefix+"tpm:"+s.rateBucket, r.prefix+"conc:"+s.slot)
	flag := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	for _, b := range []*budgetKey{s.quota, s.spend} {
		if b == nil {
			keys = append(keys, r.prefix+"budget:{none}:used", r.prefix+"budget:{none}:res", r.prefix+"budget:{none}:exp",
				r.prefix+"budget:{none}:total", r.prefix+"budget:{none}:settled")
			continue
		}
		keys = append(append(keys, r.budgetKeys(*b)...), r.prefix+"budget:{"+b.String()+"}:settled:"+s.requestID)
	}
	adjust := ""
	if s.tpm > 0 && s.actualTokens != s.charged {
		d := interval(s.actualTokens-s.charged, s.tpm)
		if s.actualTokens < s.charged {
			d = -interval(s.charged-s.actualTokens, s.tpm)
		}
		adjust = strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
	}
	if err := settleAllScript.Run(ctx, r.rdb, keys, adjust, flag(s.slot != ""), s.requestID, flag(s.quota != nil), s.actualTokens,
		flag(s.spend != nil), s.actualSpend, int64(settleMarkerTTL/time.Second)).Err(); err != nil {
		return backendErr(err)
	}
	return nil
}
