package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keypool/keypool"
)

// The Store keeps the budgets replicas spend together.
var _ keypool.BudgetStore = (*Store)(nil)

// spendScript spends one budget, atomically: it brings the stored budget
// up to Redis's own clock (so replicas' clocks do not matter), takes in
// what an answer said of it, and grants what it holds.
//
// KEYS[1] is the budget's hash: limit, rem (remaining requests at at), at,
// slot (the time one request takes to free in a continuous bucket; 0 not
// known), win (1: counted in fixed windows) and end (when the window ends,
// or the bucket is full; 0 not known). Times are microseconds since 1970,
// durations microseconds: a slot of a bucket of 10,000 requests a minute is
// 6ms, which milliseconds would round by a sixth.
//
// ARGV: want, seen (1: the rest holds an answer), limit, remaining, reset
// (0: not known), windowed (1/0), perSlot, age.
//
// It returns {granted (-1: the budget is not known, the caller grants
// want), retry (µs, 0 not known), reset (1: the key held what does not
// decode, and was deleted)}.
//
// Advancing a budget to now: a continuous one frees a request per whole
// slot since at (the phase kept) up to limit, and a full one keeps at =
// now, since a request spent then frees a slot later; without a slot it is
// full at end. A windowed one is full once its end has passed, and its end
// is not known (0) until an answer states it: the window that began at the
// old end (kept in at) counts down from limit, and never refills again by
// itself, so a Redis that hears no answer never grants more than limit per
// window.
//
// Taking in an answer: the answer is a budget of its own (observed at now
// - age), advanced to now; of the two, the one with fewer requests left
// wins (an answer can only lower what the store believes: the store also
// counts the requests granted whose answers have not come), and the
// answer's limit, slot and shape are kept. Windows are told by their ends
// (1s of slack, for the reset's rounding): an answer of a later window
// than the stored one replaces it, one of an earlier window is ignored.
var spendScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local SLACK, MINTTL, MAXTTL = 1000000, 60000000, 7 * 86400000000

local function num(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n > 1e16 or n < 0 or n ~= math.floor(n) then return nil end
  return n
end

local function advance(b)
  if b.win == 1 then
    if b.e > 0 and now >= b.e then b.rem, b.at, b.e = b.limit, b.e, 0 end
  elseif b.slot > 0 then
    if now > b.at then
      local n = math.floor((now - b.at) / b.slot)
      if b.rem + n >= b.limit then b.rem, b.at = b.limit, now
      elseif n > 0 then b.rem, b.at = b.rem + n, b.at + n * b.slot end
    end
  elseif b.e > 0 and now >= b.e then
    b.rem, b.at, b.e = b.limit, now, 0
  end
end

local reset = 0
local cur
local h = redis.pcall('HMGET', KEYS[1], 'limit', 'rem', 'at', 'slot', 'win', 'end')
if h.err then
  reset = 1
elseif h[1] or h[2] or h[3] or h[4] or h[5] or h[6] then
  local b = {limit = num(h[1]), rem = num(h[2]), at = num(h[3]), slot = num(h[4]), win = num(h[5]), e = num(h[6])}
  if b.limit and b.rem and b.at and b.slot and b.e and (b.win == 0 or b.win == 1) and b.rem <= b.limit then
    cur = b
    advance(cur)
  else
    reset = 1
  end
end
if reset == 1 then redis.call('DEL', KEYS[1]) end

if ARGV[2] == '1' then
  local limit = tonumber(ARGV[3])
  local obs = math.max(now - tonumber(ARGV[8]), 0)
  local reset = tonumber(ARGV[5])
  local oend = 0
  if reset > 0 then oend = obs + reset end
  local o = {limit = limit, rem = math.min(tonumber(ARGV[4]), limit), at = obs, slot = tonumber(ARGV[7]),
    win = tonumber(ARGV[6]), e = oend}
  advance(o)
  if not cur then
    cur = o
  else
    local pick
    local windows = o.win == 1 and cur.win == 1 and oend > 0
    if windows and cur.e > 0 and oend > cur.e + SLACK then
      pick = o
    elseif windows and (cur.e > 0 and oend < cur.e - SLACK or cur.e == 0 and oend <= cur.at + SLACK) then
      pick = nil
    elseif o.rem <= cur.rem then
      pick = o
    else
      pick = cur
    end
    if pick then
      local e = pick.e
      if pick == cur and o.e > 0 then e = o.e end
      cur = {limit = o.limit, rem = math.min(pick.rem, o.limit), at = pick.at, slot = o.slot, win = o.win, e = e}
    end
  end
end

if not cur then return {-1, 0, reset} end

local want = tonumber(ARGV[1])
local g = math.min(want, cur.rem)
cur.rem = cur.rem - g
local retry = 0
if g == 0 then
  if cur.win == 1 then
    if cur.e > 0 then retry = cur.e - now end
  elseif cur.slot > 0 then
    retry = math.max(cur.slot - (now - cur.at), 1000)
  end
end

local full = 0
if cur.win == 0 and cur.slot > 0 then
  full = cur.at + (cur.limit - cur.rem) * cur.slot - now
elseif cur.e > 0 then
  full = cur.e - now
end
local ttl = math.min(math.max(2 * full, MINTTL), MAXTTL)
redis.call('HSET', KEYS[1], 'limit', cur.limit, 'rem', cur.rem, 'at', cur.at, 'slot', cur.slot, 'win', cur.win, 'end', cur.e)
redis.call('PEXPIRE', KEYS[1], math.floor(ttl / 1000))
return {g, retry, reset}
`)

// spendTimeout bounds a Spend whose context has no deadline: one script
// call takes well under a millisecond.
const spendTimeout = time.Second

// maxWant bounds the requests one Spend asks for: the script's numbers are
// doubles, exact to 2^53.
const maxWant = 1 << 50

// Spend takes up to req.Want requests from the budget req.Budget names,
// after taking in req.Seen, in one script call: see spendScript for how a
// budget refills and how an answer changes it. A budget Redis holds nothing
// of (never stated, or unspent long enough for its key to expire, when it
// would be full anyway) grants Want, and is not stored: the store knows
// nothing to spend.
//
// A budget key that holds what does not decode (another type, fields that
// are not numbers, remaining above the limit) is taken for no budget,
// deleted and overwritten by what req.Seen states, and counted in Skipped:
// the keys under the prefix are the Store's, and refusing would make every
// replica spend that budget alone for good.
//
// A request that makes no sense (no name, Want < 1, a negative number in
// Seen) is refused without a call: a programmer's mistake, not Redis's.
// Failures of Redis are counted in SpendErrors and Errors, and logged once
// per outage; a command cut short by a cancelled ctx is not counted as an
// outage, one that ran out of ctx's deadline is: Redis did not answer in
// time. Spend returns by ctx's deadline (spendTimeout without one).
func (s *Store) Spend(ctx context.Context, req keypool.BudgetRequest) (keypool.BudgetGrant, error) {
	if err := checkSpend(&req); err != nil {
		return keypool.BudgetGrant{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, spendTimeout)
		defer cancel()
	}
	start := time.Now()
	res, err := spendScript.Run(ctx, s.client, []string{s.budgets + req.Budget}, spendArgs(&req)...).Int64Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("the script returned %d numbers, want 3", len(res))
	}
	if err != nil {
		s.spendErrs.Add(1)
		if !errors.Is(ctx.Err(), context.Canceled) {
			s.failed(context.WithoutCancel(ctx), "spend", err)
		}
		return keypool.BudgetGrant{}, fmt.Errorf("redisstore: spend %q: %s", req.Budget, s.scrub.Scrub(err.Error()))
	}
	s.spends.Add(1)
	s.answered(start)
	if res[2] == 1 {
		s.skipped.Add(1)
		s.log.Warn("redisstore: budget reset: its key held what does not decode (another program's data, or a format this keypool does not know)",
			slog.String("budget", fmt.Sprintf("%q", req.Budget)))
	}
	if res[0] < 0 {
		return keypool.BudgetGrant{Granted: req.Want}, nil
	}
	return keypool.BudgetGrant{Granted: res[0], Retry: time.Duration(res[1]) * time.Microsecond}, nil
}

// checkSpend refuses a request that makes no sense, and bounds Want.
func checkSpend(req *keypool.BudgetRequest) error {
	bad := func(why string) error { return fmt.Errorf("redisstore: spend %q: %s", req.Budget, why) }
	switch {
	case req.Budget == "":
		return bad("no budget name")
	case req.Want < 1:
		return bad(fmt.Sprintf("want %d requests, at least 1", req.Want))
	}
	if sn := req.Seen; sn != nil && (sn.Limit < 0 || sn.Remaining < 0 || sn.Reset < 0 || sn.PerSlot < 0 || sn.Age < 0) {
		return bad(fmt.Sprintf("seen %+v: negative", *sn))
	}
	req.Want = min(req.Want, maxWant)
	return nil
}

// spendArgs is ARGV of spendScript for req.
func spendArgs(req *keypool.BudgetRequest) []any {
	sn := req.Seen
	if sn == nil {
		return []any{req.Want, 0}
	}
	win := 0
	if sn.Windowed {
		win = 1
	}
	return []any{req.Want, 1, min(sn.Limit, maxWant), min(sn.Remaining, maxWant), micros(sn.Reset), win, micros(sn.PerSlot), micros(sn.Age)}
}

// maxMicros bounds the durations given to spendScript (about 116 days), so
// that the times it stores stay below 1e16, where it takes them for
// another program's data.
const maxMicros = 1e13

// micros is d in whole microseconds, a positive d at least 1, at most
// maxMicros.
func micros(d time.Duration) int64 {
	if d > 0 && d < time.Microsecond {
		return 1
	}
	return min(d.Microseconds(), maxMicros)
}
